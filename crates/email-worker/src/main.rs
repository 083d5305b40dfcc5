use clap::Parser;

/// The email channel worker of Notify.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: bootstrap::ConfigArg,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = email_worker::load_config(cli.config.config.as_deref())?;
    bootstrap::telemetry::init("email-worker");
    email_worker::run(config, bootstrap::shutdown_on_signal()).await
}
