//! Delivery receipts: proving that a request comes from the provider (each signs in its
//! own way, docs/providers.md §9) and reading what it reports. The handlers are in
//! `routes/providers.rs`; the state change is `Store::apply_receipt`.

pub mod meta;
pub mod ses;
pub mod sns;
pub mod twilio;

use bootstrap::{ConfigError, ExposeSecret, SecretString};

use crate::config;

/// The checkers of the providers whose receipt settings are given; `None` answers `404`.
pub struct Receipts {
    pub twilio: Option<twilio::Twilio>,
    pub ses: Option<sns::Sns>,
    pub meta: Option<meta::Meta>,
}

impl Receipts {
    pub fn new(config: &config::Receipts) -> Result<Self, ConfigError> {
        Ok(Self {
            twilio: config.twilio.as_ref().map(twilio::Twilio::new).transpose()?,
            ses: config.ses.as_ref().map(sns::Sns::new).transpose()?,
            meta: config.meta.as_ref().map(meta::Meta::new).transpose()?,
        })
    }
}

/// Why a request was not taken as the provider's.
#[derive(Debug)]
pub enum Refusal {
    /// Unsigned, mis-signed, or from a topic or host not allowed: `403`.
    Signature(&'static str),
    /// What proves it could not be fetched (the signing certificate): worth sending again.
    Unreachable(String),
}

/// A secret that signs requests: an empty one would let anyone sign.
fn secret<'a>(value: &'a SecretString, key: &str) -> Result<&'a [u8], ConfigError> {
    let bytes = value.expose_secret().as_bytes();
    if bytes.is_empty() {
        return Err(ConfigError::Invalid { key: key.into(), message: "must not be empty".into() });
    }
    Ok(bytes)
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}
