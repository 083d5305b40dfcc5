use std::{net::SocketAddr, path::Path, time::Duration};

use bootstrap::{ConfigError, SecretString};
use serde::Deserialize;

use crate::rate_limit::Rate;

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    pub database_url: Option<SecretString>,
    pub database_max_connections: u32,
    /// Where the API listens.
    pub listen: SocketAddr,
    pub limits: Limits,
    pub idempotency: Idempotency,
    /// The intake rate of a tenant that has none of its own.
    pub rate_limit: Rate,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            database_max_connections: 16,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            limits: Limits::default(),
            idempotency: Idempotency::default(),
            rate_limit: Rate::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// How far ahead `send_at` may be.
    #[serde(with = "humantime_serde")]
    pub max_schedule_ahead: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_schedule_ahead: Duration::from_secs(90 * 24 * 3600) }
    }
}

impl Limits {
    pub fn domain(&self) -> domain::request::Limits {
        domain::request::Limits {
            max_schedule_ahead: time::Duration::try_from(self.max_schedule_ahead).unwrap_or(time::Duration::MAX),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Idempotency {
    /// How long a key is remembered (at least 24 h, as the API promises).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often expired keys are deleted.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
}

impl Default for Idempotency {
    fn default() -> Self {
        Self { retention: Duration::from_secs(24 * 3600), purge_interval: Duration::from_secs(3600) }
    }
}

impl Config {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Config = bootstrap::layered(file).extract()?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        bootstrap::require(&self.database_url, "database_url")?;
        let invalid = |key: &str, message: &str| ConfigError::Invalid { key: key.into(), message: message.into() };
        if self.idempotency.retention < Duration::from_secs(24 * 3600) {
            return Err(invalid("idempotency.retention", "must be at least 24h"));
        }
        if self.rate_limit.per_second == 0 || self.rate_limit.burst == 0 {
            return Err(invalid("rate_limit", "per_second and burst must be at least 1"));
        }
        Ok(())
    }
}
