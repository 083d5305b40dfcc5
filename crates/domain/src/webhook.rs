//! Outbound event webhooks: the event types a tenant's endpoint can take, its signing
//! secret, the Standard Webhooks signature of a message, and the validation of an
//! endpoint's settings (docs/webhooks.md).
//!
//! A message is signed as the Standard Webhooks specification says, so receivers verify it
//! with the libraries that exist for it: `webhook-signature` is a space-separated list of
//! `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`, one per secret
//! in use (two while a rotated secret keeps signing), the key being the base64-decoded
//! part of `whsec_<base64>`.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::FieldError;

/// Every event an endpoint can subscribe to, as `events` names them.
pub const EVENT_TYPES: &[&str] = &[
    "notification.accepted",
    "notification.completed",
    "delivery.sent",
    "delivery.delivered",
    "delivery.bounced",
    "delivery.failed",
    "delivery.suppressed",
    "delivery.retrying",
    "inbox.read",
];

/// The event `POST /v1/webhooks/{id}/test` sends; no filter stops it.
pub const TEST_EVENT: &str = "webhook.test";

/// Subscribes to every event type.
pub const ALL_EVENTS: &str = "*";

/// Random bytes of a new secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;
const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing secret, `whsec_<base64>`. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// A secret that is not `whsec_` followed by base64 of 24 to 64 bytes.
#[derive(Debug, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by the base64 of 24 to 64 random bytes")]
pub struct InvalidSecret;

impl WebhookSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// A stored or given secret, checked.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let secret = Self(text.to_owned());
        let key = secret.key()?;
        if !(24..=64).contains(&key.len()) {
            return Err(InvalidSecret);
        }
        Ok(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Result<Vec<u8>, InvalidSecret> {
        let encoded = self.0.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
        STANDARD.decode(encoded).map_err(|_| InvalidSecret)
    }

    /// `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}`: the exact bytes sent.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = self.key().expect("a WebhookSecret is checked when made");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(secrets: &[&WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// The `webhook-id` of an event: `msg_` and the event's id without dashes (the
/// specification wants no `.` in it).
pub fn message_id(event_id: uuid::Uuid) -> String {
    format!("msg_{}", event_id.simple())
}

/// What the operator allows of endpoint URLs (`webhooks.*`).
#[derive(Clone, Debug, Default)]
pub struct UrlRules {
    /// `http://` accepted besides `https://`: for tests and private deployments.
    pub allow_http: bool,
}

/// Longest URL accepted.
const URL_MAX: usize = 2000;
const DESCRIPTION_MAX: usize = 500;
const FILTER_MAX: usize = 100;

/// Checks an endpoint's `url`: absolute, `https` (or `http` where allowed), with a host and
/// no user info. Where it resolves is checked when a message is sent, not here: the
/// answer of DNS can change in between.
pub fn validate_url(url: &str, rules: &UrlRules) -> Result<url::Url, FieldError> {
    let wrong = |message: &str| FieldError::new("url", message);
    if url.len() > URL_MAX {
        return Err(wrong("must be at most 2000 characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| wrong(&format!("is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if rules.allow_http => {}
        "http" => return Err(wrong("must be https (this deployment does not allow http)")),
        _ => return Err(wrong("must be an https URL")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(wrong("must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(wrong("must not carry a user name or password"));
    }
    Ok(parsed)
}

/// Checks `events`: known event types, or `["*"]`; at least one.
pub fn validate_events(events: &[String]) -> Result<(), FieldError> {
    if events.is_empty() || events.len() > FILTER_MAX {
        return Err(FieldError::new("events", "must list 1 to 100 event types, or \"*\""));
    }
    for (i, event) in events.iter().enumerate() {
        if event != ALL_EVENTS && !EVENT_TYPES.contains(&event.as_str()) {
            return Err(FieldError::new(
                format!("events[{i}]"),
                format!("unknown event type (known: *, {})", EVENT_TYPES.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Checks `types`: notification type keys, at most 100.
pub fn validate_types(types: &[String]) -> Result<(), FieldError> {
    if types.is_empty() || types.len() > FILTER_MAX {
        return Err(FieldError::new("types", "must list 1 to 100 notification types (leave it out for all)"));
    }
    for (i, kind) in types.iter().enumerate() {
        if !crate::notification_type::is_valid_key(kind) {
            return Err(FieldError::new(format!("types[{i}]"), "must be 1 to 200 letters, digits and . _ - : /"));
        }
    }
    Ok(())
}

pub fn validate_description(description: &str) -> Result<(), FieldError> {
    if description.chars().count() > DESCRIPTION_MAX {
        return Err(FieldError::new("description", "must be at most 500 characters"));
    }
    Ok(())
}

/// The longest `Retry-After` a receiver can ask for: a longer one waits this long.
pub const RETRY_AFTER_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// When a message whose attempt failed is tried again: the first attempt goes at once,
/// each next one after the delay the schedule has for it, moved at random by up to
/// ±`jitter` of it so the retries of a burst spread out. A receiver's `Retry-After` is
/// a floor (at most [`RETRY_AFTER_MAX`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySchedule {
    /// The delay before the second attempt, the third, ...: one attempt more than delays.
    pub delays: Vec<std::time::Duration>,
    pub jitter: f64,
}

impl Default for RetrySchedule {
    /// At once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h: 8 attempts over
    /// some 28 hours.
    fn default() -> Self {
        let delays = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
        Self { delays: delays.into_iter().map(std::time::Duration::from_secs).collect(), jitter: 0.2 }
    }
}

impl RetrySchedule {
    /// The delay before the attempt after `attempt` (1-based), or `None` when `attempt`
    /// was the last. `unit` is a uniform random number in [0, 1) that places the jitter.
    pub fn retry_in(
        &self,
        attempt: i32,
        retry_after: Option<std::time::Duration>,
        unit: f64,
    ) -> Option<std::time::Duration> {
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        let base = self.delays.get(index)?.as_secs_f64();
        let jittered = base * (1.0 + self.jitter * (2.0 * unit - 1.0));
        let delay = std::time::Duration::try_from_secs_f64(jittered.max(0.0)).unwrap_or(RETRY_AFTER_MAX);
        Some(match retry_after {
            Some(floor) => delay.max(floor.min(RETRY_AFTER_MAX)),
            None => delay,
        })
    }

    /// The first problem, naming the setting.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.delays.len() > 20 {
            return Err(FieldError::new("retry_schedule", "must list at most 20 delays"));
        }
        if self.delays.iter().any(|d| *d > 7 * RETRY_AFTER_MAX) {
            return Err(FieldError::new("retry_schedule", "each delay must be at most 7 days"));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(FieldError::new("retry_jitter", "must be in [0, 1)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_tries_eight_times_within_the_jitter_band() {
        use std::time::Duration;
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.retry_in(1, None, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(schedule.retry_in(2, None, 0.0), Some(Duration::from_secs(240)));
        let high = schedule.retry_in(7, None, 0.999_999).unwrap();
        assert!(high > Duration::from_secs(43_199) && high <= Duration::from_secs(43_200), "{high:?}");
        assert_eq!(schedule.retry_in(8, None, 0.5), None, "the eighth attempt is the last");
        assert_eq!(schedule.retry_in(0, None, 0.5), None);
        // Retry-After is a floor, at most a day.
        assert_eq!(schedule.retry_in(1, Some(Duration::from_secs(60)), 0.5), Some(Duration::from_secs(60)));
        assert_eq!(schedule.retry_in(1, Some(Duration::from_secs(3)), 0.5), Some(Duration::from_secs(5)));
        assert_eq!(schedule.retry_in(1, Some(Duration::from_secs(10 * 86_400)), 0.5), Some(RETRY_AFTER_MAX));
        assert!(RetrySchedule { jitter: 1.0, ..RetrySchedule::default() }.validate().is_err());
    }

    // The specification's own vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn signs_the_specifications_vector() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn the_reference_library_verifies_our_signatures_of_both_secrets() {
        let (new, old) = (WebhookSecret::generate(), WebhookSecret::generate());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let body = br#"{"type":"delivery.sent","data":{"delivery_id":"d"}}"#;
        let header = signature_header(&[&new, &old], ID, now, body);
        for secret in [&new, &old] {
            let mut headers = http::HeaderMap::new();
            headers.insert("webhook-id", ID.parse().unwrap());
            headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
            headers.insert("webhook-signature", header.parse().unwrap());
            let verifier = standardwebhooks::Webhook::new(secret.expose()).unwrap();
            verifier.verify(body, &headers).expect("verifies with either secret");
            let mut changed = body.to_vec();
            changed[2] = b'T';
            assert!(verifier.verify(&changed, &headers).is_err(), "a changed body does not verify");
        }
    }

    #[test]
    fn secrets_are_whsec_and_24_to_64_bytes() {
        let secret = WebhookSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert!(WebhookSecret::parse(secret.expose()).is_ok());
        assert!(format!("{secret:?}").find(secret.expose()).is_none());
        for wrong in ["", "whsec_", "whsec_!!!", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2hvcnQ="] {
            assert!(WebhookSecret::parse(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn urls_are_https_with_a_host_unless_http_is_allowed() {
        let strict = UrlRules::default();
        assert!(validate_url("https://hooks.example.com/notify", &strict).is_ok());
        for wrong in ["http://hooks.example.com/", "ftp://x/", "https://user:pw@x.example/", "/relative", "https://"] {
            assert_eq!(validate_url(wrong, &strict).unwrap_err().field, "url", "{wrong}");
        }
        assert!(validate_url("http://127.0.0.1:9000/hook", &UrlRules { allow_http: true }).is_ok());
    }

    #[test]
    fn events_are_known_types_or_all() {
        assert!(validate_events(&["*".into()]).is_ok());
        assert!(validate_events(&["delivery.sent".into(), "inbox.read".into()]).is_ok());
        assert_eq!(
            validate_events(&["delivery.sent".into(), "delivery.opened".into()]).unwrap_err().field,
            "events[1]"
        );
        assert_eq!(validate_events(&[]).unwrap_err().field, "events");
    }

    #[test]
    fn message_ids_have_no_dot() {
        let id = message_id(uuid::Uuid::new_v4());
        assert!(id.starts_with("msg_") && !id.contains('.') && id.len() == 36);
    }
}
