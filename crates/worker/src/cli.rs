use std::{future::Future, path::Path};

use clap::{Args, Command, FromArgMatches};
use domain::Channel;
use tokio_util::sync::CancellationToken;

use bootstrap::ConfigError;

/// The whole `main` of a worker binary: parse `--config`, load and validate the
/// configuration (refusing to start without a required setting), set up logging, run
/// until SIGTERM.
pub fn main<C, F, Fut>(
    channel: Channel,
    load: fn(Option<&Path>) -> Result<C, ConfigError>,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = format!("{channel}-worker");
    let command = bootstrap::ConfigArg::augment_args(Command::new(name.clone()))
        .version(env!("CARGO_PKG_VERSION"))
        .about(format!("Notify's {channel} channel worker."));
    let args = bootstrap::ConfigArg::from_arg_matches(&command.get_matches())?;
    let config = load(args.config.as_deref())?;
    let _telemetry = bootstrap::telemetry::init(&name);
    tokio::runtime::Runtime::new()?.block_on(async { run(config, bootstrap::shutdown_on_signal()).await })
}
