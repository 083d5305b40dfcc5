//! Firebase Cloud Messaging HTTP v1 (docs/providers.md §12): one
//! `POST {base_url}/v1/projects/{project_id}/messages:send` per device, with an OAuth2
//! access token the service account's JSON grants.
//!
//! The token comes from the JWT-bearer grant: an RS256 assertion signed with the JSON's
//! `private_key` (`kid` = `private_key_id`; `iss` = `client_email`, `scope` = FCM's,
//! `aud` = the token URI, one hour), posted to the token URI. The provider keeps it until
//! five minutes before `expires_in` ends, in a cache of the process keyed by the account
//! (email, key id, token URI, key), so a provider rebuilt from the same settings keeps it;
//! concurrent sends wait for one refresh rather than
//! each asking for a token (the lock is held across the grant), and share its failure. A 401 from FCM drops the
//! token it was sent with and the send is retried once with a fresh one; a second 401 is
//! `Config`.
//!
//! A tenant's client calls Google (or the operator's stand-in, `integrations.base_urls.fcm`,
//! whose token URI is `integrations.base_urls.fcm_token`, else `<that>/token`): the token
//! URI of a tenant's JSON is not followed, as a tenant chooses no address we call.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{
    Channel, DeliveryJob, FailureKind, Priority, Provider, SendFailure, SendOutcome, SendReceipt,
    push::{Platform, PushDevice},
};
use futures_util::{FutureExt, future::BoxFuture};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{
    StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{collapse_id, device_of, is_urgent, no_device};
use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    http::{self, Answer, Client},
    settings::{self, Refused, Section},
};

pub const NAME: &str = "fcm";
pub const DEFAULT_BASE_URL: &str = "https://fcm.googleapis.com";
/// Google's token endpoint, as service-account JSONs name it.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The one scope the access token is asked for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How long a message waits for an offline device, unless `ttl` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// FCM's longest `android.ttl`: four weeks.
pub const MAX_TTL: Duration = Duration::from_secs(28 * 24 * 3600);
/// A token is refreshed this long before Google says it expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The assertion's lifetime: Google accepts at most an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// FCM asks that a quota error be retried after at least a minute.
const QUOTA_DELAY: Duration = Duration::from_secs(60);
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";

/// The `fcm` unit: `[push.fcm]`, or a tenant's integration.
pub struct FcmUnit;

pub const UNIT: FcmUnit = FcmUnit;

const REFUSED: Refused<'static> = Refused {
    config: &[],
    integration: &[
        ("base_url", "a tenant's client calls FCM's API"),
        ("token_uri", "a tenant's client asks Google's token endpoint"),
    ],
};

/// `[push.fcm]`, and a tenant's integration but for `base_url` and `token_uri`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FcmConfig {
    /// The service account's JSON key file, as a string (or, written out, an object).
    #[serde(deserialize_with = "json_text")]
    service_account: Option<SecretString>,
    /// Replaces the JSON's `token_uri` (a stand-in); the operator's only.
    token_uri: Option<String>,
    /// FCM's API, `https://fcm.googleapis.com`; the operator's only.
    base_url: Option<String>,
    /// How long FCM keeps a message for an offline device (at most 28 days).
    #[serde(with = "humantime_serde")]
    ttl: Option<Duration>,
}

/// serde: JSON given as a string, or as the object itself (a TOML table, a tenant's JSON
/// body), kept as its text in a secret so that it never prints.
fn json_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Text(String),
        Object(Map<String, Value>),
    }
    match Option::<Form>::deserialize(deserializer) {
        Ok(form) => Ok(form.map(|form| match form {
            Form::Text(text) => SecretString::from(text),
            Form::Object(object) => SecretString::from(Value::Object(object).to_string()),
        })),
        Err(_) => {
            Err(serde::de::Error::custom("must be the service account's JSON key file, as a string or an object"))
        }
    }
}

/// The fields of a service-account JSON the grant needs (the file has more).
#[derive(Deserialize)]
struct ServiceAccountJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    token_uri: Option<String>,
}

/// The access tokens of every service account, shared by the providers built from it.
static TOKENS: super::Registry<tokio::sync::Mutex<TokenState>> = super::Registry::new();

/// A service account, read and checked: what a grant is made of.
struct Account {
    /// The account's key in [`TOKENS`]: its email, key id, token URI and key.
    identity: String,
    project_id: String,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    token_uri: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("key_id", &self.key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Account {
    /// Reads the JSON (`json`, the secret setting `key` of `section`), its token URI
    /// replaced by `token_uri` when given.
    fn read(json: &str, token_uri: Option<String>, section: &Section, key: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| section.invalid(key, message);
        // serde_json's messages name a position or a type, never the text they read.
        let parsed: ServiceAccountJson = serde_json::from_str(json.trim()).map_err(|e| {
            invalid(format!(
                "must be a service account's JSON key file as a string (line {}, column {}: {})",
                e.line(),
                e.column(),
                match e.classify() {
                    serde_json::error::Category::Data => "a field has the wrong type",
                    _ => "not JSON",
                }
            ))
        })?;
        if parsed.kind.as_deref().is_some_and(|k| k != "service_account") {
            return Err(invalid("must be a service account's key (its `type` is `service_account`)".into()));
        }
        let field = |value: &Option<String>, name: &str| {
            settings::given(value).map(str::to_owned).ok_or_else(|| invalid(format!("has no `{name}`")))
        };
        let project_id = field(&parsed.project_id, "project_id")?;
        settings::path_segment(&project_id, section, key)
            .map_err(|_| invalid("`project_id` may hold only letters, digits, `-`, `_` and `.`".into()))?;
        let client_email = field(&parsed.client_email, "client_email")?;
        let pem = field(&parsed.private_key, "private_key")?;
        let key_id = settings::given(&parsed.private_key_id).map(str::to_owned);
        let rsa = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|_| invalid("`private_key` is not an RSA private key in PEM".into()))?;
        let token_uri = match token_uri {
            Some(uri) => uri,
            None => match settings::given(&parsed.token_uri) {
                Some(uri) => settings::base_url(uri, section, key)
                    .map_err(|_| invalid("`token_uri` must be an http or https URL".into()))?,
                None => DEFAULT_TOKEN_URI.to_owned(),
            },
        };
        let identity = super::identity(&[
            client_email.as_bytes(),
            key_id.as_deref().unwrap_or_default().as_bytes(),
            token_uri.as_bytes(),
            pem.as_bytes(),
        ]);
        let account = Account { identity, project_id, client_email, key_id, key: rsa, token_uri };
        // A key that parses may still not sign (a truncated modulus): find out now.
        account.assertion().map_err(|_| invalid("`private_key` cannot sign an RS256 token".into()))?;
        Ok(account)
    }

    /// The signed JWT of the grant.
    fn assertion(&self) -> jsonwebtoken::errors::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        let iat = unix_now();
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

impl ProviderUnit for FcmUnit {
    fn channel(&self) -> Channel {
        Channel::Push
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn secrets(&self) -> &'static [&'static str] {
        &["service_account"]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let (config, section) = settings::read::<FcmConfig>(&source, Channel::Push, NAME, &REFUSED)?;
        let (base_url, token_uri) = match &source {
            Source::Integration(integration) => {
                let rules = integration.rules;
                let base_url = settings::integration_base_url(rules, NAME, DEFAULT_BASE_URL);
                let token_uri = match (rules.base_urls.get("fcm_token"), rules.base_urls.get(NAME)) {
                    (Some(uri), _) => uri.trim_end_matches('/').to_owned(),
                    (None, Some(_)) => format!("{base_url}/token"),
                    (None, None) => DEFAULT_TOKEN_URI.to_owned(),
                };
                (base_url, Some(token_uri))
            }
            Source::Config(_) => {
                let base_url = match settings::given(&config.base_url) {
                    Some(url) => settings::base_url(url, &section, "base_url")?,
                    None => DEFAULT_BASE_URL.to_owned(),
                };
                let token_uri = match settings::given(&config.token_uri) {
                    Some(uri) => Some(settings::base_url(uri, &section, "token_uri")?),
                    None => None,
                };
                (base_url, token_uri)
            }
        };
        let ttl = config.ttl.unwrap_or(DEFAULT_TTL);
        if ttl > MAX_TTL {
            return Err(section.invalid("ttl", "must be at most 28 days, FCM's longest"));
        }
        let json = section.required_secret(&config.service_account, "service_account")?;
        let account = Account::read(json.expose_secret(), token_uri, &section, "service_account")?;
        let send_url = format!("{base_url}/v1/projects/{}/messages:send", account.project_id);
        Ok(Box::new(FcmSettings { account: Arc::new(account), send_url, ttl }))
    }
}

#[derive(Debug)]
struct FcmSettings {
    account: Arc<Account>,
    send_url: String,
    ttl: Duration,
}

impl ProviderSettings for FcmSettings {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn Provider>>> {
        async move {
            let provider = FcmProvider {
                http: ctx.http.get()?,
                account: self.account.clone(),
                send_url: self.send_url.clone(),
                ttl: self.ttl,
                grant_timeout: (ctx.provider_timeout / 3).max(Duration::from_secs(1)),
                token: TOKENS.get(&self.account.identity),
            };
            Ok(Arc::new(provider) as Arc<dyn Provider>)
        }
        .boxed()
    }

    /// A token grant: proves the key and the account, sends nothing.
    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        async move {
            let http = match ctx.http.get() {
                Ok(http) => http,
                Err(e) => return Checked::failed(None, "client", format!("no HTTP client: {e}")),
            };
            let account = &self.account;
            match grant(&http, account, None).await {
                Ok(_) => Checked {
                    ok: true,
                    status: Some(200),
                    code: None,
                    detail: format!(
                        "service account {} of project {}: an access token was granted",
                        account.client_email, account.project_id
                    ),
                },
                Err(refused) => Checked {
                    ok: false,
                    status: refused.status,
                    code: Some(refused.failure.code),
                    detail: refused.failure.message,
                },
            }
        }
        .boxed()
    }
}

/// An access token, as the `Authorization` header it goes in.
struct AccessToken {
    /// `Bearer <token>`, marked sensitive.
    authorization: HeaderValue,
    /// When it is to be replaced: [`REFRESH_MARGIN`] before it expires.
    refresh_at: Instant,
}

/// A grant that did not give a token: the failure of the send it was for, and the token
/// endpoint's status for a check.
struct GrantRefused {
    status: Option<u16>,
    failure: SendFailure,
}

/// The token endpoint's answer, read.
#[derive(Deserialize)]
struct Granted {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

/// Asks `account.token_uri` for an access token. Nothing has reached FCM yet, so whatever
/// goes wrong is `Retryable` (the endpoint down or slow, a rate limit) or `Config` (the
/// key or the account refused, an answer that is not a token endpoint's).
async fn grant(http: &Client, account: &Account, timeout: Option<Duration>) -> Result<AccessToken, GrantRefused> {
    let refused = |status: Option<u16>, kind: FailureKind, code: String, message: String| GrantRefused {
        status,
        // Shortened as every stored message; there is no recipient to keep out of it.
        failure: http::failure(kind, code, &format!("the OAuth2 token endpoint: {message}"), "", None),
    };
    let assertion = account.assertion().map_err(|e| {
        refused(None, FailureKind::Config, "assertion".into(), format!("the grant could not be signed: {e}"))
    })?;
    let mut request = http.post(&account.token_uri).form(&[("grant_type", GRANT_TYPE), ("assertion", &assertion)]);
    if let Some(timeout) = timeout {
        request = request.timeout(timeout);
    }
    let answer = match http::send(request).await {
        Ok(answer) => answer,
        Err(failure) => {
            let kind = if failure.kind == FailureKind::Config { FailureKind::Config } else { FailureKind::Retryable };
            return Err(refused(None, kind, format!("token_{}", failure.code), failure.message));
        }
    };
    let status = answer.status;
    if status.is_success() {
        let granted = serde_json::from_slice::<Granted>(&answer.body)
            .ok()
            .filter(|g| !g.access_token.is_empty())
            .filter(|g| g.token_type.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("bearer")));
        let Some(granted) = granted else {
            let message = format!("answered {status} without a bearer access token");
            return Err(refused(Some(status.as_u16()), FailureKind::Config, "token_unreadable".into(), message));
        };
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", granted.access_token)).map_err(|_| {
            let message = "answered a token a header cannot carry".to_owned();
            refused(Some(status.as_u16()), FailureKind::Config, "token_unreadable".into(), message)
        })?;
        authorization.set_sensitive(true);
        let lifetime = Duration::from_secs(granted.expires_in.unwrap_or(ASSERTION_LIFETIME_SECS));
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN);
        return Ok(AccessToken { authorization, refresh_at });
    }
    // OAuth2's `{"error": "invalid_grant", "error_description": "…"}`.
    let body = answer.json().unwrap_or(Value::Null);
    let error = body["error"].as_str().map(|e| e.chars().take(64).collect::<String>());
    let description = body["error_description"].as_str();
    let kind = match status.as_u16() {
        429 | 500.. => FailureKind::Retryable,
        _ => FailureKind::Config,
    };
    let code = error.clone().unwrap_or_else(|| format!("token_{}", http::status_code(status)));
    let message = match (error, description) {
        (Some(error), Some(description)) => format!("refused the grant: {error}: {description}"),
        (Some(error), None) => format!("refused the grant: {error}"),
        _ => format!("answered {status}"),
    };
    let mut refused = refused(Some(status.as_u16()), kind, code, message);
    refused.failure.retry_after = answer.retry_after;
    Err(refused)
}

pub struct FcmProvider {
    http: Client,
    account: Arc<Account>,
    send_url: String,
    ttl: Duration,
    /// A grant's share of the worker's limit on one send, which also covers FCM's answer
    /// (and, after a 401, a second grant and send): a slow token endpoint fails the send
    /// as `retryable` (nothing sent) before the worker's limit would call it `ambiguous`.
    grant_timeout: Duration,
    /// The access token, while it is fresh: the account's, shared by every provider built
    /// from it in this process ([`TOKENS`]). A tokio mutex, held across a grant, so that
    /// sends that find no token wait for the one grant in flight.
    token: Arc<tokio::sync::Mutex<TokenState>>,
}

#[derive(Default)]
struct TokenState {
    token: Option<AccessToken>,
    /// The last grant that failed, and when it ended: the sends that were waiting for it
    /// share its failure instead of each asking again in turn.
    failed: Option<(Instant, SendFailure)>,
}

impl FcmProvider {
    /// The cached token, or a new one (single-flight: the lock is held across the grant).
    async fn authorization(&self) -> Result<HeaderValue, SendFailure> {
        let asked = Instant::now();
        let mut state = self.token.lock().await;
        if let Some(token) = state.token.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.authorization.clone());
        }
        if let Some((_, failure)) = state.failed.as_ref().filter(|(at, _)| *at >= asked) {
            return Err(failure.clone());
        }
        state.token = None;
        match grant(&self.http, &self.account, Some(self.grant_timeout)).await {
            Ok(token) => {
                // Used for this send even when Google gave it a life shorter than the margin.
                let authorization = token.authorization.clone();
                *state = TokenState { token: Some(token), failed: None };
                Ok(authorization)
            }
            Err(refused) => {
                state.failed = Some((Instant::now(), refused.failure.clone()));
                Err(refused.failure)
            }
        }
    }

    /// Forgets `used`, unless another send already replaced it.
    async fn forget(&self, used: &HeaderValue) {
        let mut state = self.token.lock().await;
        if state.token.as_ref().is_some_and(|t| t.authorization == *used) {
            state.token = None;
        }
    }

    async fn deliver(&self, job: &DeliveryJob) -> SendOutcome {
        let Some(device) = device_of(job, Platform::Fcm) else {
            return SendOutcome::Failed(no_device(Platform::Fcm));
        };
        let body = json!({ "message": message(job, device, self.ttl, unix_now()) }).to_string();
        let mut refreshed = false;
        loop {
            let authorization = match self.authorization().await {
                Ok(authorization) => authorization,
                Err(failure) => return SendOutcome::Failed(failure),
            };
            let request = self
                .http
                .post(&self.send_url)
                .header(AUTHORIZATION, authorization.clone())
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .body(body.clone());
            let answer = match http::send(request).await {
                Ok(answer) => answer,
                Err(failure) => {
                    let message = http::without_address(&failure.message, &device.token);
                    return SendOutcome::Failed(SendFailure { message, ..failure });
                }
            };
            if answer.status == StatusCode::UNAUTHORIZED && !refreshed && access_token_refused(&answer) {
                self.forget(&authorization).await;
                refreshed = true;
                continue;
            }
            // `SENDER_ID_MISMATCH` proves the token dead only when the device said which
            // project it belongs to, and it is this account's: else the account may be the
            // wrong one, and the tenant's devices are kept.
            let app_matched = device.app.as_deref().map(str::trim).is_some_and(|app| app == self.account.project_id);
            return outcome(&answer, &device.token, app_matched);
        }
    }
}

impl Provider for FcmProvider {
    fn name(&self) -> &str {
        NAME
    }

    /// An FCM device of this account's project (a device's `app`, when set, is its project).
    fn serves(&self, job: &DeliveryJob) -> bool {
        device_of(job, Platform::Fcm).is_some_and(|device| {
            device.app.as_deref().map(str::trim).is_none_or(|app| app.is_empty() || app == self.account.project_id)
        })
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.deliver(job).boxed()
    }
}

/// The v1 `Message` for `device`: the notification part, `data`, and each platform's
/// priority, collapse key and time to live (`now`: seconds since the epoch).
fn message(job: &DeliveryJob, device: &PushDevice, ttl: Duration, now: u64) -> Value {
    let content = &job.content;
    let urgent = is_urgent(job.priority);
    let collapse = collapse_id(job);
    let mut message = Map::new();
    message.insert("token".into(), device.token.clone().into());

    let mut notification = Map::new();
    for (key, value) in [("title", &content.title), ("body", &content.body), ("image", &content.image)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            notification.insert(key.into(), value.into());
        }
    }
    if notification.contains_key("title") || notification.contains_key("body") {
        message.insert("notification".into(), notification.into());
    }

    let mut data: Map<String, Value> =
        content.data.iter().flatten().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let action_url = content.action_url.as_deref().filter(|u| !u.is_empty());
    if let Some(url) = action_url {
        data.entry("action_url").or_insert_with(|| url.into());
    }
    if !data.is_empty() {
        message.insert("data".into(), data.into());
    }

    let mut android_notification = Map::new();
    if let Some(sound) = content.sound.as_deref().filter(|s| !s.is_empty()) {
        android_notification.insert("sound".into(), sound.into());
    }
    if let Some(badge) = content.badge {
        android_notification.insert("notification_count".into(), badge.into());
    }
    let mut android = json!({
        "collapse_key": collapse,
        "priority": if urgent { "HIGH" } else { "NORMAL" },
        "ttl": format!("{}s", ttl.as_secs()),
    });
    if !android_notification.is_empty() {
        android["notification"] = android_notification.into();
    }
    message.insert("android".into(), android);

    let mut aps = Map::new();
    if let Some(sound) = content.sound.as_deref().filter(|s| !s.is_empty()) {
        aps.insert("sound".into(), sound.into());
    }
    if let Some(badge) = content.badge {
        aps.insert("badge".into(), badge.into());
    }
    let image = content.image.as_deref().filter(|i| !i.is_empty());
    if image.is_some() {
        // iOS shows an image only through the app's notification service extension.
        aps.insert("mutable-content".into(), 1.into());
    }
    let mut apns = json!({
        "headers": {
            "apns-priority": if job.priority == Priority::Low { "5" } else { "10" },
            "apns-collapse-id": collapse,
            "apns-expiration": (now + ttl.as_secs()).to_string(),
        },
    });
    if !aps.is_empty() {
        apns["payload"] = json!({ "aps": aps });
    }
    if let Some(image) = image {
        apns["fcm_options"] = json!({ "image": image });
    }
    message.insert("apns".into(), apns);

    let urgency = match job.priority {
        Priority::Low => "low",
        Priority::Normal => "normal",
        Priority::High | Priority::Urgent => "high",
    };
    let mut webpush = json!({
        "headers": { "TTL": ttl.as_secs().to_string(), "Urgency": urgency, "Topic": collapse },
    });
    // FCM takes only an https link (else INVALID_ARGUMENT for the whole message).
    if let Some(url) = action_url.filter(|u| u.starts_with("https://")) {
        webpush["fcm_options"] = json!({ "link": url });
    }
    message.insert("webpush".into(), webpush);
    Value::Object(message)
}

/// A 401 for the access token (`UNAUTHENTICATED`), not FCM's word that the APNs or Web
/// Push credentials of the Firebase project are wrong (which a new token does not mend).
fn access_token_refused(answer: &Answer) -> bool {
    let body = answer.json().unwrap_or(Value::Null);
    !matches!(fcm_error_code(&body["error"]), Some("THIRD_PARTY_AUTH_ERROR" | "APNS_AUTH_ERROR"))
}

/// `details[@type = FcmError].errorCode`.
fn fcm_error_code(error: &Value) -> Option<&str> {
    detail(error, FCM_ERROR)?["errorCode"].as_str()
}

fn detail<'a>(error: &'a Value, kind: &str) -> Option<&'a Value> {
    error["details"].as_array()?.iter().find(|d| d["@type"].as_str() == Some(kind))
}

/// An `INVALID_ARGUMENT` about the token itself: a `message.token` field violation, or a
/// message that says so ("The registration token is not a valid FCM registration token").
fn token_is_invalid(error: &Value) -> bool {
    let violation = detail(error, BAD_REQUEST)
        .and_then(|d| d["fieldViolations"].as_array())
        .is_some_and(|v| v.iter().any(|f| f["field"].as_str() == Some("message.token")));
    violation || error["message"].as_str().is_some_and(|m| m.to_ascii_lowercase().contains("registration token"))
}

/// What FCM's answer means for the message, and for the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Failed(FailureKind),
    /// The token is dead (bucket D): the device is removed.
    Gone,
}

/// The buckets of docs/providers.md §12: by FCM's own code first, then Google's status,
/// then the HTTP status. `app_matched`: the device named its project (`app`), and it is
/// the account's; only then is `SENDER_ID_MISMATCH` the device's fault rather than a
/// misconfigured account's.
fn classify(status: StatusCode, error: &Value, app_matched: bool) -> Verdict {
    use FailureKind::*;
    match fcm_error_code(error) {
        Some("UNREGISTERED") => return Verdict::Gone,
        Some("SENDER_ID_MISMATCH") if app_matched => return Verdict::Gone,
        Some("SENDER_ID_MISMATCH") => return Verdict::Failed(Permanent),
        Some("INVALID_ARGUMENT") if token_is_invalid(error) => return Verdict::Gone,
        Some("INVALID_ARGUMENT") => return Verdict::Failed(Permanent),
        Some("THIRD_PARTY_AUTH_ERROR" | "APNS_AUTH_ERROR") => return Verdict::Failed(Config),
        Some("QUOTA_EXCEEDED") => return Verdict::Failed(Retryable),
        Some("UNAVAILABLE" | "INTERNAL") => return Verdict::Failed(Ambiguous),
        _ => {}
    }
    match error["status"].as_str() {
        Some("INVALID_ARGUMENT") if token_is_invalid(error) => return Verdict::Gone,
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => return Verdict::Failed(Permanent),
        // Without FcmError's UNREGISTERED, a 404 does not prove the token dead (a wrong
        // project): the message fails, the device stays.
        Some("NOT_FOUND") => return Verdict::Failed(Permanent),
        Some("UNAUTHENTICATED" | "PERMISSION_DENIED") => return Verdict::Failed(Config),
        Some("RESOURCE_EXHAUSTED") => return Verdict::Failed(Retryable),
        Some("UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" | "UNKNOWN") => return Verdict::Failed(Ambiguous),
        _ => {}
    }
    match status.as_u16() {
        413 => Verdict::Failed(Permanent),
        // Not Google's answer (no error JSON): the base URL is wrong.
        404 => Verdict::Failed(Config),
        _ => Verdict::Failed(http::kind_from_status(status)),
    }
}

/// Reads FCM's answer: `200 {"name": "projects/{p}/messages/{id}"}`, or Google's error
/// `{"error": {code, message, status, details}}`.
fn outcome(answer: &Answer, token: &str, app_matched: bool) -> SendOutcome {
    let body = answer.json();
    if answer.status.is_success() {
        return match body.as_ref().and_then(|b| b["name"].as_str()) {
            Some(name) => {
                SendOutcome::Sent(SendReceipt { provider_message_id: name.to_owned(), response_excerpt: None })
            }
            None => SendOutcome::Failed(http::failure(
                FailureKind::Ambiguous,
                "no_message_id",
                &format!("FCM answered {} without a message name", answer.status),
                token,
                None,
            )),
        };
    }
    let error = body.as_ref().map(|b| &b["error"]).filter(|e| e.is_object()).unwrap_or(&Value::Null);
    let code = fcm_error_code(error)
        .or_else(|| error["status"].as_str())
        .map_or_else(|| http::status_code(answer.status), |c| c.chars().take(64).collect());
    let message = match error["message"].as_str() {
        Some(message) => format!("FCM refused the message ({}): {message}", answer.status),
        None => format!("FCM answered {}", answer.status),
    };
    let failure = match classify(answer.status, error, app_matched) {
        Verdict::Gone => {
            let failure = http::failure(FailureKind::Permanent, code, &message, token, None);
            SendFailure::gone(failure.code, failure.message)
        }
        Verdict::Failed(kind) => {
            let retry_after = match kind {
                FailureKind::Retryable => Some(answer.retry_after.unwrap_or(QUOTA_DELAY).max(QUOTA_DELAY)),
                _ => answer.retry_after,
            };
            http::failure(kind, code, &message, token, retry_after)
        }
    };
    SendOutcome::Failed(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: &str, code: Option<&str>) -> Value {
        let mut error = json!({"code": 400, "message": "m", "status": status, "details": []});
        if let Some(code) = code {
            error["details"] = json!([{"@type": FCM_ERROR, "errorCode": code}]);
        }
        error
    }

    #[test]
    fn fcm_codes_come_before_statuses() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        use FailureKind::*;
        let cases = [
            (404, error("NOT_FOUND", Some("UNREGISTERED")), Verdict::Gone),
            (403, error("PERMISSION_DENIED", Some("SENDER_ID_MISMATCH")), Verdict::Gone),
            (400, error("INVALID_ARGUMENT", Some("INVALID_ARGUMENT")), Verdict::Failed(Permanent)),
            (401, error("UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR")), Verdict::Failed(Config)),
            (429, error("RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")), Verdict::Failed(Retryable)),
            (503, error("UNAVAILABLE", Some("UNAVAILABLE")), Verdict::Failed(Ambiguous)),
            (500, error("INTERNAL", Some("INTERNAL")), Verdict::Failed(Ambiguous)),
            (401, error("UNAUTHENTICATED", None), Verdict::Failed(Config)),
            (403, error("PERMISSION_DENIED", None), Verdict::Failed(Config)),
            (404, error("NOT_FOUND", None), Verdict::Failed(Permanent)),
            (404, Value::Null, Verdict::Failed(Config)),
            (413, Value::Null, Verdict::Failed(Permanent)),
            (502, Value::Null, Verdict::Failed(Ambiguous)),
        ];
        for (status, error, verdict) in cases {
            assert_eq!(classify(s(status), &error, true), verdict, "{status} {error}");
        }
    }

    #[test]
    fn a_sender_id_mismatch_is_gone_only_for_a_device_that_named_its_project() {
        let error = error("PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"));
        assert_eq!(classify(StatusCode::FORBIDDEN, &error, true), Verdict::Gone);
        assert_eq!(classify(StatusCode::FORBIDDEN, &error, false), Verdict::Failed(FailureKind::Permanent));
        let unregistered = super::tests::error("NOT_FOUND", Some("UNREGISTERED"));
        assert_eq!(classify(StatusCode::NOT_FOUND, &unregistered, false), Verdict::Gone);
    }

    #[test]
    fn an_invalid_argument_about_the_token_is_a_dead_token() {
        let mut by_field = error("INVALID_ARGUMENT", Some("INVALID_ARGUMENT"));
        by_field["details"].as_array_mut().unwrap().push(json!({
            "@type": BAD_REQUEST, "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]
        }));
        assert_eq!(classify(StatusCode::BAD_REQUEST, &by_field, false), Verdict::Gone);
        let mut by_message = error("INVALID_ARGUMENT", None);
        by_message["message"] = "The registration token is not a valid FCM registration token".into();
        assert_eq!(classify(StatusCode::BAD_REQUEST, &by_message, false), Verdict::Gone);
        let mut data = error("INVALID_ARGUMENT", Some("INVALID_ARGUMENT"));
        data["message"] = "Invalid value at 'message.data[0].value' (TYPE_STRING)".into();
        assert_eq!(classify(StatusCode::BAD_REQUEST, &data, false), Verdict::Failed(FailureKind::Permanent));
    }
}
