//! Every provider of Notify, one module each, each a self-describing unit
//! ([`ProviderUnit`]): its channel and name, its settings from the operator's config or a
//! tenant's integration, their checks, which are secrets, and how a client and a
//! credentials check are built from them. Every failure is sorted into the buckets of
//! docs/providers.md §1.
//!
//! Over plain HTTPS with our own small reqwest clients (no vendor SDK): `twilio` (SMS and
//! WhatsApp), `meta` (WhatsApp Cloud API), `novu`; `http` holds what they share (the
//! client, `Retry-After`, transport errors, the recipient kept out of stored messages).
//! Through the AWS SDK: `ses`, `sns`, sharing `aws` (client settings, SDK errors). Over
//! SMTP with lettre: `smtp`, sharing `mail` (addresses, bodies, unsubscribe headers) with
//! `ses`. Chat: `chat` (Slack's bot, and the Slack, Teams and Discord webhooks). This
//! crate knows no database and no broker.

pub mod aws;
pub mod chat;
pub mod http;
mod mail;
pub mod meta;
pub mod novu;
pub mod push;
pub mod ses;
mod settings;
pub mod smtp;
pub mod sns;
pub mod twilio;
pub mod unit;
pub mod webhook_endpoint;

pub use settings::Section;
pub use unit::{Checked, Context, Integration, IntegrationRules, ProviderSettings, ProviderUnit, Source};

/// Every provider unit, by channel and in the order a channel's documentation lists them.
/// The sandbox is the worker runtime's, not listed here.
pub const CATALOG: &[&dyn ProviderUnit] = &[
    &ses::UNIT,
    &smtp::UNIT,
    &twilio::SMS_UNIT,
    &sns::UNIT,
    &twilio::WHATSAPP_UNIT,
    &meta::UNIT,
    &novu::UNIT,
    &chat::SLACK,
    &chat::SLACK_WEBHOOK,
    &chat::TEAMS,
    &chat::DISCORD,
    &push::fcm::UNIT,
    &push::apns::UNIT,
    &push::webpush::UNIT,
];

/// The units of one channel.
pub fn units(channel: domain::Channel) -> impl Iterator<Item = &'static dyn ProviderUnit> {
    CATALOG.iter().copied().filter(move |u| u.channel() == channel)
}

/// The unit `name` of `channel`.
pub fn find(channel: domain::Channel, name: &str) -> Option<&'static dyn ProviderUnit> {
    units(channel).find(|u| u.name() == name)
}
