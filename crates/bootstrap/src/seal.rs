//! Secrets at rest: a tenant's provider credentials and its chat webhook URLs are stored
//! sealed with XChaCha20-Poly1305 (a random 24-byte nonce per value, so no nonce is ever
//! reused under one key). Each sealed value names the key that sealed it,
//! `v1.<key id>.<base64url(nonce ‖ ciphertext)>`, so keys can be rotated: new values are
//! sealed with the current key, and `notify-admin rotate-integration-key` re-seals the
//! old ones, after which the old key can be removed.
//!
//! The keys come from configuration (`[secrets]`, see [`SecretsConfig`]). A value sealed
//! for one tenant cannot be moved to another: the tenant (and what the value is, such as
//! `integration:sms/twilio`) is bound in as associated data.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    Key, XChaCha20Poly1305, XNonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::ConfigError;

const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;

/// `[secrets]`: `keys` maps a key id to 32 random bytes in base64
/// (`openssl rand -base64 32`); `current` is the id new values are sealed with.
/// `NOTIFY_SECRETS__CURRENT=k2`, `NOTIFY_SECRETS__KEYS__K2=...`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    pub current: Option<String>,
    pub keys: BTreeMap<String, SecretString>,
}

/// The configured keys, ready to seal and open.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: BTreeMap<String, XChaCha20Poly1305>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("current", &self.current).field("key_ids", &self.key_ids()).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The value names a key this process does not have.
    #[error("sealed with key `{0}`, which is not configured in secrets.keys")]
    UnknownKey(String),
    /// Not a sealed value, or altered, or sealed for another tenant or purpose. Says
    /// nothing of the value itself.
    #[error("the sealed value is malformed or does not open with its key")]
    Corrupt,
}

impl SecretsConfig {
    /// The keyring, or `None` when no key is configured (features that store secrets are
    /// then unavailable and say so).
    pub fn keyring(&self) -> Result<Option<Keyring>, ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid { key, message: message.into() };
        if self.keys.is_empty() {
            return match &self.current {
                Some(_) => Err(invalid("secrets.keys".into(), "must hold the key named by secrets.current")),
                None => Ok(None),
            };
        }
        let mut keys = BTreeMap::new();
        for (id, secret) in &self.keys {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(invalid(format!("secrets.keys.{id}"), "key ids are letters, digits, `_` and `-`"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(secret.expose_secret().trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    invalid(format!("secrets.keys.{id}"), "must be 32 random bytes in base64 (openssl rand -base64 32)")
                })?;
            keys.insert(id.clone(), XChaCha20Poly1305::new(Key::from_slice(&bytes)));
        }
        let current = match (&self.current, keys.len()) {
            (Some(id), _) if keys.contains_key(id) => id.clone(),
            (Some(id), _) => {
                return Err(invalid("secrets.current".into(), &format!("names `{id}`, not in secrets.keys")));
            }
            (None, 1) => keys.keys().next().expect("one key").clone(),
            (None, _) => return Err(invalid("secrets.current".into(), "must name the key to seal with")),
        };
        Ok(Some(Keyring { current, keys }))
    }
}

impl Keyring {
    /// The id new values are sealed with.
    pub fn current(&self) -> &str {
        &self.current
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// Seals `plain` for `tenant` and `purpose` with the current key.
    pub fn seal(&self, tenant: &uuid::Uuid, purpose: &str, plain: &[u8]) -> String {
        let cipher = &self.keys[&self.current];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(tenant, purpose);
        let sealed = cipher.encrypt(&nonce, Payload { msg: plain, aad: &aad }).expect("sealing in memory cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{VERSION}.{}.{}", self.current, URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Opens a value sealed by [`Self::seal`] with the same tenant and purpose.
    pub fn open(&self, tenant: &uuid::Uuid, purpose: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let key_id = key_id(sealed).ok_or(SealError::Corrupt)?;
        let cipher = self.keys.get(key_id).ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        let body = sealed.rsplit('.').next().ok_or(SealError::Corrupt)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let aad = associated_data(tenant, purpose);
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| SealError::Corrupt)
    }

    /// Whether `sealed` was sealed with a key other than the current one.
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        key_id(sealed) != Some(self.current.as_str())
    }
}

/// The key id a sealed value names.
pub fn key_id(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(VERSION), Some(id), Some(_)) => Some(id),
        _ => None,
    }
}

fn associated_data(tenant: &uuid::Uuid, purpose: &str) -> Vec<u8> {
    let mut aad = tenant.as_bytes().to_vec();
    aad.extend_from_slice(purpose.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(current: Option<&str>, keys: &[(&str, [u8; 32])]) -> SecretsConfig {
        SecretsConfig {
            current: current.map(str::to_owned),
            keys: keys
                .iter()
                .map(|(id, k)| (id.to_string(), base64::engine::general_purpose::STANDARD.encode(k).into()))
                .collect(),
        }
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_tenant_and_purpose() {
        let ring = config(None, &[("k1", [7; 32])]).keyring().unwrap().unwrap();
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let sealed = ring.seal(&a, "integration:sms/twilio", b"token-1234");
        assert!(sealed.starts_with("v1.k1.") && !sealed.contains("token"), "{sealed}");
        assert_eq!(ring.open(&a, "integration:sms/twilio", &sealed).unwrap(), b"token-1234");
        assert!(matches!(ring.open(&b, "integration:sms/twilio", &sealed), Err(SealError::Corrupt)));
        assert!(matches!(ring.open(&a, "integration:email/ses", &sealed), Err(SealError::Corrupt)));
        // Two seals of one value differ: the nonce is random.
        assert_ne!(sealed, ring.seal(&a, "integration:sms/twilio", b"token-1234"));
    }

    #[test]
    fn rotation_opens_old_values_and_seals_with_the_new_key() {
        let old = config(None, &[("k1", [1; 32])]).keyring().unwrap().unwrap();
        let tenant = uuid::Uuid::now_v7();
        let sealed = old.seal(&tenant, "p", b"secret");
        let both = config(Some("k2"), &[("k1", [1; 32]), ("k2", [2; 32])]).keyring().unwrap().unwrap();
        assert!(both.needs_reseal(&sealed));
        let resealed = both.seal(&tenant, "p", &both.open(&tenant, "p", &sealed).unwrap());
        assert!(!both.needs_reseal(&resealed) && resealed.starts_with("v1.k2."));
        let new = config(None, &[("k2", [2; 32])]).keyring().unwrap().unwrap();
        assert_eq!(new.open(&tenant, "p", &resealed).unwrap(), b"secret");
        assert!(matches!(new.open(&tenant, "p", &sealed), Err(SealError::UnknownKey(id)) if id == "k1"));
    }

    #[test]
    fn bad_key_settings_are_named() {
        assert!(config(None, &[]).keyring().unwrap().is_none());
        let short = SecretsConfig { current: None, keys: [("k1".into(), "c2hvcnQ=".into())].into() };
        assert!(short.keyring().unwrap_err().to_string().contains("secrets.keys.k1"));
        let two = config(None, &[("a", [1; 32]), ("b", [2; 32])]);
        assert!(two.keyring().unwrap_err().to_string().contains("secrets.current"));
        let missing = config(Some("c"), &[("a", [1; 32])]);
        assert!(missing.keyring().unwrap_err().to_string().contains("secrets.current"));
    }
}
