//! The sms channel worker: consumes `notify.sms` and sends through the configured provider.

use std::sync::Arc;

use domain::Channel;
use tokio_util::sync::CancellationToken;
use worker::{Provider, ProviderKind, SandboxProvider};

pub use worker::WorkerConfig as Config;

pub const CHANNEL: Channel = Channel::Sms;

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let provider: Arc<dyn Provider> = match config.channel.provider {
        ProviderKind::Sandbox => Arc::new(SandboxProvider::open(CHANNEL, config.channel.sandbox.clone()).await?),
    };
    worker::run(CHANNEL, config, provider, shutdown).await
}
