use clap::Parser;

/// The sms channel worker of Notify.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: bootstrap::ConfigArg,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = sms_worker::load_config(cli.config.config.as_deref())?;
    bootstrap::telemetry::init("sms-worker");
    sms_worker::run(config, bootstrap::shutdown_on_signal()).await
}
