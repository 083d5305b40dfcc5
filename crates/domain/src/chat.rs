//! Chat addresses (Slack, Microsoft Teams, Discord): what a subscriber or a notification
//! may name, how each is checked, and the recipient a chat delivery carries:
//! `<provider>:<address>`, `slack:<Slack id>`, `slack_webhook:<sealed URL>`,
//! `teams:<sealed URL>`, `discord:<sealed URL>`. Webhook URLs are secrets (whoever holds
//! one can post): they are sealed before they are stored, with [`SEAL_PURPOSE`] and the
//! tenant bound in, and opened by the worker right before the provider sends.

use serde::{Deserialize, Serialize, Serializer, ser::SerializeMap};

use crate::FieldError;

/// The purpose a chat webhook URL is sealed under.
pub const SEAL_PURPOSE: &str = "chat-address";

/// Longest chat text: Slack's limit for a message's `text` (Discord's 2,000 is its
/// provider's to enforce at send).
pub const MAX_TEXT_CHARS: usize = 40_000;
/// Largest `structured` document, serialized.
pub const MAX_STRUCTURED_BYTES: usize = 16 * 1024;
/// Slack's limit on blocks per message.
pub const MAX_SLACK_BLOCKS: usize = 50;
/// Discord's limit on embeds per message.
pub const MAX_DISCORD_EMBEDS: usize = 10;

/// A subscriber's chat addresses as given (`"chat": {"slack": "U024BE7LH"}`), all optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatInput {
    /// A Slack channel id (`C…`, `G…`) or user id (`U…`, `W…`) for the tenant's bot, or a
    /// Slack incoming webhook URL (`https://hooks.slack.com/services/…`).
    #[serde(default)]
    pub slack: Option<String>,
    /// A Microsoft Teams Workflows webhook URL (`https://….logic.azure.com/…`,
    /// `https://….api.powerplatform.com/…`; legacy `https://….webhook.office.com/…`).
    #[serde(default)]
    pub teams: Option<String>,
    /// A Discord webhook URL (`https://discord.com/api/webhooks/…`).
    #[serde(default)]
    pub discord: Option<String>,
}

/// Where one chat address goes once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Slack channel or user id: `slack:<id>`, stored in clear.
    SlackId(String),
    /// A webhook URL of `provider` (`slack_webhook`, `teams`, `discord`): sealed before it
    /// is stored, `<provider>:<sealed>`.
    Webhook { provider: &'static str, url: String },
}

impl Target {
    /// The delivery's recipient, given how a webhook URL is sealed.
    pub fn recipient(&self, seal: impl FnOnce(&str) -> String) -> StoredChatAddress {
        match self {
            Target::SlackId(id) => StoredChatAddress { to: format!("slack:{id}"), last4: None },
            Target::Webhook { provider, url } => {
                let last4: String = url.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
                StoredChatAddress { to: format!("{provider}:{}", seal(url)), last4: Some(last4) }
            }
        }
    }
}

/// A subscriber's chat addresses as stored: per key (`slack`, `teams`, `discord`), the
/// recipient its deliveries get (webhook URLs sealed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredChat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<StoredChatAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<StoredChatAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<StoredChatAddress>,
}

impl StoredChat {
    /// The recipients, in the order their deliveries are planned: Slack, Teams, Discord.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        [&self.slack, &self.teams, &self.discord].into_iter().flatten().map(|a| a.to.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.recipients().next().is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredChatAddress {
    /// The recipient: `slack:U…`, or `<provider>:<sealed URL>`.
    pub to: String,
    /// The webhook URL's last four characters, to tell URLs apart without showing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
}

/// A subscriber's chat addresses as the API shows them: a Slack id as is, a webhook as
/// `{"webhook": true, "last4": "…"}` (its URL is never returned).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatView(pub StoredChat);

impl Serialize for ChatView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Shown<'a> {
            Id(&'a str),
            Webhook { webhook: bool, last4: &'a str },
        }
        let entries = [("slack", &self.0.slack), ("teams", &self.0.teams), ("discord", &self.0.discord)];
        let present: Vec<_> = entries.iter().filter_map(|(k, a)| a.as_ref().map(|a| (*k, a))).collect();
        let mut map = s.serialize_map(Some(present.len()))?;
        for (key, address) in present {
            match address.to.strip_prefix("slack:") {
                Some(id) => map.serialize_entry(key, &Shown::Id(id))?,
                None => map.serialize_entry(
                    key,
                    &Shown::Webhook { webhook: true, last4: address.last4.as_deref().unwrap_or_default() },
                )?,
            }
        }
        map.end()
    }
}

impl ChatInput {
    /// Checks each address, naming `{prefix}.slack` etc.; `allow_private_hosts` (tests)
    /// lets webhook URLs be `http` and point at any host.
    pub fn check(&self, prefix: &str, allow_private_hosts: bool, errors: &mut Vec<FieldError>) -> Targets {
        let mut targets = Vec::new();
        for (key, value) in [(Key::Slack, &self.slack), (Key::Teams, &self.teams), (Key::Discord, &self.discord)] {
            let Some(value) = value else { continue };
            match check_address(key, value, allow_private_hosts) {
                Ok(target) => targets.push((key, target)),
                Err(why) => errors.push(FieldError::new(format!("{prefix}.{}", key.as_str()), why)),
            }
        }
        targets
    }
}

/// Chat addresses once checked, each with the key it was given under.
pub type Targets = Vec<(Key, Target)>;

/// The keys of a subscriber's `chat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Slack,
    Teams,
    Discord,
}

impl Key {
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Slack => "slack",
            Key::Teams => "teams",
            Key::Discord => "discord",
        }
    }
}

/// Checks one chat address given under `key`.
pub fn check_address(key: Key, value: &str, allow_private_hosts: bool) -> Result<Target, &'static str> {
    match key {
        Key::Slack if is_slack_id(value) => Ok(Target::SlackId(value.to_owned())),
        Key::Slack if value.contains("://") => {
            check_webhook(value, &["hooks.slack.com"], &[], "/services/", allow_private_hosts)
                .map(|url| Target::Webhook { provider: "slack_webhook", url })
        }
        Key::Slack => Err("must be a Slack channel id (C…, G…), a user id (U…, W…) or an https://hooks.slack.com/ URL"),
        Key::Teams => check_webhook(
            value,
            &[],
            &[".logic.azure.com", ".api.powerplatform.com", ".webhook.office.com"],
            "/",
            allow_private_hosts,
        )
        .map(|url| Target::Webhook { provider: "teams", url }),
        Key::Discord => {
            check_webhook(value, &["discord.com", "discordapp.com"], &[], "/api/webhooks/", allow_private_hosts)
                .map(|url| Target::Webhook { provider: "discord", url })
        }
    }
}

/// A Slack conversation or user id: a capital C, G, D (conversations) or U, W (users)
/// followed by 8 to 20 capital letters and digits.
pub fn is_slack_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('C' | 'G' | 'D' | 'U' | 'W'))
        && (9..=21).contains(&s.len())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// `url` if it is an https URL on one of `hosts` (exactly) or a subdomain ending in one of
/// `suffixes`, whose path starts with `path`. No user info, no IP literal, no `localhost`
/// (a host of the provider's is neither). With `allow_private_hosts` any http(s) URL with a
/// host will do: stand-ins in tests run on loopback.
fn check_webhook(
    url: &str,
    hosts: &[&str],
    suffixes: &[&str],
    path: &str,
    allow_private_hosts: bool,
) -> Result<String, &'static str> {
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a URL of at most 2048 characters, without spaces");
    }
    let rest = match url.strip_prefix("https://") {
        Some(rest) => rest,
        None if allow_private_hosts && url.starts_with("http://") => &url["http://".len()..],
        None => return Err("must be an https URL"),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') || authority.is_empty() {
        return Err("must name a host, without user info");
    }
    if allow_private_hosts {
        return Ok(url.to_owned());
    }
    let host = authority.split(':').next().unwrap_or_default().to_ascii_lowercase();
    let ours = hosts.contains(&host.as_str())
        || suffixes
            .iter()
            .any(|s| host.ends_with(s) && host.len() > s.len() && !host[..host.len() - s.len()].ends_with('.'));
    if !ours {
        return Err("must be a webhook URL on the provider's own host");
    }
    if !tail.starts_with(path) || tail.len() <= path.len() {
        return Err("is not a webhook URL of this provider (unexpected path)");
    }
    Ok(url.to_owned())
}

/// The provider prefix and the address of a chat recipient (`discord:v1.…`).
pub fn split(recipient: &str) -> Option<(&str, &str)> {
    recipient.split_once(':')
}

/// Whether a chat recipient's address is sealed (a webhook URL) rather than in clear.
pub fn is_sealed(address: &str) -> bool {
    address.starts_with("v1.")
}

/// Checks chat content: `text` at most [`MAX_TEXT_CHARS`]; `structured` an object of at
/// most [`MAX_STRUCTURED_BYTES`] with only `slack` (at most 50 blocks), `teams` (an
/// Adaptive Card object) and `discord` (at most 10 embeds). Errors name `{prefix}.text`,
/// `{prefix}.structured…`.
pub fn check_content(text: Option<&str>, structured: Option<&serde_json::Value>, prefix: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match text {
        None | Some("") => errors.push(FieldError::new(format!("{prefix}.text"), "is required for the chat channel")),
        Some(t) if t.chars().count() > MAX_TEXT_CHARS => errors.push(FieldError::new(
            format!("{prefix}.text"),
            format!("at most {MAX_TEXT_CHARS} characters for the chat channel"),
        )),
        Some(_) => {}
    }
    if let Some(value) = structured {
        errors.extend(check_structured(value, &format!("{prefix}.structured")));
    }
    errors
}

/// Checks a structured chat document (see [`check_content`]), naming fields under `field`.
pub fn check_structured(value: &serde_json::Value, field: &str) -> Vec<FieldError> {
    let at = |k: &str| format!("{field}.{k}");
    let len = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if len > MAX_STRUCTURED_BYTES {
        return vec![FieldError::new(field, format!("at most {} KiB when serialized", MAX_STRUCTURED_BYTES / 1024))];
    }
    // PostgreSQL's jsonb cannot hold a NUL character (a template can render one).
    if serde_json::to_string(value).is_ok_and(|t| t.contains("\\u0000")) {
        return vec![FieldError::new(field, "must not contain a NUL character")];
    }
    let Some(map) = value.as_object() else {
        return vec![FieldError::new(field, "must be an object with `slack`, `teams` or `discord`")];
    };
    let mut errors = Vec::new();
    for (key, v) in map {
        match (key.as_str(), v) {
            ("slack", serde_json::Value::Array(blocks)) if blocks.len() > MAX_SLACK_BLOCKS => {
                errors.push(FieldError::new(at(key), format!("at most {MAX_SLACK_BLOCKS} blocks")))
            }
            ("discord", serde_json::Value::Array(embeds)) if embeds.len() > MAX_DISCORD_EMBEDS => {
                errors.push(FieldError::new(at(key), format!("at most {MAX_DISCORD_EMBEDS} embeds")))
            }
            ("slack" | "discord", serde_json::Value::Array(_)) | ("teams", serde_json::Value::Object(_)) => {}
            ("slack", _) => errors.push(FieldError::new(at(key), "must be an array of Block Kit blocks")),
            ("discord", _) => errors.push(FieldError::new(at(key), "must be an array of embeds")),
            ("teams", _) => errors.push(FieldError::new(at(key), "must be an Adaptive Card object")),
            _ => errors.push(FieldError::new(at(key), "only `slack`, `teams` and `discord` are known")),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn slack_ids_and_webhooks_of_the_providers_hosts_only() {
        for id in ["U024BE7LH", "C0123456789", "G12345678", "W0123ABCDEF"] {
            assert_eq!(check_address(Key::Slack, id, false), Ok(Target::SlackId(id.into())), "{id}");
        }
        for bad in ["u024be7lh", "X024BE7LH", "U12", "#general", ""] {
            assert!(check_address(Key::Slack, bad, false).is_err(), "{bad}");
        }
        let good = [
            (Key::Slack, "https://hooks.slack.com/services/T0/B0/XXXX", "slack_webhook"),
            (Key::Discord, "https://discord.com/api/webhooks/1/abc", "discord"),
            (Key::Discord, "https://discordapp.com/api/webhooks/1/abc", "discord"),
            (Key::Teams, "https://prod-01.westus.logic.azure.com/workflows/x?sig=y", "teams"),
            (Key::Teams, "https://x.api.powerplatform.com/powerautomate/y", "teams"),
            (Key::Teams, "https://contoso.webhook.office.com/webhookb2/z", "teams"),
        ];
        for (key, url, provider) in good {
            assert_eq!(check_address(key, url, false), Ok(Target::Webhook { provider, url: url.into() }), "{url}");
        }
        let bad = [
            (Key::Discord, "http://discord.com/api/webhooks/1/abc"),
            (Key::Discord, "https://discord.com.evil.example/api/webhooks/1/abc"),
            (Key::Discord, "https://evil.example/api/webhooks/1/abc"),
            (Key::Discord, "https://discord.com/other"),
            (Key::Discord, "https://user@discord.com/api/webhooks/1/abc"),
            (Key::Discord, "https://127.0.0.1/api/webhooks/1/abc"),
            (Key::Teams, "https://localhost/x"),
            (Key::Teams, "https://logic.azure.com/x"),
            (Key::Teams, "https://evil-logic.azure.com.example/x"),
            (Key::Slack, "https://hooks.slack.com.evil.example/services/x"),
            (Key::Slack, "https://10.0.0.1/services/x"),
        ];
        for (key, url) in bad {
            assert!(check_address(key, url, false).is_err(), "{url}");
        }
        // Tests' stand-ins: loopback over http, when the operator allows it.
        assert!(check_address(Key::Discord, "http://127.0.0.1:9999/api/webhooks/1/abc", true).is_ok());
    }

    #[test]
    fn a_webhook_is_shown_without_its_url() {
        let stored = StoredChat {
            slack: Some(Target::SlackId("U024BE7LH".into()).recipient(|_| unreachable!())),
            discord: Some(
                Target::Webhook { provider: "discord", url: "https://discord.com/api/webhooks/1/abcd".into() }
                    .recipient(|_| "v1.k.sealed".into()),
            ),
            teams: None,
        };
        assert_eq!(stored.recipients().collect::<Vec<_>>(), ["slack:U024BE7LH", "discord:v1.k.sealed"]);
        assert_eq!(
            serde_json::to_value(ChatView(stored)).unwrap(),
            json!({"slack": "U024BE7LH", "discord": {"webhook": true, "last4": "abcd"}})
        );
    }

    #[test]
    fn structured_content_is_checked_by_provider() {
        assert!(
            check_content(Some("hi"), Some(&json!({"slack": [], "teams": {}, "discord": []})), "content").is_empty()
        );
        let fields = |v: serde_json::Value| -> Vec<String> {
            check_content(Some("hi"), Some(&v), "content").into_iter().map(|e| e.field).collect()
        };
        assert_eq!(fields(json!([])), ["content.structured"]);
        assert_eq!(fields(json!({"slack": {}, "other": 1})), ["content.structured.other", "content.structured.slack"]);
        assert_eq!(fields(json!({"discord": vec![json!({}); 11]})), ["content.structured.discord"]);
        assert_eq!(fields(json!({"slack": vec![json!({"type": "divider"}); 51]})), ["content.structured.slack"]);
        assert_eq!(fields(json!({"teams": {"body": "x".repeat(17 * 1024)}})), ["content.structured"]);
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(check_content(Some(&long), None, "content")[0].field, "content.text");
    }
}
