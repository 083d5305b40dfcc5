//! Process plumbing every binary shares: layered configuration, logging, the shutdown
//! signal.

pub mod config;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigArg, ConfigError, layered, require};
pub use secrecy::{ExposeSecret, SecretString};
pub use shutdown::shutdown_on_signal;
