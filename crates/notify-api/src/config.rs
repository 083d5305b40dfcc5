use std::{net::SocketAddr, path::Path, time::Duration};

use bootstrap::{ConfigError, SecretString};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    pub database_url: Option<SecretString>,
    pub database_max_connections: u32,
    /// Where the API listens.
    pub listen: SocketAddr,
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            database_max_connections: 16,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            limits: Limits::default(),
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

impl Config {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Config = bootstrap::layered(file).extract()?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        bootstrap::require(&self.database_url, "database_url")?;
        Ok(())
    }
}
