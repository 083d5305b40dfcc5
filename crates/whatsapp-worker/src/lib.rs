//! The whatsapp channel worker: consumes `notify.whatsapp` and sends through the configured
//! providers, in order of preference.

use std::{path::Path, sync::Arc};

use bootstrap::ConfigError;
use domain::Channel;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use worker::{Provider, SandboxProvider, WorkerConfig};

pub const CHANNEL: Channel = Channel::Whatsapp;

/// The providers this worker knows, by the names `whatsapp.providers` lists.
pub const PROVIDERS: &[&str] = &["sandbox"];

#[derive(Debug)]
pub struct Config {
    pub worker: WorkerConfig,
    pub providers: Providers,
}

/// The settings of each provider, under `[whatsapp.<provider>]`.
#[derive(Debug, Default, Deserialize)]
pub struct Providers {}

pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let config =
        Config { worker: WorkerConfig::load(CHANNEL, file)?, providers: worker::channel_section(CHANNEL, file)? };
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Every provider named in `whatsapp.providers` exists and has its settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in &self.worker.channel.providers {
            if !PROVIDERS.contains(&name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: format!("{CHANNEL}.providers"),
                    message: format!("unknown provider `{name}`; this worker knows {}", PROVIDERS.join(", ")),
                });
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
            "sandbox" => Arc::new(SandboxProvider::open(CHANNEL, config.worker.channel.sandbox.clone()).await?),
            other => anyhow::bail!("unknown {CHANNEL} provider `{other}`"),
        });
    }
    worker::run(CHANNEL, config.worker, providers, shutdown).await
}
