//! Process plumbing every binary shares: layered configuration, logging, the shutdown
//! signal, and the sealing of secrets stored in the database.

pub mod config;
pub mod metrics;
pub mod ops;
pub mod seal;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigArg, ConfigError, Environment, layered, require};
pub use secrecy::{ExposeSecret, SecretString};
pub use shutdown::shutdown_on_signal;

/// Ends a binary: on error, prints the error chain (no backtrace) and exits with 1.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
