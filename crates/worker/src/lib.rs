//! The runtime every channel worker shares (docs/contract.md §6.3): consume a message, claim its
//! delivery, call the provider, record the attempt and the new state in one transaction,
//! then ack. A worker binary only chooses its channel and builds its provider.

mod chat_address;
pub mod cli;
mod config;
mod dispatch;
mod metrics;
mod runtime;
mod sandbox;

pub use config::{
    ChannelSettings, WorkerConfig, WorkerSettings, channel_section, missing_provider_settings, provider_settings,
    unknown_provider,
};
pub use domain::Provider;
pub use runtime::run;
pub use sandbox::{SANDBOX, SandboxConfig, SandboxFailure, SandboxProvider};
