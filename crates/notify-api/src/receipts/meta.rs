//! Meta's WhatsApp Cloud API webhook (docs/providers.md §9.3): a `GET` to verify the subscription
//! (`hub.verify_token`), then `POST`s of `statuses[]` signed with `X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256(app secret, raw body)>`.

use aws_lc_rs::{constant_time, digest, hmac};
use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::DeliveryStatus;
use serde::Deserialize;
use store::Receipt;

use super::secret;
use crate::config::MetaReceipts;

/// The provider name the workers record on a delivery sent through Meta.
pub const PROVIDER: &str = "meta";

pub struct Meta {
    key: hmac::Key,
    verify_token: SecretString,
}

impl Meta {
    pub fn new(config: &MetaReceipts) -> Result<Self, ConfigError> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret(&config.app_secret, "receipts.meta.app_secret")?);
        secret(&config.verify_token, "receipts.meta.verify_token")?;
        Ok(Self { key, verify_token: config.verify_token.clone() })
    }

    /// Whether the `X-Hub-Signature-256` header signs exactly these body bytes. Constant
    /// time in the signature.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> bool {
        signs(&self.key, header, body)
    }

    /// Whether `token` is the configured verify token.
    pub fn is_verify_token(&self, token: &str) -> bool {
        same_token(token, self.verify_token.expose_secret())
    }
}

/// Whether the `X-Hub-Signature-256` header signs exactly these body bytes with the app
/// secret `app_secret` (a tenant's). Constant time in the signature.
pub fn signed_with(app_secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    !app_secret.is_empty() && signs(&hmac::Key::new(hmac::HMAC_SHA256, app_secret), header, body)
}

fn signs(key: &hmac::Key, header: Option<&str>, body: &[u8]) -> bool {
    let Some(hex_tag) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else { return false };
    let Ok(tag) = hex::decode(hex_tag) else { return false };
    hmac::verify(key, body, &tag).is_ok()
}

/// Whether `given` is the verify token `expected`. The digests are compared, so the time
/// taken says nothing of the token, its length included; an empty token is never one.
pub fn same_token(given: &str, expected: &str) -> bool {
    let given_digest = digest::digest(&digest::SHA256, given.as_bytes());
    let expected_digest = digest::digest(&digest::SHA256, expected.as_bytes());
    !expected.is_empty()
        && constant_time::verify_slices_are_equal(given_digest.as_ref(), expected_digest.as_ref()).is_ok()
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize, Default)]
struct Value {
    #[serde(default)]
    statuses: Vec<Status>,
}

#[derive(Deserialize)]
struct Status {
    /// The `wamid` the send answered with.
    id: String,
    status: String,
    #[serde(default)]
    errors: Vec<MetaError>,
}

#[derive(Deserialize)]
struct MetaError {
    code: Option<serde_json::Value>,
    title: Option<String>,
    message: Option<String>,
}

/// The receipts in a webhook body: `delivered` and `read` are delivered; `failed` is failed
/// with the first error's code. `sent` and other changes (incoming messages, ...) report
/// nothing about an outcome.
pub fn receipts(body: &[u8]) -> Result<Vec<Receipt>, serde_json::Error> {
    let payload: Payload = serde_json::from_slice(body)?;
    let statuses = payload.entry.into_iter().flat_map(|e| e.changes).flat_map(|c| c.value.statuses);
    Ok(statuses.filter_map(receipt).collect())
}

fn receipt(status: Status) -> Option<Receipt> {
    let new_status = match status.status.as_str() {
        "delivered" | "read" => DeliveryStatus::Delivered,
        "failed" => DeliveryStatus::Failed,
        _ => return None,
    };
    let error = status.errors.into_iter().next().filter(|_| new_status == DeliveryStatus::Failed);
    let error_code = error.as_ref().and_then(|e| match &e.code {
        Some(serde_json::Value::String(code)) => Some(code.clone()),
        Some(serde_json::Value::Number(code)) => Some(code.to_string()),
        _ => None,
    });
    let error_message = error.and_then(|e| e.title.or(e.message));
    Some(Receipt {
        provider: PROVIDER,
        provider_message_id: status.id,
        tenant_id: None,
        status: Some(new_status),
        error_code,
        error_message,
        suppress: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_secret(secret: &str) -> Meta {
        Meta::new(&MetaReceipts { app_secret: SecretString::from(secret), verify_token: SecretString::from("vt") })
            .unwrap()
    }

    /// RFC 4231 test case 2: HMAC-SHA256 of "what do ya want for nothing?" keyed "Jefe".
    #[test]
    fn the_signature_is_hex_hmac_sha256_of_the_raw_body() {
        let meta = with_secret("Jefe");
        let body = b"what do ya want for nothing?";
        let tag = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(meta.verify(Some(&format!("sha256={tag}")), body));
        assert!(meta.verify(Some(&format!("sha256={}", tag.to_uppercase())), body));
        assert!(!meta.verify(Some(&format!("sha256={tag}")), b"what do ya want for nothing!"));
        assert!(!meta.verify(Some(tag), body), "the prefix is part of the format");
        assert!(!meta.verify(Some("sha256=zz"), body));
        assert!(!meta.verify(None, body));
        assert!(!with_secret("Jeff").verify(Some(&format!("sha256={tag}")), body));
    }

    #[test]
    fn the_verify_token_must_match_exactly() {
        let meta = with_secret("s");
        assert!(meta.is_verify_token("vt"));
        assert!(!meta.is_verify_token("vt "));
        assert!(!meta.is_verify_token(""));
    }

    #[test]
    fn statuses_map_to_receipts() {
        let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [
                {"id": "wamid.A", "status": "delivered", "timestamp": "1", "recipient_id": "155"},
                {"id": "wamid.B", "status": "read", "timestamp": "1", "recipient_id": "155"},
                {"id": "wamid.C", "status": "sent", "timestamp": "1", "recipient_id": "155"},
                {"id": "wamid.D", "status": "failed", "timestamp": "1", "recipient_id": "155",
                 "errors": [{"code": 131026, "title": "Message undeliverable"}]}]}},
            {"field": "messages", "value": {"messages": [{"from": "155", "id": "wamid.E", "type": "text"}]}}]}]});
        let receipts = receipts(body.to_string().as_bytes()).unwrap();
        let got: Vec<_> = receipts
            .iter()
            .map(|r| (r.provider_message_id.as_str(), r.status.unwrap(), r.error_code.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("wamid.A", DeliveryStatus::Delivered, None),
                ("wamid.B", DeliveryStatus::Delivered, None),
                ("wamid.D", DeliveryStatus::Failed, Some("131026"))
            ]
        );
        assert_eq!(receipts[2].error_message.as_deref(), Some("Message undeliverable"));
    }
}
