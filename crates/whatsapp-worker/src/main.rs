use clap::Parser;

/// The whatsapp channel worker of Notify.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: bootstrap::ConfigArg,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = whatsapp_worker::load_config(cli.config.config.as_deref())?;
    bootstrap::telemetry::init("whatsapp-worker");
    whatsapp_worker::run(config, bootstrap::shutdown_on_signal()).await
}
