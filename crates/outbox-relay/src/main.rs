use clap::{Parser, Subcommand};

/// Publishes Notify's outbox to RabbitMQ.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: bootstrap::ConfigArg,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Relay until stopped (the default).
    Run,
    /// Declare the exchanges and queues, then exit.
    DeclareTopology,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Outside the runtime: the trace exporter's blocking HTTP client must not be made or
    // dropped on an async thread.
    let _telemetry = bootstrap::telemetry::init("outbox-relay");
    bootstrap::exit_code(tokio::runtime::Runtime::new().map_err(Into::into).and_then(|rt| rt.block_on(run(cli))))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = outbox_relay::Config::load(cli.config.config.as_deref())?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => outbox_relay::run(config, bootstrap::shutdown_on_signal()).await,
        Command::DeclareTopology => outbox_relay::declare_topology(&config).await,
    }
}
