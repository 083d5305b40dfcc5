use std::sync::Arc;

use clap::{Args, Command, FromArgMatches};
use domain::Channel;
use providers::{ProviderUnit, http::SharedClient};

use crate::{Configured, WorkerConfig};

/// The whole `main` of a worker binary, given its channel and the units of its providers:
/// parse `--config`, load and validate the configuration and every listed provider's
/// settings (refusing to start without a required one), set up logging, build the
/// providers, run until SIGTERM.
pub fn main(channel: Channel, units: &[&dyn ProviderUnit]) -> anyhow::Result<()> {
    let name = format!("{channel}-worker");
    let command = bootstrap::ConfigArg::augment_args(Command::new(name.clone()))
        .version(env!("CARGO_PKG_VERSION"))
        .about(format!("Notify's {channel} channel worker."));
    let args = bootstrap::ConfigArg::from_arg_matches(&command.get_matches())?;
    let figment = bootstrap::layered(args.config.as_deref());
    let config = WorkerConfig::from_figment(channel, &figment)?;
    let configured = Configured::read(channel, &config, &figment, units)?;
    let _telemetry = bootstrap::telemetry::init(&name);
    tokio::runtime::Runtime::new()?.block_on(async {
        let http = Arc::new(SharedClient::new(config.worker.provider_timeout));
        let providers = configured.build(channel, &config, &http).await?;
        crate::runtime::run(channel, config, providers, bootstrap::shutdown_on_signal()).await
    })
}
