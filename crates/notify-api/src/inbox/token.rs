//! Subscriber tokens: short-lived bearer tokens that let an end user's browser read and
//! change its own inbox, and nothing else. The tenant's backend asks for one with its API
//! key (`POST /v1/subscribers/{id}/token`) and hands it to the page.
//!
//! A token is `v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, "v1.<claims>"))>`,
//! unpadded base64url. Any replica with the same key verifies it. It names the subscriber's
//! incarnation (`Store::subscriber_incarnation`), checked on every use ([`authorize`]): once
//! the subscriber is erased its tokens are refused, even when the id is given to someone
//! new.

use std::time::Duration;

use aws_lc_rs::hmac;
use axum::{extract::FromRequestParts, http::request::Parts};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bootstrap::{ConfigError, ExposeSecret};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    AppState,
    config::{InboxSettings, MAX_TOKEN_TTL},
    error::ApiError,
    rate_limit::Decision,
};

const PREFIX: &str = "v1.";
/// The shortest accepted secret: as many bytes as the HMAC's output.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longer tokens are refused before any work: real ones stay far below (a subscriber id
/// has at most 200 characters).
pub(crate) const MAX_TOKEN_LEN: usize = 2048;

/// Whether a bearer credential is a subscriber token (one of ours, `v1.…`, or a tenant's
/// own JWT) rather than an API key (`nk_…`), which never looks like either.
pub fn is_subscriber_token(token: &str) -> bool {
    token.starts_with(PREFIX) || super::offline::is_jwt(token)
}

/// Who an inbox request is for, from a valid subscriber token.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriberClaims {
    pub tenant_id: Uuid,
    pub subscriber_id: String,
    /// The subscriber's incarnation when the token was issued.
    pub incarnation: i64,
    pub expires_at: OffsetDateTime,
}

/// The claims as they travel inside the token.
#[derive(Serialize, Deserialize)]
struct Wire {
    /// Tenant.
    t: Uuid,
    /// Subscriber.
    s: String,
    /// The subscriber's incarnation.
    i: i64,
    /// Expiry, Unix seconds.
    e: i64,
}

/// The HMAC-SHA256 key that signs and verifies subscriber tokens.
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// A random key, for a process with no `inbox.token_secret`.
    pub fn random() -> Self {
        let mut secret = [0u8; MIN_SECRET_BYTES];
        aws_lc_rs::rand::fill(&mut secret).expect("the system's random source works");
        Self::new(&secret)
    }

    /// The key `inbox` configures (random when it names none), or what is wrong with it.
    pub fn from_settings(settings: &InboxSettings) -> Result<Self, ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid { key: key.into(), message: message.into() };
        if settings.token_ttl < Duration::from_secs(1) || settings.token_ttl > MAX_TOKEN_TTL {
            return Err(invalid("inbox.token_ttl", "must be 1s to 24h"));
        }
        match &settings.token_secret {
            Some(secret) if secret.expose_secret().len() < MIN_SECRET_BYTES => {
                Err(invalid("inbox.token_secret", "must be at least 32 bytes"))
            }
            Some(secret) => Ok(Self::new(secret.expose_secret().as_bytes())),
            None => Ok(Self::random()),
        }
    }

    /// `v1.<base64url(JSON claims)>.<base64url(HMAC)>` for this incarnation of the
    /// subscriber, valid for `ttl` in whole seconds (at most 24 h: a longer one is cut), and
    /// when it expires.
    pub fn issue(
        &self,
        tenant_id: Uuid,
        subscriber_id: &str,
        incarnation: i64,
        ttl: Duration,
    ) -> (String, OffsetDateTime) {
        let ttl = ttl.min(MAX_TOKEN_TTL).as_secs() as i64;
        let expires_at = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp() + ttl)
            .expect("a day from now is a valid time");
        let wire = Wire { t: tenant_id, s: subscriber_id.to_owned(), i: incarnation, e: expires_at.unix_timestamp() };
        let claims = serde_json::to_vec(&wire).expect("claims serialize");
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(claims));
        let tag = hmac::sign(&self.key, signed.as_bytes());
        (format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())), expires_at)
    }

    /// The claims of a token this key signed that has not expired; constant-time signature check.
    pub fn verify(&self, token: &str) -> Option<SubscriberClaims> {
        self.verify_at(token, OffsetDateTime::now_utc())
    }

    fn verify_at(&self, token: &str, now: OffsetDateTime) -> Option<SubscriberClaims> {
        if token.len() > MAX_TOKEN_LEN || !token.starts_with(PREFIX) {
            return None;
        }
        let (signed, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, signed.as_bytes(), &tag).ok()?;
        let claims = URL_SAFE_NO_PAD.decode(&signed[PREFIX.len()..]).ok()?;
        let wire: Wire = serde_json::from_slice(&claims).ok()?;
        let expires_at = OffsetDateTime::from_unix_timestamp(wire.e).ok()?;
        (now < expires_at).then_some(SubscriberClaims {
            tenant_id: wire.t,
            subscriber_id: wire.s,
            incarnation: wire.i,
            expires_at,
        })
    }
}

/// The claims of `token` if this API's key signed it, it has not expired, and the
/// incarnation it names is still the subscriber's: a token outlives neither its expiry nor
/// its subscriber. For the inbox's REST endpoints and its WebSocket alike.
///
/// Each use takes one request from the subscriber's bucket (`admission.inbox_rate`, per
/// replica) right after the signature check and before the incarnation is read: a page
/// polling in a loop (or a socket reconnecting in one) gets `429` with `Retry-After` and
/// costs no pooled connection. A token this key did not sign takes from no bucket.
///
/// A tenant's own token (`inbox::offline`, a JWT) is checked alike, and holds for the
/// subscriber as it is now: it names no incarnation.
pub async fn authorize(state: &AppState, token: &str) -> Result<SubscriberClaims, ApiError> {
    if super::offline::is_jwt(token) {
        let (tenant_id, subscriber_id, expires_at) = super::offline::verify(state, token).await?;
        take_rate(state, tenant_id, &subscriber_id)?;
        let incarnation = state.store.subscriber_incarnation(tenant_id, &subscriber_id).await?;
        let incarnation =
            incarnation.ok_or(ApiError::Unauthorized("the subscriber token's subscriber does not exist"))?;
        return Ok(SubscriberClaims { tenant_id, subscriber_id, incarnation, expires_at });
    }
    let claims =
        state.tokens.verify(token).ok_or(ApiError::Unauthorized("the subscriber token is invalid or expired"))?;
    take_rate(state, claims.tenant_id, &claims.subscriber_id)?;
    match state.store.subscriber_incarnation(claims.tenant_id, &claims.subscriber_id).await? {
        Some(current) if current == claims.incarnation => Ok(claims),
        _ => Err(ApiError::Unauthorized("the subscriber token's subscriber was erased")),
    }
}

/// One request from the subscriber's bucket (`admission.inbox_rate`).
fn take_rate(state: &AppState, tenant_id: Uuid, subscriber_id: &str) -> Result<(), ApiError> {
    match state.inbox_limiter.take((tenant_id, subscriber_id.to_owned()), state.inbox_rate, 1) {
        Decision::Allowed(_) => Ok(()),
        Decision::Limited { quota, retry_after } => Err(ApiError::SubscriberRateLimited { quota, retry_after }),
    }
}

/// The subscriber behind the request's token (`Authorization: Bearer <subscriber token>`),
/// for the inbox endpoints. An API key is not a subscriber token: it is refused here, as a
/// subscriber token is refused by the producer endpoints (no key has its hash).
pub struct InboxCaller(pub SubscriberClaims);

impl FromRequestParts<AppState> for InboxCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("send a subscriber token as `Authorization: Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized("the Authorization header must be `Bearer <token>`"))?;
        authorize(state, token).await.map(InboxCaller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn tenant() -> Uuid {
        Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0042)
    }

    #[test]
    fn round_trip() {
        let key = TokenKey::new(SECRET);
        let (token, expires_at) = key.issue(tenant(), "u-1.with.dots/é", 7, Duration::from_secs(3600));
        assert!(token.starts_with("v1."));
        let claims = key.verify(&token).expect("a fresh token verifies");
        assert_eq!(
            claims,
            SubscriberClaims {
                tenant_id: tenant(),
                subscriber_id: "u-1.with.dots/é".into(),
                incarnation: 7,
                expires_at
            }
        );
        let left = expires_at - OffsetDateTime::now_utc();
        assert!(left > time::Duration::seconds(3590) && left <= time::Duration::seconds(3600), "{left}");
        assert!(!token.contains('='), "unpadded base64url");
    }

    #[test]
    fn tampering_is_refused() {
        let key = TokenKey::new(SECRET);
        let (token, _) = key.issue(tenant(), "u-1", 7, Duration::from_secs(60));
        let (signed, tag) = token.rsplit_once('.').unwrap();
        // Another subscriber's claims under the original signature.
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Wire {
                t: tenant(),
                s: "u-2".into(),
                i: 7,
                e: OffsetDateTime::now_utc().unix_timestamp() + 60,
            })
            .unwrap(),
        );
        assert_eq!(key.verify(&format!("v1.{forged}.{tag}")), None);
        // One character of the signature changed.
        let mut bad_tag = tag.to_owned().into_bytes();
        bad_tag[0] = if bad_tag[0] == b'A' { b'B' } else { b'A' };
        assert_eq!(key.verify(&format!("{signed}.{}", String::from_utf8(bad_tag).unwrap())), None);
        // Truncated, another version, garbage, empty.
        assert_eq!(key.verify(signed), None);
        assert_eq!(key.verify(&token.replacen("v1.", "v2.", 1)), None);
        assert_eq!(key.verify(&token[..token.len() - 2]), None);
        assert_eq!(key.verify("v1.."), None);
        assert_eq!(key.verify(""), None);
        assert_eq!(key.verify(&"v1.".repeat(1000)), None);
        assert!(key.verify(&token).is_some());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let key = TokenKey::new(SECRET);
        let (token, expires_at) = key.issue(tenant(), "u-1", 7, Duration::from_secs(60));
        assert!(key.verify_at(&token, expires_at - time::Duration::seconds(1)).is_some());
        assert_eq!(key.verify_at(&token, expires_at), None);
        assert_eq!(key.verify_at(&token, expires_at + time::Duration::hours(1)), None);
        let (now_expired, _) = key.issue(tenant(), "u-1", 7, Duration::ZERO);
        assert_eq!(key.verify(&now_expired), None);
    }

    #[test]
    fn another_key_does_not_verify() {
        let (token, _) = TokenKey::new(SECRET).issue(tenant(), "u-1", 7, Duration::from_secs(60));
        assert_eq!(TokenKey::new(b"fedcba9876543210fedcba9876543210").verify(&token), None);
        assert_eq!(TokenKey::random().verify(&token), None);
    }

    #[test]
    fn settings_are_checked() {
        let settings = |secret: Option<&str>, ttl: u64| InboxSettings {
            token_secret: secret.map(bootstrap::SecretString::from),
            token_ttl: Duration::from_secs(ttl),
            cors_origins: Vec::new(),
        };
        assert!(TokenKey::from_settings(&settings(None, 3600)).is_ok());
        assert!(TokenKey::from_settings(&settings(Some(std::str::from_utf8(SECRET).unwrap()), 86_400)).is_ok());
        for (bad, key) in [
            (settings(Some("too short"), 3600), "inbox.token_secret"),
            (settings(None, 86_401), "inbox.token_ttl"),
            (settings(None, 0), "inbox.token_ttl"),
        ] {
            match TokenKey::from_settings(&bad) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{other:?}"),
            }
        }
        // The key made from a configured secret verifies what another replica issued.
        let configured = settings(Some(std::str::from_utf8(SECRET).unwrap()), 60);
        let (token, _) =
            TokenKey::from_settings(&configured).unwrap().issue(tenant(), "u-1", 7, Duration::from_secs(60));
        assert!(TokenKey::from_settings(&configured).unwrap().verify(&token).is_some());
    }
}
