//! The push channel's vocabulary: a subscriber's devices and what a push provider is
//! given of one. A push delivery's recipient is the device's id (as the app chose it,
//! unique per subscriber); the worker's claim reads the device it names, so a token the
//! app refreshed since the accept is the one used.

use serde::{Deserialize, Serialize};

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

/// A device as a push provider needs it: claimed with its delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
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
