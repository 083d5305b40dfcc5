//! The push channel's vocabulary: a subscriber's devices and what a push provider is
//! given of one. A push delivery's recipient is the device's id (as the app chose it,
//! unique per subscriber); the worker's claim reads the device it names, so a token the
//! app refreshed since the accept is the one used.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{FieldError, locale, subscriber::is_valid_timezone};

/// Which push service a device's token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Firebase Cloud Messaging (Android, and iOS or web apps through Firebase).
    Fcm,
    /// Apple Push Notification service.
    Apns,
    /// A browser's Web Push subscription (RFC 8030).
    Webpush,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Fcm, Platform::Apns, Platform::Webpush];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
            Platform::Webpush => "webpush",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A device as a push provider needs it: claimed with its delivery. Its `Debug` shows the
/// token's length only (a job may be logged with `?job`).
#[derive(Clone, PartialEq, Eq)]
pub struct PushDevice {
    /// The app's id for the device (the delivery's recipient).
    pub id: String,
    pub platform: Platform,
    /// FCM registration token, APNs device token (hex), or a Web Push subscription as
    /// JSON (`{"endpoint", "keys": {"p256dh", "auth"}}`).
    pub token: String,
    /// The APNs bundle id (`apns-topic`) or the FCM project; `None`: the provider's default.
    pub app: Option<String>,
}

/// A token as `Debug` shows it: its length, never its text.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

impl std::fmt::Debug for PushDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushDevice")
            .field("id", &self.id)
            .field("platform", &self.platform)
            .field("token", &Redacted(self.token.len()))
            .field("app", &self.app)
            .finish()
    }
}

impl std::fmt::Debug for DeviceInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token_len = match &self.token {
            serde_json::Value::String(text) => text.len(),
            other => other.to_string().len(),
        };
        f.debug_struct("DeviceInput")
            .field("platform", &self.platform)
            .field("token", &Redacted(token_len))
            .field("app", &self.app)
            .field("locale", &self.locale)
            .field("timezone", &self.timezone)
            .finish()
    }
}

impl std::fmt::Debug for NewDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDevice")
            .field("platform", &self.platform)
            .field("token", &Redacted(self.token.len()))
            .field("app", &self.app)
            .field("locale", &self.locale)
            .field("timezone", &self.timezone)
            .finish()
    }
}

/// The largest payload a push service takes: FCM's and APNs's 4 KB (a Web Push message
/// holds about as much once encrypted).
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// What the providers add to the content's fields in a payload: APNs's `aps` wrapper, the
/// notification and delivery ids of a Web Push message, FCM's `android` and `webpush`
/// blocks. The content's own fields ([`content_payload`]) may take the rest.
pub const PROVIDER_BYTES: usize = 256;

/// The most the content's push fields may take as JSON: [`MAX_PAYLOAD_BYTES`] less
/// [`PROVIDER_BYTES`].
pub const MAX_CONTENT_BYTES: usize = MAX_PAYLOAD_BYTES - PROVIDER_BYTES;

/// Keys FCM refuses in a message's `data` (`from`, `message_type`, and words starting with
/// `google` or `gcm`), refused for every platform so a notification suits all of them.
fn reserved_data_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    lower == "from" || lower == "message_type" || lower.starts_with("google") || lower.starts_with("gcm")
}

/// The push fields of `c` as one JSON object (`title`, `body`, `image`, `action_url`,
/// `sound`, `badge`, `data`; absent ones left out), the part of a payload the content
/// decides; its size is held to [`MAX_CONTENT_BYTES`].
pub fn content_payload(c: &crate::Content) -> serde_json::Value {
    let mut payload = serde_json::Map::new();
    let strings = [
        ("title", &c.title),
        ("body", &c.body),
        ("image", &c.image),
        ("action_url", &c.action_url),
        ("sound", &c.sound),
    ];
    for (name, value) in strings {
        if let Some(value) = value {
            payload.insert(name.into(), value.clone().into());
        }
    }
    if let Some(badge) = c.badge {
        payload.insert("badge".into(), badge.into());
    }
    if let Some(data) = &c.data {
        payload.insert("data".into(), serde_json::to_value(data).unwrap_or_default());
    }
    serde_json::Value::Object(payload)
}

/// Checks the push-only fields of `c` that need no template rendered to tell (`data`'s
/// keys, the `sound`), and, when `payload` (the content goes out as a push), that its
/// push fields fit in [`MAX_CONTENT_BYTES`]: over it, the largest field is named
/// (`{prefix}.body`). Errors name fields under `prefix`.
pub fn check_content(c: &crate::Content, prefix: &str, payload: bool, errors: &mut Vec<crate::FieldError>) {
    let mut push = |field: String, message: String| {
        if !errors.iter().any(|e| e.field == field) {
            errors.push(crate::FieldError::new(field, message));
        }
    };
    if let Some(sound) = &c.sound
        && (sound.is_empty() || sound.len() > 255 || sound.chars().any(char::is_control))
    {
        push(format!("{prefix}.sound"), "must be 1 to 255 characters, without control characters".into());
    }
    for key in c.data.iter().flat_map(|d| d.keys()) {
        if key.is_empty() || key.len() > 255 || key.chars().any(char::is_control) {
            push(format!("{prefix}.data"), "keys must be 1 to 255 characters, without control characters".into());
        } else if reserved_data_key(key) {
            push(
                format!("{prefix}.data.{key}"),
                "is reserved by the push services (`from`, `message_type`, and keys starting with `google` or `gcm`)"
                    .into(),
            );
        }
    }
    if !payload {
        return;
    }
    let size = content_payload(c).to_string().len();
    if size > MAX_CONTENT_BYTES {
        let fields = [("title", &c.title), ("body", &c.body), ("image", &c.image), ("action_url", &c.action_url)];
        let mut largest = fields.iter().filter_map(|(n, v)| Some((*n, v.as_ref()?.len()))).collect::<Vec<_>>();
        if let Some(data) = &c.data {
            largest.push(("data", serde_json::to_string(data).map_or(0, |s| s.len())));
        }
        let field = largest.into_iter().max_by_key(|(_, len)| *len).map_or("body", |(n, _)| n);
        push(
            format!("{prefix}.{field}"),
            format!(
                "the push payload (title, body, image, action_url, sound, badge and data as JSON) is {size} bytes, \
                 over the {MAX_CONTENT_BYTES} a push may carry ({MAX_PAYLOAD_BYTES} less {PROVIDER_BYTES} for the \
                 providers' own fields); `{field}` is its largest part"
            ),
        );
    }
}

/// Why `url` cannot be a push `image`, if it cannot: the push services fetch it, so an
/// `https` URL naming a host.
pub fn image_problem(url: &str) -> Option<&'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces or control characters");
    }
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" && u.host_str().is_some_and(|h| !h.is_empty()) => None,
        _ => Some("must be an https URL"),
    }
}

// ---- Devices: what an app registers (`PUT /v1/subscribers/{id}/devices/{device_id}`) ----

/// The devices a subscriber keeps by default (`limits.max_devices_per_subscriber`):
/// registering one more evicts the one updated least recently.
pub const MAX_DEVICES_PER_SUBSCRIBER: usize = 20;

/// The longest FCM registration token accepted.
const MAX_FCM_TOKEN: usize = 4096;
/// The longest `app` (a bundle id or an FCM project id).
const MAX_APP: usize = 255;
/// The longest Web Push endpoint URL.
const MAX_ENDPOINT: usize = 2048;

/// A device id (the app's own): 1 to 200 characters, no control characters and no `/`
/// (it is a path segment), as a subscriber id.
pub fn is_valid_device_id(id: &str) -> bool {
    crate::subscriber::is_valid_subscriber_id(id)
}

/// `PUT /v1/subscribers/{id}/devices/{device_id}`: the device as it shall be. Its `Debug`
/// hides the token.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceInput {
    pub platform: Platform,
    /// FCM: the registration token. APNs: the device token in hex. Web Push: the browser's
    /// `PushSubscription` as JSON (`{"endpoint", "keys": {"p256dh", "auth"}}`), as an
    /// object or a string holding it.
    #[schema(value_type = Value)]
    pub token: serde_json::Value,
    /// The APNs bundle id (`apns-topic`) or the FCM project id; left out: the provider's.
    #[serde(default)]
    pub app: Option<String>,
    /// BCP 47; overrides the subscriber's for what is sent to this device.
    #[serde(default)]
    pub locale: Option<String>,
    /// IANA time zone name; overrides the subscriber's for quiet hours on this device.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A device's registration, checked: its token in the form it is stored and sent. Its
/// `Debug` shows the token's length only.
#[derive(Clone, PartialEq, Eq)]
pub struct NewDevice {
    pub platform: Platform,
    /// FCM as given; APNs in lower case; Web Push as compact JSON
    /// `{"endpoint":…,"keys":{"auth":…,"p256dh":…}}` (keys sorted).
    pub token: String,
    pub app: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
}

impl DeviceInput {
    /// Checks the token's shape for its platform, `app`, locale (normalized) and time
    /// zone, naming every bad field. `allow_private_hosts` (tests): a Web Push endpoint may
    /// be `http` and name a private or loopback host.
    pub fn validate(self, allow_private_hosts: bool) -> Result<NewDevice, Vec<FieldError>> {
        let mut errors = Vec::new();
        let token = match check_token(self.platform, &self.token, allow_private_hosts) {
            Ok(token) => token,
            Err(e) => {
                errors.push(e);
                String::new()
            }
        };
        if let Some(app) = &self.app
            && (app.is_empty() || app.chars().count() > MAX_APP || app.chars().any(char::is_control))
        {
            errors.push(FieldError::new("app", format!("must be 1 to {MAX_APP} characters")));
        }
        let mut normal_locale = None;
        if let Some(l) = &self.locale {
            match locale::normalize(l) {
                Some(normal) => normal_locale = Some(normal),
                None => errors.push(FieldError::new("locale", "must be a BCP 47 tag such as `de` or `pt-BR`")),
            }
        }
        if let Some(tz) = &self.timezone
            && !is_valid_timezone(tz)
        {
            errors.push(FieldError::new("timezone", "must be an IANA time zone name such as `Europe/Berlin`"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NewDevice { platform: self.platform, token, app: self.app, locale: normal_locale, timezone: self.timezone })
    }
}

/// The token as stored, or what is wrong with it (naming `token` or the subscription's
/// field under it).
pub fn check_token(
    platform: Platform,
    token: &serde_json::Value,
    allow_private_hosts: bool,
) -> Result<String, FieldError> {
    match platform {
        Platform::Fcm => {
            let t = token.as_str().unwrap_or_default();
            let ok = (1..=MAX_FCM_TOKEN).contains(&t.len())
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'));
            if ok {
                Ok(t.to_owned())
            } else {
                Err(FieldError::new(
                    "token",
                    format!("must be an FCM registration token: 1 to {MAX_FCM_TOKEN} of A-Z a-z 0-9 _ : . -"),
                ))
            }
        }
        Platform::Apns => {
            let t = token.as_str().unwrap_or_default();
            let ok =
                (64..=200).contains(&t.len()) && t.len().is_multiple_of(2) && t.bytes().all(|b| b.is_ascii_hexdigit());
            if ok {
                Ok(t.to_ascii_lowercase())
            } else {
                Err(FieldError::new("token", "must be an APNs device token: 64 to 200 hex digits, an even number"))
            }
        }
        Platform::Webpush => webpush_subscription(token, allow_private_hosts),
    }
}

#[derive(Deserialize)]
struct Subscription {
    endpoint: Option<serde_json::Value>,
    keys: Option<SubscriptionKeys>,
}

#[derive(Deserialize)]
struct SubscriptionKeys {
    p256dh: Option<serde_json::Value>,
    auth: Option<serde_json::Value>,
}

/// A browser's `PushSubscription` (its `toJSON()`; other members such as
/// `expirationTime` are dropped) as compact JSON.
fn webpush_subscription(token: &serde_json::Value, allow_private_hosts: bool) -> Result<String, FieldError> {
    let shape = || {
        FieldError::new("token", "must be a Web Push subscription: {\"endpoint\", \"keys\": {\"p256dh\", \"auth\"}}")
    };
    let value = match token {
        serde_json::Value::String(s) => serde_json::from_str(s).map_err(|_| shape())?,
        serde_json::Value::Object(_) => token.clone(),
        _ => return Err(shape()),
    };
    let sub: Subscription = serde_json::from_value(value).map_err(|_| shape())?;
    let endpoint = sub.endpoint.as_ref().and_then(|e| e.as_str()).ok_or_else(shape)?;
    check_endpoint(endpoint, allow_private_hosts).map_err(|m| FieldError::new("token.endpoint", m))?;
    let keys = sub.keys.ok_or_else(shape)?;
    let key = |field: &str, value: Option<&serde_json::Value>, len: usize| -> Result<String, FieldError> {
        let text = value.and_then(|v| v.as_str()).unwrap_or_default();
        // Browsers give unpadded base64url; some libraries pad it.
        let unpadded = text.trim_end_matches('=');
        match URL_SAFE_NO_PAD.decode(unpadded) {
            Ok(bytes) if bytes.len() == len && (len != 65 || bytes[0] == 0x04) => Ok(unpadded.to_owned()),
            _ => Err(FieldError::new(
                format!("token.keys.{field}"),
                if len == 65 {
                    "must be base64url of an uncompressed P-256 point (65 bytes starting 0x04)".to_owned()
                } else {
                    format!("must be base64url of {len} bytes")
                },
            )),
        }
    };
    let p256dh = key("p256dh", keys.p256dh.as_ref(), 65)?;
    let auth = key("auth", keys.auth.as_ref(), 16)?;
    Ok(serde_json::json!({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}).to_string())
}

/// A push service's endpoint: an https URL without user info or fragment, at most 2048
/// characters, on a public host; `allow_private_hosts` (tests) admits http and private
/// or loopback hosts. A name that resolves to a private address is refused when the
/// worker connects (its resolver is the guarded one).
fn check_endpoint(endpoint: &str, allow_private_hosts: bool) -> Result<(), &'static str> {
    if endpoint.len() > MAX_ENDPOINT || endpoint.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a URL of at most 2048 characters, without spaces");
    }
    let url = url::Url::parse(endpoint).map_err(|_| "must be an https URL")?;
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err("must not carry user info or a fragment");
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => crate::address::is_private_ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => crate::address::is_private_ip(ip.into()),
        None => return Err("must name a host"),
    };
    if allow_private_hosts {
        return if matches!(url.scheme(), "https" | "http") { Ok(()) } else { Err("must be an https URL") };
    }
    if url.scheme() != "https" {
        return Err("must be an https URL");
    }
    if host {
        return Err("must not name a private, loopback or link-local address");
    }
    Ok(())
}

/// A registered device as the API shows it: never its token, only a hint of it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Device {
    /// The app's id for the device.
    pub device_id: String,
    pub platform: Platform,
    /// FCM and APNs: the token's last 8 characters; Web Push: the endpoint's host.
    pub token_hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What a device's listing shows of its stored token.
pub fn token_hint(platform: Platform, token: &str) -> String {
    match platform {
        Platform::Webpush => serde_json::from_str::<serde_json::Value>(token)
            .ok()
            .and_then(|v| v["endpoint"].as_str().and_then(|e| url::Url::parse(e).ok()))
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default(),
        Platform::Fcm | Platform::Apns => {
            let start = token.len().saturating_sub(8);
            token.get(start..).unwrap_or_default().to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Content;

    fn fields(c: &Content, payload: bool) -> Vec<String> {
        let mut errors = Vec::new();
        check_content(c, "content", payload, &mut errors);
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_payload_is_the_push_fields_and_its_limit_names_the_largest() {
        let data = BTreeMap::from([("order".to_owned(), "42".to_owned())]);
        let c = Content {
            title: Some("Hi".into()),
            subject: Some("not pushed".into()),
            badge: Some(3),
            data: Some(data),
            ..Default::default()
        };
        assert_eq!(content_payload(&c).to_string(), r#"{"badge":3,"data":{"order":"42"},"title":"Hi"}"#);
        assert!(fields(&c, true).is_empty());

        let fits = MAX_CONTENT_BYTES - r#"{"body":""}"#.len();
        let c = Content { body: Some("x".repeat(fits)), ..Default::default() };
        assert!(fields(&c, true).is_empty());
        let c = Content { body: Some("x".repeat(fits + 1)), ..Default::default() };
        assert_eq!(fields(&c, true), ["content.body"]);
        assert!(fields(&c, false).is_empty(), "not a push: no payload limit");
        let big = BTreeMap::from([("blob".to_owned(), "y".repeat(3000))]);
        let c = Content { title: Some("t".repeat(1000)), data: Some(big), ..Default::default() };
        assert_eq!(fields(&c, true), ["content.data"]);
    }

    #[test]
    fn reserved_data_keys_and_bad_sounds_are_refused() {
        let data =
            |k: &str| Content { data: Some(BTreeMap::from([(k.to_owned(), "v".to_owned())])), ..Default::default() };
        assert!(fields(&data("order_id"), true).is_empty());
        for reserved in ["from", "message_type", "google.sent_time", "GCM_x"] {
            assert_eq!(fields(&data(reserved), true), [format!("content.data.{reserved}")]);
        }
        assert_eq!(fields(&data(""), false), ["content.data"]);
        let sound = |s: &str| Content { sound: Some(s.into()), ..Default::default() };
        assert!(fields(&sound("default"), true).is_empty());
        assert_eq!(fields(&sound(""), true), ["content.sound"]);
        assert_eq!(fields(&sound("a\nb"), true), ["content.sound"]);
    }

    #[test]
    fn images_are_https_urls() {
        assert_eq!(image_problem("https://cdn.example.com/a.png"), None);
        for bad in ["http://cdn.example.com/a.png", "/a.png", "data:image/png;base64,xx", "https:// x", ""] {
            assert!(image_problem(bad).is_some(), "{bad}");
        }
    }
}

#[cfg(test)]
mod device_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn debug_never_shows_a_token() {
        let secret = "fcm-token:APA91bSeCrEt_0123456789";
        let device = PushDevice {
            id: "phone-1".into(),
            platform: Platform::Fcm,
            token: secret.into(),
            app: Some("proj".into()),
        };
        let shown = format!("{device:?}");
        assert!(!shown.contains("SeCrEt") && shown.contains("phone-1") && shown.contains("33 bytes"), "{shown}");
        let input = DeviceInput {
            platform: Platform::Webpush,
            token: json!({"endpoint": "https://push.example/SeCrEt", "keys": {"p256dh": "SeCrEt", "auth": "SeCrEt"}}),
            app: None,
            locale: None,
            timezone: None,
        };
        assert!(!format!("{input:?}").contains("SeCrEt"), "{input:?}");
        let new = NewDevice { platform: Platform::Apns, token: secret.into(), app: None, locale: None, timezone: None };
        assert!(!format!("{new:?}").contains("SeCrEt"), "{new:?}");
    }

    const P256DH: &str = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM";
    const AUTH: &str = "tBHItJI5svbpez7KI4CCXg";

    fn input(platform: &str, token: serde_json::Value) -> DeviceInput {
        serde_json::from_value(json!({"platform": platform, "token": token})).unwrap()
    }

    fn fields(r: Result<NewDevice, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn fcm_tokens_are_checked_by_shape() {
        let ok = input("fcm", json!("dGVzdA:APA91bH-x_y.z")).validate(false).unwrap();
        assert_eq!(ok.token, "dGVzdA:APA91bH-x_y.z");
        for bad in [json!(""), json!("with space"), json!("a/b"), json!("x".repeat(4097)), json!(42)] {
            assert_eq!(fields(input("fcm", bad.clone()).validate(false)), ["token"], "{bad}");
        }
        assert!(input("fcm", json!("x".repeat(4096))).validate(false).is_ok());
    }

    #[test]
    fn apns_tokens_are_hex_and_stored_lower_case() {
        let token = "A1".repeat(32);
        assert_eq!(input("apns", json!(token)).validate(false).unwrap().token, "a1".repeat(32));
        assert!(input("apns", json!("ab".repeat(100))).validate(false).is_ok());
        for bad in ["ab".repeat(31), "abc".repeat(23), "zz".repeat(32), "ab".repeat(101)] {
            assert_eq!(fields(input("apns", json!(bad)).validate(false)), ["token"], "{bad}");
        }
    }

    #[test]
    fn webpush_subscriptions_are_checked_and_stored_compact() {
        let sub = json!({"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "expirationTime": null,
                         "keys": {"p256dh": P256DH, "auth": AUTH}});
        let stored = input("webpush", sub.clone()).validate(false).unwrap().token;
        assert_eq!(
            stored,
            format!(
                r#"{{"endpoint":"https://fcm.googleapis.com/fcm/send/abc","keys":{{"auth":"{AUTH}","p256dh":"{P256DH}"}}}}"#
            )
        );
        // The same as a string holding it, padded keys accepted.
        let padded = json!({"endpoint": "https://fcm.googleapis.com/fcm/send/abc",
                            "keys": {"p256dh": format!("{P256DH}="), "auth": format!("{AUTH}==")}});
        assert_eq!(input("webpush", json!(padded.to_string())).validate(false).unwrap().token, stored);
        assert_eq!(token_hint(Platform::Webpush, &stored), "fcm.googleapis.com");

        let with = |endpoint: &str, p256dh: &str, auth: &str| {
            input("webpush", json!({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}))
        };
        let https = "https://push.example.com/x";
        assert_eq!(fields(with("http://push.example.com/x", P256DH, AUTH).validate(false)), ["token.endpoint"]);
        assert_eq!(fields(with("https://127.0.0.1/x", P256DH, AUTH).validate(false)), ["token.endpoint"]);
        assert_eq!(fields(with("https://[::1]:8443/x", P256DH, AUTH).validate(false)), ["token.endpoint"]);
        assert_eq!(fields(with("https://localhost/x", P256DH, AUTH).validate(false)), ["token.endpoint"]);
        assert_eq!(fields(with("https://u:p@push.example.com/x", P256DH, AUTH).validate(false)), ["token.endpoint"]);
        assert!(with("http://127.0.0.1:9999/x", P256DH, AUTH).validate(true).is_ok());
        // p256dh: 65 bytes starting 0x04; auth: 16 bytes.
        let compressed = URL_SAFE_NO_PAD.encode([2u8; 33]);
        let not_04 = URL_SAFE_NO_PAD.encode([5u8; 65]);
        assert_eq!(fields(with(https, &compressed, AUTH).validate(false)), ["token.keys.p256dh"]);
        assert_eq!(fields(with(https, &not_04, AUTH).validate(false)), ["token.keys.p256dh"]);
        assert_eq!(fields(with(https, "not base64!", AUTH).validate(false)), ["token.keys.p256dh"]);
        assert_eq!(
            fields(with(https, P256DH, &URL_SAFE_NO_PAD.encode([1u8; 15])).validate(false)),
            ["token.keys.auth"]
        );
        for bad in [json!("not json"), json!(7), json!({"endpoint": https}), json!({"keys": {}}), json!("[]")] {
            assert_eq!(fields(input("webpush", bad.clone()).validate(false)), ["token"], "{bad}");
        }
    }

    #[test]
    fn app_locale_and_timezone_are_checked() {
        let bad: DeviceInput = serde_json::from_value(json!({"platform": "fcm", "token": "abc", "app": "",
            "locale": "english", "timezone": "Europe/Nowhere"}))
        .unwrap();
        assert_eq!(fields(bad.validate(false)), ["app", "locale", "timezone"]);
        let good: DeviceInput = serde_json::from_value(json!({"platform": "fcm", "token": "abc",
            "app": "com.example.app", "locale": "pt_br", "timezone": "Europe/Berlin"}))
        .unwrap();
        let good = good.validate(false).unwrap();
        assert_eq!(good.locale.as_deref(), Some("pt-BR"));
        assert_eq!(token_hint(Platform::Fcm, "0123456789abcdef"), "89abcdef");
        assert!(is_valid_device_id("iphone-1") && !is_valid_device_id("a/b") && !is_valid_device_id(""));
    }
}
