//! The runtime every channel worker shares (docs/contract.md §6.3): consume a message, claim its
//! delivery, call the provider, record the attempt and the new state in one transaction,
//! then ack. A worker binary only names its channel and the units of its providers.

mod chat_address;
pub mod cli;
mod config;
mod consume;
mod dispatch;
mod metrics;
mod push_device;
mod retried;
mod runtime;
mod sandbox;
mod tenant_clients;
mod units;
pub mod webhooks;

pub use config::{ChannelSettings, WorkerConfig, WorkerSettings, unknown_provider};
pub use domain::Provider;
pub use runtime::run;
pub use sandbox::{SANDBOX, SandboxConfig, SandboxFailure, SandboxProvider};
pub use units::{Configured, run_units};
