//! The chat channel worker: consumes `notify.chat` and sends through the configured
//! providers, in order of preference.

use std::{path::Path, sync::Arc};

use bootstrap::ConfigError;
use domain::Channel;
use tokio_util::sync::CancellationToken;
use worker::{Provider, SANDBOX, SandboxProvider, WorkerConfig};

pub const CHANNEL: Channel = Channel::Chat;

/// The providers this worker knows, by the names `chat.providers` lists.
pub const PROVIDERS: &[&str] = &[SANDBOX];

#[derive(Debug)]
pub struct Config {
    pub worker: WorkerConfig,
}

pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let config = Config { worker: WorkerConfig::load(CHANNEL, file)? };
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Every provider named in `chat.providers` is one this worker knows.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in &self.worker.channel.providers {
            if !PROVIDERS.contains(&name.as_str()) {
                return Err(worker::unknown_provider(CHANNEL, name, PROVIDERS));
            }
        }
        Ok(())
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    for name in &config.worker.channel.providers {
        providers.push(match name.as_str() {
            SANDBOX => Arc::new(SandboxProvider::open(CHANNEL, config.worker.channel.sandbox.clone()).await?),
            other => anyhow::bail!("unknown {CHANNEL} provider `{other}`"),
        });
    }
    worker::run(CHANNEL, config.worker, providers, shutdown).await
}
