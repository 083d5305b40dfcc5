//! Web Push (docs/providers.md §14): a browser's push subscription is the device's token,
//! `{"endpoint", "keys": {"p256dh", "auth"}}`. The message is `POST {endpoint}` with the
//! JSON of the push encrypted for the browser (RFC 8291: `aes128gcm`, one record of RFC
//! 8188) and signed for the push service with our VAPID key (RFC 8292: an ES256 JWT whose
//! `aud` is the endpoint's origin, and the public key as `k`).
//!
//! The crypto is aws-lc-rs's: an ephemeral P-256 key per message (ECDH with `p256dh`),
//! HKDF-SHA256, AES-128-GCM. The endpoint came from a browser, so it is never trusted: the
//! client is always the resolver-guarded one of tenants' integrations, for the operator's
//! provider too, and the endpoint is kept out of every stored message (it is a capability
//! URL: whoever holds it can push to the browser, given the keys).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey},
    error::Unspecified,
    hkdf::{self, HKDF_SHA256},
    rand::{SecureRandom, SystemRandom},
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{
    Channel, DeliveryJob, FailureKind, Priority, Provider, SendFailure, SendOutcome, SendReceipt, push::Platform,
};
use futures_util::{FutureExt, future::BoxFuture};
use reqwest::{
    Url,
    header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, LOCATION},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{collapse_id, device_of, is_urgent, no_device};
use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    http::{self, Client},
    settings::{self, Refused},
};

pub const NAME: &str = "webpush";

/// The `webpush` unit: `[push.webpush]`, or a tenant's integration.
pub struct WebpushUnit;

pub const UNIT: WebpushUnit = WebpushUnit;

/// How long a push service keeps a message for an offline browser, unless set.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Push services keep a message at most four weeks (FCM's limit; others cap lower).
const MAX_TTL: Duration = Duration::from_secs(28 * 24 * 60 * 60);

/// The record size we declare (RFC 8188 `rs`): the whole message is one record.
const RECORD_SIZE: u32 = 4096;
/// The header of an `aes128gcm` body: salt (16), rs (4), idlen (1), keyid (65).
const HEADER_LEN: usize = 16 + 4 + 1 + 65;
const TAG_LEN: usize = 16;
/// The largest plaintext one 4096-byte body carries (RFC 8291 §4): 4096 − 86 − 16 − 1
/// (the last record's delimiter).
pub const MAX_PLAINTEXT: usize = 4096 - HEADER_LEN - TAG_LEN - 1;

/// A VAPID token's lifetime (RFC 8292 allows at most 24 hours) and how long before its
/// end a new one is signed.
const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
const VAPID_RENEW_BEFORE: Duration = Duration::from_secs(60 * 60);
/// Tokens kept, one per push service origin: a handful in practice.
const MAX_CACHED_TOKENS: usize = 256;

const NO_BASE_URL: &str = "the endpoint is each device's subscription";
const REFUSED: Refused<'static> = Refused {
    config: &[("base_url", NO_BASE_URL)],
    integration: &[("base_url", NO_BASE_URL), ("ca_cert", "a tenant's client trusts the public roots")],
};

/// `[push.webpush]`, and a tenant's integration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebpushConfig {
    /// The VAPID private key: a P-256 scalar as base64url (32 bytes, as `web-push
    /// generate-vapid-keys` prints it), or a PEM (PKCS#8 or SEC1 `EC PRIVATE KEY`).
    vapid_private_key: Option<SecretString>,
    /// Who to contact about our pushes (`mailto:` or `https:`), the JWT's `sub`.
    subject: Option<String>,
    /// How long the push service keeps a message for an offline browser (`TTL`).
    #[serde(with = "humantime_serde")]
    ttl: Option<Duration>,
}

impl ProviderUnit for WebpushUnit {
    fn channel(&self) -> Channel {
        Channel::Push
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn secrets(&self) -> &'static [&'static str] {
        &["vapid_private_key"]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let (config, section) = settings::read::<WebpushConfig>(&source, Channel::Push, NAME, &REFUSED)?;
        let allow_private_hosts = settings::rules(&source)?.allow_private_hosts;
        let key = section.required_secret(&config.vapid_private_key, "vapid_private_key")?;
        let key =
            VapidKey::parse(key.expose_secret()).map_err(|message| section.invalid("vapid_private_key", message))?;
        let subject = section.required(&config.subject, "subject")?;
        if !is_contact(subject) {
            return Err(section.invalid(
                "subject",
                "must be a `mailto:` or `https:` URL where the sender can be reached (not `localhost` or `.invalid`)",
            ));
        }
        let ttl = config.ttl.unwrap_or(DEFAULT_TTL);
        if ttl > MAX_TTL {
            return Err(section.invalid("ttl", "must be at most 28 days (push services keep a message no longer)"));
        }
        Ok(Box::new(WebpushSettings { key: Arc::new(key), subject: subject.to_owned(), ttl, allow_private_hosts }))
    }
}

/// VAPID's `sub`: a `mailto:` address or an `https:` URL (RFC 8292 §2.1) on a host that
/// can be a contact: Apple's push service refuses `localhost` or an `.invalid` domain
/// (403 `BadJwtToken`) while others take it, so such a key would fail Safari only.
fn is_contact(subject: &str) -> bool {
    let host = match subject.strip_prefix("mailto:") {
        Some(address) => address.rsplit_once('@').map(|(_, domain)| domain.to_owned()),
        None => {
            Url::parse(subject).ok().filter(|u| u.scheme() == "https").and_then(|u| u.host_str().map(str::to_owned))
        }
    };
    let Some(host) = host.map(|h| h.trim_end_matches('.').to_ascii_lowercase()) else { return false };
    !host.is_empty()
        && host != "localhost"
        && ![".localhost", ".invalid", ".local"].iter().any(|suffix| host.ends_with(suffix))
}

/// The VAPID key pair. Its public key is the `applicationServerKey` the browser subscribed
/// with; a subscription made with another key is refused by its push service (403).
pub struct VapidKey {
    /// The private key as ES256 signs with it.
    encoding: jsonwebtoken::EncodingKey,
    /// The public key, base64url of the uncompressed point: VAPID's `k`.
    public: String,
    /// A hash of the private key: its tokens' key in [`TOKENS`].
    identity: String,
}

/// Signed VAPID tokens by key and subject, then by audience, with when they expire: shared
/// by every provider of the key in the process, rebuilt ones too.
static TOKENS: super::Registry<Mutex<HashMap<String, (String, Instant)>>> = super::Registry::new();

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey").field("public", &self.public).finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A base64url (or base64) 32-byte scalar, or a PEM.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let pair = if text.starts_with("-----BEGIN") {
            let body: String =
                text.lines().map(str::trim).filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().concat();
            let der = STANDARD.decode(body).map_err(|_| "is a PEM whose body is not base64".to_owned())?;
            EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map_err(|e| format!("is not a P-256 private key: {e}"))?
        } else {
            let scalar = decode_b64(text).ok_or("is neither a PEM nor base64url")?;
            if scalar.len() != 32 {
                return Err(format!("must be a 32-byte P-256 private key, not {} bytes", scalar.len()));
            }
            let not_a_key = || "is not a P-256 private key".to_owned();
            let private = PrivateKey::from_private_key(&ECDH_P256, &scalar).map_err(|_| not_a_key())?;
            let public = private.compute_public_key().map_err(|_| not_a_key())?;
            EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &scalar, public.as_ref())
                .map_err(|e| format!("is not a P-256 private key: {e}"))?
        };
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| "could not be encoded".to_owned())?;
        Ok(Self {
            identity: super::identity(&[pkcs8.as_ref()]),
            encoding: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            public: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        })
    }

    /// The public key, base64url: what the web app passes to `pushManager.subscribe`.
    pub fn public_key(&self) -> &str {
        &self.public
    }
}

#[derive(Debug)]
pub struct WebpushSettings {
    key: Arc<VapidKey>,
    subject: String,
    ttl: Duration,
    allow_private_hosts: bool,
}

impl ProviderSettings for WebpushSettings {
    /// Always a guarded client ([`http::tenant_client`]): the endpoint is the browser's. The
    /// context's, with its connection pool, when it is the tenants' client under the same
    /// rule; a client of its own only for the operator's provider (whose context carries
    /// the unguarded client).
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn Provider>>> {
        async move {
            let http = if ctx.http.tenants() == Some(self.allow_private_hosts) {
                ctx.http.get()?
            } else {
                http::tenant_client(ctx.provider_timeout, self.allow_private_hosts)?
            };
            let provider = WebpushProvider {
                http,
                key: self.key.clone(),
                subject: self.subject.clone(),
                ttl: self.ttl,
                allow_private_hosts: self.allow_private_hosts,
                tokens: TOKENS.get(&super::identity(&[self.key.identity.as_bytes(), self.subject.as_bytes()])),
            };
            Ok(Arc::new(provider) as Arc<dyn Provider>)
        }
        .boxed()
    }

    /// Nothing to send: the key was read, and its public key is what the web app needs.
    fn check<'a>(&'a self, _ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        let detail = format!(
            "the VAPID key is valid; its public key (the web app's applicationServerKey) is {}",
            self.key.public
        );
        futures_util::future::ready(Checked { ok: true, status: None, code: None, detail }).boxed()
    }
}

pub struct WebpushProvider {
    http: Client,
    key: Arc<VapidKey>,
    subject: String,
    ttl: Duration,
    allow_private_hosts: bool,
    /// Signed VAPID tokens by audience, with when they expire: the key's and subject's,
    /// shared in the process ([`TOKENS`]).
    tokens: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

/// A browser's subscription, as `PushSubscription.toJSON()` gives it.
#[derive(Deserialize)]
struct Subscription {
    endpoint: String,
    keys: SubscriptionKeys,
}

#[derive(Deserialize)]
struct SubscriptionKeys {
    p256dh: String,
    auth: String,
}

/// A subscription ready to push to.
struct Target {
    endpoint: Url,
    /// The browser's public key, an uncompressed P-256 point.
    p256dh: Vec<u8>,
    auth: Vec<u8>,
}

/// The device's token as a subscription: a JSON object, or a JSON string holding one.
fn target(token: &str, allow_private_hosts: bool) -> Result<Target, String> {
    let value: Value = serde_json::from_str(token).map_err(|_| "the subscription is not JSON")?;
    let value = match value {
        Value::String(inner) => serde_json::from_str(&inner).map_err(|_| "the subscription is not JSON")?,
        value => value,
    };
    let subscription: Subscription =
        serde_json::from_value(value).map_err(|_| "the subscription lacks `endpoint`, `keys.p256dh` or `keys.auth`")?;
    let endpoint = Url::parse(subscription.endpoint.trim()).map_err(|_| "the endpoint is not a URL")?;
    let https = endpoint.scheme() == "https" || (allow_private_hosts && endpoint.scheme() == "http");
    if !https || endpoint.host_str().is_none() || !endpoint.username().is_empty() || endpoint.password().is_some() {
        return Err("the endpoint must be an https URL with a host and no user info".into());
    }
    if !allow_private_hosts {
        // A literal address never reaches the guarded resolver: it is checked here.
        let host = endpoint.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let private = match host.parse::<IpAddr>() {
            Ok(ip) => settings::is_private(ip),
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        };
        if private {
            return Err("the endpoint names a private or loopback address".into());
        }
    }
    let p256dh = decode_b64(&subscription.keys.p256dh)
        .filter(|k| k.len() == 65 && k[0] == 4)
        .ok_or("`keys.p256dh` is not a base64url uncompressed P-256 point")?;
    let auth = decode_b64(&subscription.keys.auth)
        .filter(|a| a.len() == 16)
        .ok_or("`keys.auth` is not 16 bytes of base64url")?;
    Ok(Target { endpoint, p256dh, auth })
}

/// base64url or standard base64, padded or not (browsers print unpadded base64url).
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=').replace('+', "-").replace('/', "_");
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// What the service worker's `push` event reads as `event.data.json()`.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    badge: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sound: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a std::collections::BTreeMap<String, String>>,
    notification_id: String,
    delivery_id: String,
}

/// The push's JSON, as the browser decrypts it.
pub fn payload(job: &DeliveryJob) -> Vec<u8> {
    let c = &job.content;
    let payload = Payload {
        title: c.title.as_deref(),
        body: c.body.as_deref(),
        image: c.image.as_deref(),
        action_url: c.action_url.as_deref(),
        badge: c.badge,
        sound: c.sound.as_deref(),
        data: c.data.as_ref(),
        notification_id: job.notification_id.to_string(),
        delivery_id: job.delivery_id.to_string(),
    };
    serde_json::to_vec(&payload).expect("a payload of strings serializes")
}

/// RFC 8030 `Urgency` from the notification's priority.
fn urgency(priority: Priority) -> &'static str {
    match priority {
        p if is_urgent(p) => "high",
        Priority::Low => "low",
        _ => "normal",
    }
}

/// VAPID's `aud`: the endpoint's origin, with its port when it is not the scheme's default.
pub fn audience(endpoint: &Url) -> String {
    endpoint.origin().ascii_serialization()
}

/// Encrypts `plaintext` for the subscription's keys (RFC 8291) with a fresh key and salt:
/// the whole `aes128gcm` body.
pub fn encrypt(p256dh: &[u8], auth: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Unspecified> {
    let mut salt = [0u8; 16];
    SystemRandom::new().fill(&mut salt)?;
    let ephemeral = PrivateKey::generate(&ECDH_P256)?;
    encrypt_with(&ephemeral, &salt, p256dh, auth, plaintext)
}

/// [`encrypt`] with the application server's key pair and salt given (RFC 8291 appendix A
/// checks it).
fn encrypt_with(
    as_private: &PrivateKey,
    salt: &[u8; 16],
    ua_public: &[u8],
    auth: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Unspecified> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(Unspecified);
    }
    let as_public = as_private.compute_public_key()?;
    let as_public = as_public.as_ref();
    let peer = UnparsedPublicKey::new(&ECDH_P256, ua_public);
    let ecdh_secret = agreement::agree(as_private, peer, Unspecified, |secret| Ok(secret.to_vec()))?;
    // IKM = HKDF(salt = auth, ikm = ecdh_secret, info = "WebPush: info\0" ‖ ua ‖ as, 32).
    let key_info = [b"WebPush: info\0".as_slice(), ua_public, as_public].concat();
    let ikm: [u8; 32] = expand(&hkdf::Salt::new(HKDF_SHA256, auth).extract(&ecdh_secret), &key_info)?;
    // RFC 8188: PRK = HKDF-Extract(salt, IKM); CEK and NONCE expanded from it.
    let prk = hkdf::Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let cek: [u8; 16] = expand(&prk, b"Content-Encoding: aes128gcm\0")?;
    let nonce: [u8; 12] = expand(&prk, b"Content-Encoding: nonce\0")?;

    let mut body = Vec::with_capacity(HEADER_LEN + plaintext.len() + 1 + TAG_LEN);
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(u8::try_from(as_public.len()).map_err(|_| Unspecified)?);
    body.extend_from_slice(as_public);
    // One record, the last: the plaintext, then the delimiter 0x02 (no padding).
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    record.push(2);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek)?);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut record)?;
    body.extend_from_slice(&record);
    Ok(body)
}

/// HKDF-Expand to `N` bytes.
fn expand<const N: usize>(prk: &hkdf::Prk, info: &[u8]) -> Result<[u8; N], Unspecified> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let mut out = [0u8; N];
    prk.expand(&[info], Len(N))?.fill(&mut out)?;
    Ok(out)
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl WebpushProvider {
    /// The VAPID token for `aud`, signed again an hour before it expires.
    fn token(&self, aud: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, expires)) = tokens.get(aud)
            && expires.saturating_duration_since(now) > VAPID_RENEW_BEFORE
        {
            return Ok(token.clone());
        }
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + VAPID_LIFETIME;
        let claims = Claims { aud, exp: exp.as_secs(), sub: &self.subject };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let token = jsonwebtoken::encode(&header, &claims, &self.key.encoding)?;
        if tokens.len() >= MAX_CACHED_TOKENS {
            tokens.clear();
        }
        tokens.insert(aud.to_owned(), (token.clone(), now + VAPID_LIFETIME));
        Ok(token)
    }

    async fn deliver(&self, job: &DeliveryJob) -> SendOutcome {
        let Some(device) = device_of(job, Platform::Webpush) else {
            return SendOutcome::Failed(no_device(Platform::Webpush));
        };
        // The token is a secret as a whole: no message quotes it or its endpoint.
        let secret = device.token.as_str();
        let target = match target(secret, self.allow_private_hosts) {
            Ok(target) => target,
            Err(message) => return failed(FailureKind::Permanent, "invalid_subscription", &message, secret, None),
        };
        let plaintext = payload(job);
        if plaintext.len() > MAX_PLAINTEXT {
            let message = format!("the push is {} bytes of JSON, over Web Push's {MAX_PLAINTEXT}", plaintext.len());
            return failed(FailureKind::Permanent, "payload_too_large", &message, secret, None);
        }
        let body = match encrypt(&target.p256dh, &target.auth, &plaintext) {
            Ok(body) => body,
            Err(_) => {
                let message = "the subscription's p256dh is not a point of P-256";
                return failed(FailureKind::Permanent, "invalid_subscription", message, secret, None);
            }
        };
        let aud = audience(&target.endpoint);
        let jwt = match self.token(&aud) {
            Ok(jwt) => jwt,
            Err(e) => {
                let message = format!("the VAPID token could not be signed: {e}");
                return failed(FailureKind::Config, "vapid", &message, secret, None);
            }
        };
        let Ok(mut authorization) = HeaderValue::try_from(format!("vapid t={jwt}, k={}", self.key.public)) else {
            return failed(FailureKind::Config, "vapid", "the VAPID header is not a header", secret, None);
        };
        authorization.set_sensitive(true);
        let endpoint = target.endpoint.as_str().to_owned();
        let endpoint_url = target.endpoint.clone();
        let request = self
            .http
            .post(target.endpoint)
            .header(AUTHORIZATION, authorization)
            .header("TTL", self.ttl.as_secs().to_string())
            .header("Urgency", urgency(job.priority))
            .header("Topic", collapse_id(job))
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return transport(http::transport_failure(&e), secret, &endpoint),
        };
        let status = response.status();
        let retry_after = http::retry_after(response.headers());
        let location = response.headers().get(LOCATION).and_then(|l| l.to_str().ok()).map(str::to_owned);
        if status.is_success() {
            // The message is queued; its resource names it (`Location`), else our id does.
            let provider_message_id =
                message_id(location.as_deref(), &endpoint_url).unwrap_or_else(|| job.delivery_id.to_string());
            return SendOutcome::Sent(SendReceipt {
                provider_message_id,
                response_excerpt: Some(format!("status={}", status.as_u16())),
            });
        }
        let text = response.bytes().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        outcome(status, &text, retry_after, secret, &endpoint)
    }
}

/// The provider message id `Location` gives, when it can be kept: the push service
/// controls it, and may quote the subscription's path (a capability). Only a `Location`
/// on the endpoint's origin is read, and only its last path segment is kept, unless that
/// holds a part of the endpoint's path; `None`: the delivery id names the message.
fn message_id(location: Option<&str>, endpoint: &Url) -> Option<String> {
    let url = endpoint.join(location?.trim()).ok()?;
    if url.origin() != endpoint.origin() {
        return None;
    }
    let last = url.path_segments()?.rfind(|s| !s.is_empty())?;
    let quotes_endpoint = endpoint
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|part| part.len() >= 8 || part.len() >= last.len())
        .any(|part| last.contains(part) || part.contains(last));
    let plain = last.len() <= 256 && last.chars().all(|c| c.is_ascii_graphic());
    (plain && !quotes_endpoint).then(|| last.to_owned())
}

/// Error codes push services document (Apple's `reason`s), kept in a stored message; any
/// other text of the answer is the push service's, and is not kept.
const KNOWN_REASONS: &[&str] = &[
    "BadJwtToken",
    "BadWebPushTopic",
    "BadDeviceToken",
    "BadExpirationDate",
    "BadPriority",
    "ExpiredJwtToken",
    "ExpiredSubscription",
    "InvalidToken",
    "MissingTopic",
    "PayloadEmpty",
    "PayloadTooLarge",
    "TooManyRequests",
    "Unregistered",
    "VapidPkHashMismatch",
    "InternalServerError",
    "ServiceUnavailable",
];

/// The known error code of a push service's answer: Apple's `reason` when it is one of
/// [`KNOWN_REASONS`], autopush's `errno` (a number).
fn known_code(text: &str) -> Option<String> {
    let body = serde_json::from_str::<Map<String, Value>>(text).ok()?;
    if let Some(reason) = body.get("reason").and_then(Value::as_str)
        && let Some(known) = KNOWN_REASONS.iter().find(|k| **k == reason)
    {
        return Some((*known).to_owned());
    }
    body.get("errno").and_then(Value::as_u64).map(|errno| format!("errno {errno}"))
}

/// A failure for the attempts log, without the subscription or its endpoint.
fn failed(kind: FailureKind, code: &str, message: &str, token: &str, retry_after: Option<Duration>) -> SendOutcome {
    SendOutcome::Failed(http::failure(kind, code, message, token, retry_after))
}

/// A failure of the HTTP stack. A name resolving to a private address is the
/// subscription's fault, not our configuration's: it fails this message only, and never
/// pauses the provider for every other browser.
fn transport(failure: SendFailure, token: &str, endpoint: &str) -> SendOutcome {
    let message = crate::chat::redact(&http::without_address(&failure.message, token), endpoint);
    let kind = if failure.code == "private_host" { FailureKind::Permanent } else { failure.kind };
    SendOutcome::Failed(SendFailure { kind, message, ..failure })
}

/// The push service's refusal (RFC 8030 §5, §7, §8; autopush answers JSON with `errno`,
/// Apple with `reason`, FCM plain text): its status and known code only.
fn outcome(
    status: reqwest::StatusCode,
    text: &str,
    retry_after: Option<Duration>,
    token: &str,
    endpoint: &str,
) -> SendOutcome {
    let code = format!("webpush_{}", status.as_u16());
    // The status and a known code only: the rest of the body is the push service's text,
    // which may quote the subscription or say anything its operator likes.
    let said = known_code(text).map(|code| format!(" ({code})")).unwrap_or_default();
    let message = crate::chat::redact(&format!("the push service answered {status}{said}"), endpoint);
    if matches!(status.as_u16(), 404 | 410) {
        // The browser unsubscribed, or the subscription expired: the device is removed.
        let failure = http::failure(FailureKind::Permanent, code, &message, token, None);
        return SendOutcome::Failed(SendFailure::gone(failure.code, failure.message));
    }
    let kind = match status.as_u16() {
        429 => FailureKind::Retryable,
        500.. => FailureKind::Ambiguous,
        // The VAPID token was refused for this one subscription: typically one made with an
        // earlier applicationServerKey, or an endpoint whoever registered it controls. It
        // fails this message only; pausing the provider would stop every other browser.
        // (A key we cannot sign with is found locally, and is `Config`.)
        401 | 403 => FailureKind::Permanent,
        // 400 (headers or encryption), 413 (too large), and a redirect or any other answer
        // of this one endpoint.
        _ => FailureKind::Permanent,
    };
    failed(kind, &code, &message, token, retry_after)
}

impl Provider for WebpushProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn serves(&self, job: &DeliveryJob) -> bool {
        device_of(job, Platform::Webpush).is_some()
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.deliver(job).boxed()
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::{AsBigEndian, AsDer};
    use serde_json::json;

    use super::*;

    /// A subscription's JSON, as a browser gives it.
    fn subscription_json(endpoint: &str, p256dh: &[u8], auth: &[u8]) -> String {
        let keys = json!({"p256dh": URL_SAFE_NO_PAD.encode(p256dh), "auth": URL_SAFE_NO_PAD.encode(auth)});
        json!({"endpoint": endpoint, "keys": keys}).to_string()
    }

    fn b64(text: &str) -> Vec<u8> {
        decode_b64(text).unwrap()
    }

    /// RFC 8291 appendix A: the application server's key and salt fixed, the body is the RFC's.
    #[test]
    fn the_rfc_8291_example_encrypts_to_the_rfc_body() {
        let as_private =
            PrivateKey::from_private_key(&ECDH_P256, &b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let ua_public = b64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4");
        let auth = b64("BTBZMqHH6r4Tts7J_aSIgg");
        let body =
            encrypt_with(&as_private, &salt, &ua_public, &auth, b"When I grow up, I want to be a watermelon").unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn the_audience_is_the_origin_with_a_port_only_when_not_the_default() {
        let aud = |u: &str| audience(&Url::parse(u).unwrap());
        assert_eq!(aud("https://fcm.googleapis.com/fcm/send/abc"), "https://fcm.googleapis.com");
        assert_eq!(aud("https://push.example:443/x"), "https://push.example");
        assert_eq!(aud("https://push.example:8443/x"), "https://push.example:8443");
        assert_eq!(aud("http://127.0.0.1:9000/wpush/1"), "http://127.0.0.1:9000");
    }

    #[test]
    fn urgency_follows_priority() {
        assert_eq!(urgency(Priority::Urgent), "high");
        assert_eq!(urgency(Priority::High), "high");
        assert_eq!(urgency(Priority::Normal), "normal");
        assert_eq!(urgency(Priority::Low), "low");
    }

    #[test]
    fn subscriptions_are_checked_before_sending() {
        let p256dh = [vec![4u8], vec![7; 64]].concat();
        let ok = subscription_json("https://push.example/s/1", &p256dh, &[1; 16]);
        assert!(target(&ok, false).is_ok());
        // A JSON string holding the subscription.
        assert!(target(&Value::String(ok.clone()).to_string(), false).is_ok());
        for bad in [
            "not json".to_owned(),
            json!({"endpoint": "https://push.example/s/1"}).to_string(),
            subscription_json("http://push.example/s/1", &p256dh, &[1; 16]),
            subscription_json("https://127.0.0.1/s/1", &p256dh, &[1; 16]),
            subscription_json("https://localhost/s/1", &p256dh, &[1; 16]),
            subscription_json("https://[::1]/s/1", &p256dh, &[1; 16]),
            subscription_json("https://LocalHost./s/1", &p256dh, &[1; 16]),
            subscription_json("https://[::ffff:10.0.0.1]/s/1", &p256dh, &[1; 16]),
            subscription_json("https://user:pw@push.example/s/1", &p256dh, &[1; 16]),
            subscription_json("https://push.example/s/1", &p256dh[..64], &[1; 16]),
            subscription_json("https://push.example/s/1", &p256dh, &[1; 15]),
        ] {
            assert!(target(&bad, false).is_err(), "{bad}");
        }
        assert!(target(&subscription_json("http://127.0.0.1:9/s", &p256dh, &[1; 16]), true).is_ok());
    }

    #[test]
    fn a_name_resolving_to_a_private_address_fails_the_message_not_the_provider() {
        let endpoint = "https://push.example/s/sUbScRiPtIoN-0123456789";
        let private = SendFailure::new(FailureKind::Config, "private_host", format!("no: {endpoint}"));
        let SendOutcome::Failed(failure) = transport(private, "{}", endpoint) else { panic!("a failure") };
        assert_eq!((failure.kind, failure.code.as_str()), (FailureKind::Permanent, "private_host"));
        assert!(!failure.message.contains("sUbScRiPtIoN"), "{failure:?}");
        let refused = SendFailure::new(FailureKind::Retryable, "connect", "refused");
        let SendOutcome::Failed(failure) = transport(refused, "{}", endpoint) else { panic!("a failure") };
        assert_eq!(failure.kind, FailureKind::Retryable);
    }

    #[test]
    fn only_a_location_on_the_endpoints_origin_gives_its_last_segment() {
        let endpoint = Url::parse("https://push.example/wpush/v2/sUbScRiPtIoN-0123456789").unwrap();
        let id = |l: &str| message_id(Some(l), &endpoint);
        assert_eq!(id("/m/msg-1").as_deref(), Some("msg-1"));
        assert_eq!(id("https://push.example/m/gAAAAABmsg").as_deref(), Some("gAAAAABmsg"));
        assert_eq!(id("https://other.example/m/msg-1"), None);
        assert_eq!(id("/wpush/v2/sUbScRiPtIoN-0123456789"), None);
        assert_eq!(id("/m/sUbScRiPtIoN-0123456789:1"), None);
        assert_eq!(id("/"), None);
        assert_eq!(message_id(None, &endpoint), None);
    }

    #[test]
    fn only_known_codes_of_an_answer_are_kept() {
        assert_eq!(known_code(r#"{"reason": "VapidPkHashMismatch"}"#).as_deref(), Some("VapidPkHashMismatch"));
        assert_eq!(known_code(r#"{"reason": "see https://evil.example"}"#), None);
        assert_eq!(known_code(r#"{"errno": 106, "message": "x"}"#).as_deref(), Some("errno 106"));
        assert_eq!(known_code("plain text"), None);
    }

    #[test]
    fn vapid_keys_are_read_as_a_scalar_or_a_pem() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let pem =
            format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", STANDARD.encode(pkcs8.as_ref()));
        assert_eq!(VapidKey::parse(&pem).unwrap().public_key(), public);
        let sec1 = AsDer::<aws_lc_rs::encoding::EcPrivateKeyRfc5915Der<'_>>::as_der(&pair.private_key()).unwrap();
        let pem =
            format!("-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----", STANDARD.encode(sec1.as_ref()));
        assert_eq!(VapidKey::parse(&pem).unwrap().public_key(), public);
        let scalar = AsBigEndian::<aws_lc_rs::encoding::EcPrivateKeyBin<'_>>::as_be_bytes(&pair.private_key()).unwrap();
        assert_eq!(VapidKey::parse(&URL_SAFE_NO_PAD.encode(scalar.as_ref())).unwrap().public_key(), public);
        for bad in [
            "",
            "abc",
            "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----",
            &URL_SAFE_NO_PAD.encode([0u8; 31]),
        ] {
            assert!(VapidKey::parse(bad).is_err(), "{bad}");
        }
    }
}
