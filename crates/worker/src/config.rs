use std::{path::Path, time::Duration};

use bootstrap::{ConfigError, SecretString};
use domain::{Channel, RetryPolicy};
use queue::Topology;
use serde::Deserialize;

use crate::SandboxConfig;

/// A worker's configuration: the shared settings at the top level of the config (so one
/// file or one set of environment variables serves every binary), and the settings of
/// its channel under the channel's name (`[email]`, `NOTIFY_EMAIL__RETRY__MAX_ATTEMPTS`).
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    pub database_url: Option<SecretString>,
    pub amqp_url: Option<SecretString>,
    pub database_max_connections: u32,
    pub worker: WorkerSettings,
    pub broker: Topology,
    #[serde(skip)]
    pub channel: ChannelSettings,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            amqp_url: None,
            database_max_connections: 8,
            worker: WorkerSettings::default(),
            broker: Topology::default(),
            channel: ChannelSettings::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Messages taken from the broker at once, and so handled concurrently.
    pub prefetch: u16,
    /// A provider call that takes longer is abandoned and counts as an ambiguous failure.
    #[serde(with = "humantime_serde")]
    pub provider_timeout: Duration,
    /// On shutdown, how long in-flight messages may take before they are abandoned (the
    /// broker redelivers them).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self { prefetch: 32, provider_timeout: Duration::from_secs(10), shutdown_grace: Duration::from_secs(20) }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelSettings {
    pub retry: RetryPolicy,
    pub provider: ProviderKind,
    pub sandbox: SandboxConfig,
}

/// Which provider a channel sends through. The sandbox is the default, so a platform
/// with no configuration runs without any cloud account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    #[default]
    Sandbox,
}

impl WorkerConfig {
    /// Loads and validates the configuration of the worker for `channel`.
    pub fn load(channel: Channel, file: Option<&Path>) -> Result<Self, ConfigError> {
        let figment = bootstrap::layered(file);
        let mut config: WorkerConfig = figment.extract()?;
        if figment.contains(channel.as_str()) {
            config.channel = figment.extract_inner(channel.as_str())?;
        }
        config.validate(channel)?;
        Ok(config)
    }

    pub fn validate(&self, channel: Channel) -> Result<(), ConfigError> {
        bootstrap::require(&self.database_url, "database_url")?;
        bootstrap::require(&self.amqp_url, "amqp_url")?;
        let invalid = |key: String, message: String| ConfigError::Invalid { key, message };
        self.channel.retry.validate().map_err(|m| invalid(format!("{channel}.retry"), m))?;
        if self.worker.prefetch == 0 {
            return Err(invalid("worker.prefetch".into(), "must be at least 1".into()));
        }
        let rate = self.channel.sandbox.failure_rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(invalid(format!("{channel}.sandbox.failure_rate"), "must be between 0 and 1".into()));
        }
        Ok(())
    }
}
