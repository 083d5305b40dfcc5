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
/// Discord's limit on a message's `content`, in characters.
pub const MAX_DISCORD_TEXT_CHARS: usize = 2000;
/// Teams refuses a message over about 28 KB.
pub const MAX_TEAMS_PAYLOAD_BYTES: usize = 28 * 1024;

/// The text Discord is sent: `@everyone` and `@here` with a zero-width space after the
/// `@`, shown alike, never a mention.
pub fn discord_text(text: &str) -> String {
    text.replace("@everyone", "@\u{200B}everyone").replace("@here", "@\u{200B}here")
}

/// The message a Teams Workflows webhook is posted: `structured` (the `teams` card) as
/// given, else an Adaptive Card 1.4 of `text`.
pub fn teams_payload(text: &str, card: Option<&serde_json::Value>) -> serde_json::Value {
    let card = card.cloned().unwrap_or_else(|| {
        serde_json::json!({
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [{"type": "TextBlock", "text": text, "wrap": true}],
        })
    });
    serde_json::json!({
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card}],
    })
}

/// Why `text`/`structured` cannot be sent by the chat `provider` as a message, if so: over
/// Discord's 2,000 characters, or a Teams message over 28 KB. The provider checks the
/// same before sending; the API checks inline content against inline webhooks at accept.
pub fn over_provider_limit(provider: &str, text: &str, structured: Option<&serde_json::Value>) -> Option<String> {
    match provider {
        "discord" => {
            let chars = discord_text(text).chars().count();
            (chars > MAX_DISCORD_TEXT_CHARS)
                .then(|| format!("the text is {chars} characters, Discord takes at most {MAX_DISCORD_TEXT_CHARS}"))
        }
        "teams" => {
            let card = structured.and_then(|s| s.get("teams")).filter(|v| !v.is_null());
            let bytes = teams_payload(text, card).to_string().len();
            (bytes > MAX_TEAMS_PAYLOAD_BYTES)
                .then(|| format!("the card is {bytes} bytes, Teams takes at most {MAX_TEAMS_PAYLOAD_BYTES}"))
        }
        _ => None,
    }
}

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
    let webhook = |kind: Webhook| {
        kind.url(value, allow_private_hosts).map(|_| Target::Webhook { provider: kind.name(), url: value.to_owned() })
    };
    match key {
        Key::Slack if is_slack_id(value) => Ok(Target::SlackId(value.to_owned())),
        Key::Slack if value.contains("://") => webhook(Webhook::Slack),
        Key::Slack => Err("must be a Slack channel id (C…, G…), a user id (U…, W…) or an https://hooks.slack.com/ URL"),
        Key::Teams => webhook(Webhook::Teams),
        Key::Discord => webhook(Webhook::Discord),
    }
}

/// A Slack conversation or user id: a capital C, G, D (conversations) or U, W (users)
/// followed by 8 to 20 capital letters and digits. The one rule, at accept and at send.
pub fn is_slack_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('C' | 'G' | 'D' | 'U' | 'W'))
        && (9..=21).contains(&s.len())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The kinds of chat webhook, by the hosts their provider issues them on. Their URL rule
/// ([`Webhook::url`]) is the one the API applies when an address is given and the
/// provider applies again before each send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    Slack,
    Teams,
    Discord,
}

impl Webhook {
    /// Its provider's name, the recipient's prefix.
    pub fn name(self) -> &'static str {
        match self {
            Webhook::Slack => "slack_webhook",
            Webhook::Teams => "teams",
            Webhook::Discord => "discord",
        }
    }

    fn host_allowed(self, host: &str) -> bool {
        let under = |domain: &str| host.strip_suffix(domain).is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'));
        match self {
            Webhook::Slack => matches!(host, "hooks.slack.com" | "hooks.slack-gov.com"),
            // Workflows ("When a Teams webhook request is received"): Logic Apps hosts, and
            // Power Platform environments for newer flows. Office 365 connector URLs
            // (`*.webhook.office.com`) are refused: Microsoft retired them.
            Webhook::Teams => under("logic.azure.com") || under("powerplatform.com"),
            Webhook::Discord => {
                matches!(host, "discord.com" | "discordapp.com" | "canary.discord.com" | "ptb.discord.com")
            }
        }
    }

    fn path_allowed(self, path: &str) -> bool {
        match self {
            Webhook::Slack => path.strip_prefix("/services/").is_some_and(|rest| !rest.is_empty()),
            Webhook::Teams => path.len() > 1,
            // `/api/webhooks/…` and the versioned `/api/v10/webhooks/…`.
            Webhook::Discord => path.starts_with("/api/") && path.contains("/webhooks/"),
        }
    }

    /// `address` if it is a webhook URL this provider issues: at most 2048 characters
    /// without spaces, https on the standard port at one of its hosts, on its path, no
    /// user info or fragment. `allow_private_hosts` (tests only: stand-ins on the loopback)
    /// waives the host, path, port and https.
    pub fn url(self, address: &str, allow_private_hosts: bool) -> Result<url::Url, &'static str> {
        if address.len() > 2048 || address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must be a URL of at most 2048 characters, without spaces");
        }
        let url = url::Url::parse(address).map_err(|_| "must be an https URL")?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err("must be an https URL");
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err("must not carry user info or a fragment");
        }
        let Some(host) = url.host_str() else { return Err("must name a host") };
        if allow_private_hosts {
            return Ok(url);
        }
        if url.scheme() != "https" || url.port().is_some() {
            return Err("must be an https URL on the standard port");
        }
        if !self.host_allowed(&host.to_ascii_lowercase()) {
            return Err("must be a webhook URL on the provider's own host");
        }
        if !self.path_allowed(url.path()) {
            return Err("is not a webhook URL of this provider (unexpected path)");
        }
        Ok(url)
    }
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
            (Key::Slack, "https://hooks.slack-gov.com/services/T0/B0/XXXX", "slack_webhook"),
            (Key::Discord, "https://discord.com/api/v10/webhooks/1/abc", "discord"),
            (Key::Discord, "https://discord.com:443/api/webhooks/1/abc", "discord"),
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
            (Key::Slack, "https://hooks.slack.com/other/x"),
            // The port counts: a provider's host on another port is not the provider.
            (Key::Discord, "https://discord.com:8443/api/webhooks/1/abc"),
            (Key::Slack, "https://hooks.slack.com:444/services/T0/B0/XXXX"),
            // Office 365 connector URLs, retired by Microsoft: refused when given, as at send.
            (Key::Teams, "https://contoso.webhook.office.com/webhookb2/z"),
            (Key::Discord, "https://discord.com/api/webhooks/1/abc#frag"),
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
