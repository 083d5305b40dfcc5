//! Apple Push Notification service, token-based (docs/providers.md §13): one
//! `POST {base_url}/3/device/{token}` per device over HTTP/2, authorised by a provider token,
//! an ES256 JWT signed with the team's `.p8` key.
//!
//! APNs speaks HTTP/2 only, so the unit has a client of its own ([`SharedClient::http2_only`]):
//! ALPN `h2` alone over TLS, the HTTP/2 preface at once over plain `http` (an h2c stand-in).
//! A tenant's client resolves names through the guarded resolver, as every tenant's does.
//!
//! The provider token is reused for [`TOKEN_LIFETIME`] (Apple refuses a token refreshed more
//! often than every 20 minutes and one older than an hour), by every provider of the key in
//! the process (a cache keyed by team id, key id and the key), rebuilt ones too. A 403 that says the token
//! expired or is invalid regenerates it (once for all the sends that saw the same token)
//! and sends again once; a second refusal is `Config`, which pauses a tenant's integration.
//!
//! A device APNs reports gone (410 `Unregistered`/`ExpiredToken`, 400 `BadDeviceToken`,
//! and `DeviceTokenNotForTopic` when the topic was the device's own `app`) is a
//! [`SendFailure::gone`]: the worker removes it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{
    Channel, DeliveryJob, FailureKind, Priority, Provider, SendFailure, SendOutcome, SendReceipt, push::Platform,
};
use futures_util::{FutureExt, future::BoxFuture};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{
    Certificate, StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    http::{self, Client, SharedClient},
    settings::{self, Refused, Section},
};

pub const NAME: &str = "apns";
/// Apple's production host.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// Apple's development host, for apps signed with a development profile.
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";
/// How long a provider token is used before a new one is signed: past Apple's 20-minute
/// floor between refreshes, well before its one-hour expiry.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// The largest payload APNs takes (VoIP: 5120), counted after JSON encoding.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
const MAX_VOIP_PAYLOAD_BYTES: usize = 5120;
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The push types APNs knows (`apns-push-type`).
const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "location",
    "liveactivity",
    "pushtotalk",
    "widgets",
    "controls",
];

/// The `apns` unit: `[push.apns]`, or a tenant's integration.
pub struct ApnsUnit;

pub const UNIT: ApnsUnit = ApnsUnit;

const REFUSED: Refused<'static> = Refused {
    config: &[],
    integration: &[
        ("base_url", "a tenant's client calls Apple's hosts: choose one with `environment`"),
        ("ca_cert", "a tenant's client trusts the system's roots only"),
    ],
};

/// `[push.apns]`, and a tenant's integration but for `base_url` and `ca_cert`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ApnsConfig {
    /// The signing key, the `.p8` file's PEM (PKCS#8, EC P-256).
    key: Option<SecretString>,
    /// The key's 10-character id, the JWT's `kid`.
    key_id: Option<String>,
    /// The team's 10-character id, the JWT's `iss`.
    team_id: Option<String>,
    /// The app's bundle id, `apns-topic`, for a device registered without `app`.
    topic: Option<String>,
    /// `production` (default) or `sandbox`: which of Apple's hosts is called.
    environment: Option<String>,
    /// Apple's host, or a stand-in's; the operator's only. Overrides `environment`.
    base_url: Option<String>,
    /// How long APNs keeps trying an offline device (`apns-expiration`); `0s`: once.
    #[serde(with = "humantime_serde")]
    ttl: Option<Duration>,
    /// `apns-push-type`, `alert` unless set.
    push_type: Option<String>,
    /// A CA certificate (PEM) trusted beside the system's, for a TLS stand-in in tests; the
    /// operator's only.
    ca_cert: Option<String>,
}

impl ProviderUnit for ApnsUnit {
    fn channel(&self) -> Channel {
        Channel::Push
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn secrets(&self) -> &'static [&'static str] {
        &["key"]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let (config, section) = settings::read::<ApnsConfig>(&source, Channel::Push, NAME, &REFUSED)?;
        let environment_url = match settings::given(&config.environment) {
            None | Some("production") => PRODUCTION_URL,
            Some("sandbox" | "development") => SANDBOX_URL,
            Some(_) => return Err(section.invalid("environment", "must be `production` or `sandbox`")),
        };
        let (base_url, guard) = match (&source, settings::given(&config.base_url)) {
            (Source::Integration(integration), _) => (
                settings::integration_base_url(integration.rules, NAME, environment_url),
                Some(integration.rules.allow_private_hosts),
            ),
            (Source::Config(_), Some(url)) => (settings::base_url(url, &section, "base_url")?, None),
            (Source::Config(_), None) => (environment_url.to_owned(), None),
        };
        let key_id = identifier(&config.key_id, "key_id", &section)?;
        let team_id = identifier(&config.team_id, "team_id", &section)?;
        let pem = pem(section.required_secret(&config.key, "key")?.expose_secret());
        let tokens = TOKENS.get(&super::identity(&[team_id.as_bytes(), key_id.as_bytes(), pem.as_bytes()]));
        let signer = Signer::new(&pem, key_id, team_id)
            .map_err(|e| section.invalid("key", format!("must be the `.p8` key's PEM (EC P-256, PKCS#8): {e}")))?;
        let topic = match settings::given(&config.topic) {
            Some(topic) if !is_topic(topic) => {
                return Err(section.invalid("topic", "must be a bundle id (letters, digits, `.`, `-` and `_`)"));
            }
            topic => topic.map(str::to_owned),
        };
        let push_type = settings::given(&config.push_type).unwrap_or("alert").to_owned();
        if !PUSH_TYPES.contains(&push_type.as_str()) {
            return Err(section.invalid("push_type", format!("must be one of {}", PUSH_TYPES.join(", "))));
        }
        let ca_cert = match settings::given(&config.ca_cert) {
            None => Vec::new(),
            Some(pem) => match Certificate::from_pem_bundle(pem.as_bytes()) {
                Ok(roots) if !roots.is_empty() => roots,
                _ => return Err(section.invalid("ca_cert", "must hold a PEM certificate")),
            },
        };
        Ok(Box::new(ApnsSettings {
            shared: Arc::new(Shared {
                signer,
                base_url,
                topic,
                push_type,
                ttl: config.ttl.unwrap_or(DEFAULT_TTL),
                tokens,
            }),
            guard,
            ca_cert,
        }))
    }
}

/// A 10-character Apple id (`key_id`, `team_id`).
fn identifier(value: &Option<String>, key: &str, section: &Section) -> Result<String, ConfigError> {
    let id = section.required(value, key)?;
    if id.len() != 10 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(section.invalid(key, "must be Apple's 10-character id (letters and digits)"));
    }
    Ok(id.to_owned())
}

/// The key as written, or with its line breaks as `\n` escapes (an environment variable).
fn pem(key: &str) -> String {
    let key = key.trim();
    if key.contains('\n') { key.to_owned() } else { key.replace("\\n", "\n") }
}

/// A bundle id, with a push type's suffix (`.voip`, `.complication`) or not.
fn is_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 255
        && topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

#[derive(Debug)]
pub struct ApnsSettings {
    shared: Arc<Shared>,
    /// `Some(allow_private_hosts)`: a tenant's, whose client resolves through the guard.
    guard: Option<bool>,
    /// `ca_cert`: roots trusted beside the system's (a test's TLS stand-in).
    ca_cert: Vec<Certificate>,
}

impl ApnsSettings {
    fn provider(&self, http: &SharedClient) -> reqwest::Result<ApnsProvider> {
        let client = http.http2_only(self.guard, &self.ca_cert)?;
        Ok(ApnsProvider { http: client, shared: self.shared.clone() })
    }
}

impl ProviderSettings for ApnsSettings {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn Provider>>> {
        async move { Ok(Arc::new(self.provider(ctx.http)?) as Arc<dyn Provider>) }.boxed()
    }

    /// A push to a device token of zeros, which no device has, so nothing reaches a device:
    /// a 403 names what is wrong with the key, key id or team id, and `400 BadDeviceToken`
    /// is taken as the provider token accepted (docs/providers.md §13).
    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        async move {
            match self.provider(ctx.http) {
                Ok(provider) => provider.check().await,
                Err(e) => Checked::failed(None, "client", format!("no HTTP client: {e}")),
            }
        }
        .boxed()
    }
}

/// What the providers built from one unit's settings share: the signer and its token.
#[derive(Debug)]
struct Shared {
    signer: Signer,
    base_url: String,
    topic: Option<String>,
    push_type: String,
    ttl: Duration,
    /// The key's provider token, shared by every provider of this key in the process.
    tokens: Arc<TokenCache>,
}

/// Signs provider tokens: `{"alg": "ES256", "kid": key_id}`, `{"iss": team_id, "iat": now}`.
struct Signer {
    key: EncodingKey,
    key_id: String,
    team_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.key_id).field("team_id", &self.team_id).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl Signer {
    /// The signer of `pem`, proven by signing once (a key of another curve or kind fails
    /// here, when the settings are read, not at the first send).
    fn new(pem: &str, key_id: String, team_id: String) -> Result<Self, jsonwebtoken::errors::Error> {
        let signer = Signer { key: EncodingKey::from_ec_pem(pem.as_bytes())?, key_id, team_id };
        signer.sign()?;
        Ok(signer)
    }

    fn sign(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let iat = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        jsonwebtoken::encode(&header, &Claims { iss: &self.team_id, iat }, &self.key)
    }
}

/// The provider tokens of every key (team id, key id, key), shared by the providers built
/// from it: a provider rebuilt from the same settings keeps the token, as Apple refuses one
/// refreshed more often than every 20 minutes.
static TOKENS: super::Registry<TokenCache> = super::Registry::new();

/// The provider token in use and when it was signed.
#[derive(Debug, Default)]
struct TokenCache(Mutex<Option<Token>>);

#[derive(Clone, Debug)]
struct Token {
    /// `bearer <jwt>`, marked sensitive.
    authorization: HeaderValue,
    signed_at: Instant,
}

impl TokenCache {
    /// The token to send with at `now`: the cached one while younger than
    /// [`TOKEN_LIFETIME`], else a new one. `rejected`: the token APNs just refused, which is
    /// replaced unless another send replaced it already (so concurrent refusals of one
    /// token sign one new token, not one each).
    fn get(&self, signer: &Signer, now: Instant, rejected: Option<&HeaderValue>) -> Result<Token, SendFailure> {
        let mut slot = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(token) = slot.as_ref() {
            let fresh = now.saturating_duration_since(token.signed_at) < TOKEN_LIFETIME;
            if fresh && rejected != Some(&token.authorization) {
                return Ok(token.clone());
            }
        }
        let jwt = signer.sign().map_err(|e| {
            SendFailure::new(
                FailureKind::Config,
                "provider_token",
                format!("the provider token could not be signed: {e}"),
            )
        })?;
        let mut authorization = HeaderValue::try_from(format!("bearer {jwt}")).map_err(|_| {
            SendFailure::new(FailureKind::Config, "provider_token", "the provider token is not a header")
        })?;
        authorization.set_sensitive(true);
        let token = Token { authorization, signed_at: now };
        *slot = Some(token.clone());
        Ok(token)
    }
}

pub struct ApnsProvider {
    http: Client,
    shared: Arc<Shared>,
}

/// One answer of APNs, read whole.
struct Answer {
    status: StatusCode,
    apns_id: Option<String>,
    retry_after: Option<Duration>,
    reason: Option<String>,
}

impl ApnsProvider {
    async fn post(&self, token: &str, headers: &HeaderMap, body: &str) -> Result<Answer, SendFailure> {
        let mut answer = None;
        let mut rejected = None;
        // Twice at most: once more with a new provider token when APNs refused the first.
        for _ in 0..2 {
            let authorization = self.shared.tokens.get(&self.shared.signer, Instant::now(), rejected.as_ref())?;
            let request = self
                .http
                .post(format!("{}/3/device/{token}", self.shared.base_url))
                .headers(headers.clone())
                .header(AUTHORIZATION, authorization.authorization.clone())
                .body(body.to_owned());
            let response = request.send().await.map_err(|e| http::transport_failure(&e))?;
            let status = response.status();
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let apns_id = header("apns-id");
            let retry_after = http::retry_after(response.headers());
            let reason = match response.bytes().await {
                Ok(body) => serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|b| b["reason"].as_str().map(|r| r.chars().take(64).collect())),
                // The answer broke off after a success: the device token's push was taken.
                Err(e) if status.is_success() => return Err(http::transport_failure(&e)),
                Err(_) => None,
            };
            let refused_token = status == StatusCode::FORBIDDEN
                && matches!(reason.as_deref(), Some("ExpiredProviderToken" | "InvalidProviderToken"));
            answer = Some(Answer { status, apns_id, retry_after, reason });
            if !refused_token {
                break;
            }
            rejected = Some(authorization.authorization);
        }
        Ok(answer.expect("one request at least"))
    }

    async fn deliver(&self, job: &DeliveryJob) -> SendOutcome {
        let Some(device) = super::device_of(job, Platform::Apns) else {
            return SendOutcome::Failed(super::no_device(Platform::Apns));
        };
        let token = device.token.trim();
        if !is_device_token(token) {
            return SendOutcome::Failed(SendFailure::gone(
                "BadDeviceToken",
                "the device's token is not an APNs device token (hex digits)",
            ));
        }
        let shared = &self.shared;
        let device_topic = device.app.as_deref().map(str::trim).filter(|a| !a.is_empty());
        let Some(topic) = device_topic.or(shared.topic.as_deref()) else {
            return failed(FailureKind::Permanent, "MissingTopic", "the device has no `app` and `topic` is not set");
        };
        if !is_topic(topic) {
            return failed(FailureKind::Permanent, "BadTopic", "the device's `app` is not a bundle id");
        }
        let body = payload(job, &shared.push_type).to_string();
        let limit = if shared.push_type == "voip" { MAX_VOIP_PAYLOAD_BYTES } else { MAX_PAYLOAD_BYTES };
        if body.len() > limit {
            let message = format!("the payload is {} bytes, over APNs' {limit}", body.len());
            return failed(FailureKind::Permanent, "PayloadTooLarge", &message);
        }
        let headers = match headers(job, topic, &shared.push_type, shared.ttl) {
            Ok(headers) => headers,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        let answer = match self.post(token, &headers, &body).await {
            Ok(answer) => answer,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        if answer.status.is_success() {
            return SendOutcome::Sent(SendReceipt {
                provider_message_id: answer.apns_id.unwrap_or_else(|| apns_id(job)),
                response_excerpt: None,
            });
        }
        SendOutcome::Failed(classify(&answer, token, device_topic.is_some()))
    }

    async fn check(&self) -> Checked {
        let mut headers = HeaderMap::new();
        headers.insert("apns-push-type", HeaderValue::from_static("alert"));
        headers.insert("apns-priority", HeaderValue::from_static("10"));
        headers.insert("apns-expiration", HeaderValue::from_static("0"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(topic) = self.shared.topic.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert("apns-topic", topic);
        }
        let body = json!({"aps": {"alert": {"title": "check"}}}).to_string();
        let answer = match self.post(&"0".repeat(64), &headers, &body).await {
            Ok(answer) => answer,
            Err(failure) => return Checked::failed(None, &failure.code, failure.message),
        };
        let status = Some(answer.status.as_u16());
        let signer = &self.shared.signer;
        match (answer.status.as_u16(), answer.reason.as_deref()) {
            (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic" | "MissingTopic")) => Checked {
                ok: true,
                status,
                code: None,
                detail: format!("APNs accepted the provider token of key {} (team {})", signer.key_id, signer.team_id),
            },
            (_, Some(reason)) => {
                Checked::failed(status, reason, format!("APNs refused the check ({}): {reason}", answer.status))
            }
            _ => Checked::failed(
                status,
                &http::status_code(answer.status),
                format!("APNs answered {} without a reason", answer.status),
            ),
        }
    }
}

impl Provider for ApnsProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn serves(&self, job: &DeliveryJob) -> bool {
        super::device_of(job, Platform::Apns).is_some()
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.deliver(job).boxed()
    }
}

fn failed(kind: FailureKind, code: &str, message: &str) -> SendOutcome {
    SendOutcome::Failed(SendFailure::new(kind, code, message))
}

/// A device token as APNs issues them: an even number of hex digits (32 bytes today).
fn is_device_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 200
        && token.len().is_multiple_of(2)
        && token.chars().all(|c| c.is_ascii_hexdigit())
}

/// `apns-id`: the delivery's id, so a push is found in APNs' delivery log by it.
fn apns_id(job: &DeliveryJob) -> String {
    job.delivery_id.hyphenated().to_string()
}

/// `apns-priority`: 10 (at once) but for low priority and background pushes, which APNs
/// takes only at 5 (when the device's power allows).
fn priority(priority: Priority, push_type: &str) -> &'static str {
    if push_type == "background" || priority == Priority::Low { "5" } else { "10" }
}

/// The request's headers, authorization aside.
fn headers(job: &DeliveryJob, topic: &str, push_type: &str, ttl: Duration) -> Result<HeaderMap, SendFailure> {
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| {
            SendFailure::new(FailureKind::Permanent, "invalid_header", "a header holds characters HTTP cannot carry")
        })
    };
    let expiration = if ttl.is_zero() {
        0
    } else {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).saturating_add(ttl.as_secs())
    };
    let mut headers = HeaderMap::new();
    headers.insert("apns-topic", value(topic)?);
    headers.insert("apns-push-type", value(push_type)?);
    headers.insert("apns-priority", HeaderValue::from_static(priority(job.priority, push_type)));
    headers.insert("apns-expiration", HeaderValue::from(expiration));
    headers.insert("apns-collapse-id", value(&super::collapse_id(job))?);
    headers.insert("apns-id", value(&apns_id(job))?);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(headers)
}

/// The JSON APNs delivers: `aps` (alert, badge, sound; `content-available` for a
/// background push, `mutable-content` with an image, for the app's service extension to
/// fetch it), and the app's custom keys `action_url`, `image` and `data`.
pub fn payload(job: &DeliveryJob, push_type: &str) -> Value {
    let content = &job.content;
    let mut aps = Map::new();
    if push_type == "background" {
        aps.insert("content-available".into(), json!(1));
    } else {
        let mut alert = Map::new();
        if let Some(title) = &content.title {
            alert.insert("title".into(), json!(title));
        }
        if let Some(body) = content.body.as_ref().or(content.text.as_ref()) {
            alert.insert("body".into(), json!(body));
        }
        if !alert.is_empty() {
            aps.insert("alert".into(), Value::Object(alert));
        }
        if let Some(sound) = &content.sound {
            aps.insert("sound".into(), json!(sound));
        }
        if content.image.is_some() {
            aps.insert("mutable-content".into(), json!(1));
        }
    }
    if let Some(badge) = content.badge {
        aps.insert("badge".into(), json!(badge));
    }
    let mut body = Map::new();
    body.insert("aps".into(), Value::Object(aps));
    if let Some(url) = &content.action_url {
        body.insert("action_url".into(), json!(url));
    }
    if let Some(image) = &content.image {
        body.insert("image".into(), json!(image));
    }
    if let Some(data) = content.data.as_ref().filter(|d| !d.is_empty()) {
        body.insert("data".into(), json!(data));
    }
    Value::Object(body)
}

/// APNs' refusal in the failure buckets (docs/providers.md §13), its `reason` as the code.
/// `device_topic`: the push went to the topic the device named (its `app`); only then is
/// `DeviceTokenNotForTopic` the device's fault rather than a wrong `topic` setting's (which
/// would otherwise remove every device of the tenant it is sent to).
fn classify(answer: &Answer, device_token: &str, device_topic: bool) -> SendFailure {
    let status = answer.status;
    let Some(reason) = answer.reason.as_deref() else {
        let kind = http::kind_from_status(status);
        let message = format!("APNs answered {status} without a reason");
        return http::failure(kind, http::status_code(status), &message, device_token, answer.retry_after);
    };
    let message = format!("APNs refused the push ({status}): {reason}");
    let kind = match (status.as_u16(), reason) {
        (410, "Unregistered" | "ExpiredToken") | (400, "BadDeviceToken") => {
            return SendFailure {
                retry_after: None,
                ..SendFailure::gone(reason, http::without_address(&message, device_token))
            };
        }
        (400, "DeviceTokenNotForTopic") if device_topic => {
            return SendFailure {
                retry_after: None,
                ..SendFailure::gone(reason, http::without_address(&message, device_token))
            };
        }
        // Refused twice, the second time with a token signed for the retry.
        (403, _) => FailureKind::Config,
        (429, "TooManyProviderTokenUpdates") => FailureKind::Config,
        (429, _) => FailureKind::Retryable,
        (500.., _) => FailureKind::Ambiguous,
        // The payload, a header, the path: this request will never be taken.
        _ => FailureKind::Permanent,
    };
    http::failure(kind, reason, &message, device_token, answer.retry_after)
}

#[cfg(test)]
mod tests {
    use domain::Content;
    use uuid::Uuid;

    use super::*;

    /// A P-256 key in the `.p8` form, generated for the test.
    pub(crate) fn p8() -> String {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        use base64::Engine;
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    fn signer() -> Signer {
        Signer::new(&p8(), "KEY1234567".into(), "TEAM123456".into()).unwrap()
    }

    #[test]
    fn the_token_is_reused_until_its_lifetime_then_signed_anew() {
        let (signer, cache, start) = (signer(), TokenCache::default(), Instant::now());
        let first = cache.get(&signer, start, None).unwrap();
        let later = cache.get(&signer, start + Duration::from_secs(49 * 60), None).unwrap();
        assert_eq!(first.authorization, later.authorization);
        assert_eq!(later.signed_at, start);
        let renewed = cache.get(&signer, start + TOKEN_LIFETIME, None).unwrap();
        assert_eq!(renewed.signed_at, start + TOKEN_LIFETIME);
    }

    #[test]
    fn a_rejected_token_is_replaced_once_for_all_who_saw_it() {
        let (signer, cache, start) = (signer(), TokenCache::default(), Instant::now());
        let first = cache.get(&signer, start, None).unwrap();
        let second = cache.get(&signer, start + Duration::from_secs(1), Some(&first.authorization)).unwrap();
        assert_eq!(second.signed_at, start + Duration::from_secs(1));
        // Another send refused with the first token finds the second, and keeps it.
        let third = cache.get(&signer, start + Duration::from_secs(2), Some(&first.authorization)).unwrap();
        assert_eq!(third.signed_at, second.signed_at);
    }

    fn job(priority: Priority, content: Content) -> DeliveryJob {
        DeliveryJob {
            delivery_id: Uuid::now_v7(),
            notification_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            channel: Channel::Push,
            attempt: 1,
            retry_base: 0,
            recipient: "phone".into(),
            kind: "order.shipped".into(),
            priority,
            content,
            data: Map::new(),
            workflow: None,
            retry: None,
            device: None,
        }
    }

    #[test]
    fn priorities_map_to_10_or_5() {
        assert_eq!(priority(Priority::Urgent, "alert"), "10");
        assert_eq!(priority(Priority::High, "alert"), "10");
        assert_eq!(priority(Priority::Normal, "alert"), "10");
        assert_eq!(priority(Priority::Low, "alert"), "5");
        assert_eq!(priority(Priority::Urgent, "background"), "5");
    }

    #[test]
    fn the_payload_holds_the_alert_and_the_apps_keys() {
        let content = Content {
            title: Some("Shipped".into()),
            body: Some("Your order is on its way".into()),
            image: Some("https://cdn.example.com/a.png".into()),
            sound: Some("default".into()),
            badge: Some(3),
            action_url: Some("https://example.com/o/1".into()),
            data: Some([("order".to_owned(), "1".to_owned())].into()),
            ..Default::default()
        };
        let body = payload(&job(Priority::Normal, content.clone()), "alert");
        assert_eq!(
            body,
            json!({
                "aps": {"alert": {"title": "Shipped", "body": "Your order is on its way"}, "sound": "default",
                        "badge": 3, "mutable-content": 1},
                "action_url": "https://example.com/o/1",
                "image": "https://cdn.example.com/a.png",
                "data": {"order": "1"},
            })
        );
        let background = payload(&job(Priority::Normal, content), "background");
        assert_eq!(background["aps"], json!({"content-available": 1, "badge": 3}));
    }

    #[test]
    fn device_tokens_and_topics_are_checked() {
        assert!(is_device_token(&"ab".repeat(32)));
        assert!(!is_device_token("abc"));
        assert!(!is_device_token(&format!("{}/x", "ab".repeat(32))));
        assert!(is_topic("com.example.app.voip"));
        assert!(!is_topic("com.example app"));
        assert!(!is_topic(""));
    }

    #[test]
    fn a_pem_in_one_line_gets_its_line_breaks_back() {
        let key = p8();
        assert_eq!(pem(&key.replace('\n', "\\n")).trim(), key.trim());
        assert!(Signer::new(&pem(&key.replace('\n', "\\n")), "KEY1234567".into(), "TEAM123456".into()).is_ok());
    }
}
