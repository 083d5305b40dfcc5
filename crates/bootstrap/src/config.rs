//! Configuration is layered (docs/contract.md §7): the defaults written into each config struct
//! (`#[serde(default)]`), then an optional TOML file, then `NOTIFY_*` environment
//! variables, where `__` separates levels (`NOTIFY_EMAIL__RETRY__MAX_ATTEMPTS=5`).

use std::path::Path;

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing setting `{key}`: set {env} or `{key}` in the config file")]
    Missing { key: String, env: String },
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Figment(Box::new(e))
    }
}

/// Where a binary runs (`environment`, `NOTIFY_ENVIRONMENT`): `development` (the default)
/// or `production`, where a worker refuses the sandbox provider unless told otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

/// The figment for a binary: the config file if one is given, then the environment.
/// Structs supply their own defaults.
pub fn layered(file: Option<&Path>) -> Figment {
    let mut figment = Figment::new();
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment.merge(Env::prefixed("NOTIFY_").ignore(&["config"]).split("__"))
}

/// The arguments every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// A TOML config file; `NOTIFY_*` environment variables override it.
    #[arg(long, env = "NOTIFY_CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,
}

/// A setting without a default: its absence stops the binary before it connects to
/// anything, naming the setting.
pub fn require<'a>(value: &'a Option<SecretString>, key: &str) -> Result<&'a SecretString, ConfigError> {
    value.as_ref().ok_or_else(|| ConfigError::Missing {
        key: key.to_owned(),
        env: format!("NOTIFY_{}", key.to_uppercase().replace('.', "__")),
    })
}
