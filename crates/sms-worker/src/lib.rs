//! The sms channel worker: consumes `notify.sms` and sends through the configured
//! providers, in order of preference.

mod sns;

use std::{path::Path, sync::Arc};

use bootstrap::ConfigError;
use domain::Channel;
use providers::twilio::{TwilioConfig, TwilioMode, TwilioProvider};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use worker::{Provider, SandboxProvider, WorkerConfig};

pub use sns::{SnsConfig, SnsProvider};

pub const CHANNEL: Channel = Channel::Sms;

/// The providers this worker knows, by the names `sms.providers` lists.
pub const PROVIDERS: &[&str] = &[
    "sandbox", // writes to a file, sends nothing
    "twilio",  // Twilio Programmable Messaging, SMS
    "sns",     // Amazon SNS Publish to a phone number
];

#[derive(Debug)]
pub struct Config {
    pub worker: WorkerConfig,
    pub providers: Providers,
}

/// The settings of each provider, under `[sms.<provider>]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Providers {
    pub twilio: Option<TwilioConfig>,
    pub sns: Option<SnsConfig>,
}

pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let config =
        Config { worker: WorkerConfig::load(CHANNEL, file)?, providers: worker::channel_section(CHANNEL, file)? };
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Every provider named in `sms.providers` exists and has its settings, and they are valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in &self.worker.channel.providers {
            if !PROVIDERS.contains(&name.as_str()) {
                return Err(worker::unknown_provider(CHANNEL, name, PROVIDERS));
            }
            if name == "twilio" {
                worker::provider_settings(CHANNEL, &self.providers.twilio, "twilio")?.validate(TwilioMode::Sms)?;
            }
            if name == "sns" {
                worker::provider_settings(CHANNEL, &self.providers.sns, "sns")?
                    .validate(self.worker.worker.provider_timeout)?;
            }
        }
        Ok(())
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    // One HTTP client for every provider of the process, so they share its connection pool.
    let http = providers::http::SharedClient::new(config.worker.worker.provider_timeout);
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    for name in &config.worker.channel.providers {
        providers.push(match name.as_str() {
            "sandbox" => Arc::new(SandboxProvider::open(CHANNEL, config.worker.channel.sandbox.clone()).await?),
            "twilio" => {
                let twilio = worker::provider_settings(CHANNEL, &config.providers.twilio, "twilio")?;
                Arc::new(TwilioProvider::new(twilio.clone(), TwilioMode::Sms, http.get()?)?)
            }
            "sns" => {
                Arc::new(SnsProvider::new(worker::provider_settings(CHANNEL, &config.providers.sns, "sns")?).await)
            }
            other => anyhow::bail!("unknown {CHANNEL} provider `{other}`"),
        });
    }
    worker::run(CHANNEL, config.worker, providers, shutdown).await
}
