use clap::{Parser, Subcommand};
use notify_api::Config;

/// Notify's producer API. The operator's commands are `notify-admin`'s.
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
    /// Serve the API (the default).
    Serve,
    /// Print the OpenAPI document the API serves at /openapi.json (as `openapi.json` at the
    /// repository's root holds it), then exit.
    Openapi,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        // Needs no configuration: the document is the code's.
        print!("{}", notify_api::openapi_json());
        return std::process::ExitCode::SUCCESS;
    }
    // Outside the runtime: the trace exporter's blocking HTTP client must not be made or
    // dropped on an async thread.
    let _telemetry = bootstrap::telemetry::init("notify-api");
    bootstrap::exit_code(tokio::runtime::Runtime::new().map_err(Into::into).and_then(|rt| rt.block_on(serve(cli))))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.config.as_deref())?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    notify_api::run(config, listener, bootstrap::shutdown_on_signal()).await
}
