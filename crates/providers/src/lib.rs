//! Providers reached over plain HTTPS with our own small reqwest clients (no vendor SDK):
//! each has a configurable base URL, keeps the HTTP status and `Retry-After`, and sorts
//! every failure into the buckets of docs/providers.md §1.
//!
//! `http` holds what they share (the client, `Retry-After`, transport errors, keeping the
//! recipient's address out of stored messages); `twilio`, `meta` and `novu` hold one
//! provider each: its settings (`XConfig`) and its `domain::Provider` (`XProvider`).

pub mod chat;
pub mod http;
pub mod meta;
pub mod novu;
mod settings;
pub mod twilio;
pub mod unit;

pub use unit::{Checked, Context, Integration, IntegrationRules, ProviderSettings, ProviderUnit, Source};

/// Every provider unit, by channel and in the order a channel's documentation lists them.
/// The sandbox is the worker runtime's, not listed here.
pub const CATALOG: &[&dyn ProviderUnit] = &[&chat::SLACK, &chat::SLACK_WEBHOOK, &chat::TEAMS, &chat::DISCORD];

/// The units of one channel.
pub fn units(channel: domain::Channel) -> impl Iterator<Item = &'static dyn ProviderUnit> {
    CATALOG.iter().copied().filter(move |u| u.channel() == channel)
}

/// The unit `name` of `channel`.
pub fn find(channel: domain::Channel, name: &str) -> Option<&'static dyn ProviderUnit> {
    units(channel).find(|u| u.name() == name)
}
