use std::future::Future;

use clap::{Args, Command, FromArgMatches};
use domain::Channel;
use tokio_util::sync::CancellationToken;

use crate::WorkerConfig;

/// The whole `main` of a worker binary: parse `--config`, load and validate the
/// configuration (refusing to start without a required setting), set up logging, run
/// until SIGTERM.
pub fn main<F, Fut>(channel: Channel, run: F) -> anyhow::Result<()>
where
    F: FnOnce(WorkerConfig, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = format!("{channel}-worker");
    let command = bootstrap::ConfigArg::augment_args(Command::new(name.clone()))
        .version(env!("CARGO_PKG_VERSION"))
        .about(format!("Notify's {channel} channel worker."));
    let args = bootstrap::ConfigArg::from_arg_matches(&command.get_matches())?;
    let config = WorkerConfig::load(channel, args.config.as_deref())?;
    bootstrap::telemetry::init(&name);
    tokio::runtime::Runtime::new()?.block_on(async { run(config, bootstrap::shutdown_on_signal()).await })
}
