//! Providers reached over plain HTTPS with our own small reqwest clients (no vendor SDK):
//! each has a configurable base URL, keeps the HTTP status and `Retry-After`, and sorts
//! every failure into the buckets of docs/providers.md §1.
//!
//! `http` holds what they share (the client, `Retry-After`, transport errors, keeping the
//! recipient's address out of stored messages); `twilio`, `meta` and `novu` hold one
//! provider each: its settings (`XConfig`) and its `worker::Provider` (`XProvider`).

pub mod http;
pub mod meta;
pub mod novu;
mod settings;
pub mod twilio;
