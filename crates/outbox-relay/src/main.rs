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
    bootstrap::exit_code(tokio::runtime::Runtime::new().map_err(Into::into).and_then(|rt| rt.block_on(run())))
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = outbox_relay::Config::load(cli.config.config.as_deref())?;
    bootstrap::telemetry::init("outbox-relay");
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => outbox_relay::run(config, bootstrap::shutdown_on_signal()).await,
        Command::DeclareTopology => outbox_relay::declare_topology(&config).await,
    }
}
