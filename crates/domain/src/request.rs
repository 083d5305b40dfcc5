//! `POST /v1/notifications`: the request body and the checks that need no database.
//! Working out the deliveries (subscribers, topics, types, templates, preferences) is
//! [`crate::plan`]'s.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::{Channel, Priority, address};

/// Entries in `to` (a topic counts as one, whatever its size).
pub const MAX_RECIPIENTS: usize = 100;
/// Serialized size of `data`.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Tags of one notification.
pub const MAX_TAGS: usize = 10;
/// Longest SMS or WhatsApp body a provider accepts (Twilio and SNS: 1600 characters).
pub const MAX_TEXT_MESSAGE_CHARS: usize = 1600;
/// Largest field of content, inline or rendered (an email's `html` included; Gmail clips
/// a message past 102 KB).
pub const MAX_CONTENT_FIELD_BYTES: usize = 128 * 1024;

// `notify-client` sends this same type (hence `Serialize`).
/// A notification to send: what happened, to whom, over which channels, with what.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNotification {
    /// What happened, as a dotted name (`invoice.overdue`); Novu's workflow key.
    #[serde(rename = "type")]
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,200}$")]
    pub kind: String,
    /// 1 to 100 recipients: addresses, subscribers by id, topics. Without it and without
    /// `audience`, the audience of the error class (`PUT /v1/classifications`) or of the type.
    #[serde(default, deserialize_with = "crate::object::list")]
    pub to: Vec<Recipient>,
    /// Instead of `to`: every member of the tenant's `customer` or `support` topic.
    #[serde(default)]
    pub audience: Option<Audience>,
    /// Default: the type's channels; for a type the tenant has not defined, every channel
    /// some recipient has an address for.
    #[serde(default)]
    #[schema(min_items = 1)]
    pub channels: Option<Vec<Channel>>,
    /// Free data, at most 64 KiB; Novu's payload.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    /// Inline content for every channel; without it, the type's templates render it.
    #[serde(default, deserialize_with = "crate::object::optional")]
    pub content: Option<Content>,
    /// Default: the priority the tenant's classification gives the error class (of a
    /// notification that names no recipients, or names its error class), else the
    /// severity's (`critical` urgent, `high` high, `medium` normal, `low` low), else `normal`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// How bad the condition this notification reports is; stored, shown and filterable.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Your code for the error this notification reports (`VENDOR_NAME_MISSING`); stored,
    /// shown and filterable.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,200}$")]
    pub error_code: Option<String>,
    /// The class of that error (`validation`, `mapping`, `auth`, `system`, or your own);
    /// default: the type's. Without `to` or `audience`, the tenant's classification of it
    /// (`PUT /v1/classifications`) names the audience, and its priority is the default.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,200}$")]
    pub error_class: Option<String>,
    /// When to send; in the past means now; at most 90 days ahead (configurable).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub send_at: Option<OffsetDateTime>,
    /// Labels of the in-app inbox items (at most 10), which the inbox can filter by.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub tags: Vec<String>,
    /// Your own reference, to find the notification again (`GET /v1/notifications?correlation_id=`).
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Makes a retried request safe: the same key and body answer the first request's
    /// result. Also accepted as the `Idempotency-Key` header.
    #[serde(default)]
    #[schema(pattern = "^[!-~]{1,255}$")]
    pub idempotency_key: Option<String>,
}

/// One entry of `to`: a subscriber by id (its stored addresses, which addresses given
/// here override), addresses alone, or every member of a topic (`{"topic": "support"}`,
/// nothing else). A `subscriber_id` is also the recipient's id in Novu.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub subscriber_id: Option<String>,
    pub email: Option<String>,
    /// E.164, for SMS.
    #[schema(pattern = "^\\+[1-9][0-9]{1,14}$")]
    pub phone: Option<String>,
    /// E.164, for WhatsApp.
    #[schema(pattern = "^\\+[1-9][0-9]{1,14}$")]
    pub whatsapp: Option<String>,
    /// A Slack channel (or user) id for the tenant's Slack bot, for the chat channel.
    pub slack_channel: Option<String>,
    /// A Slack incoming webhook URL, for the chat channel; stored encrypted.
    pub slack_webhook: Option<String>,
    /// A Microsoft Teams Workflows webhook URL, for the chat channel; stored encrypted.
    pub teams_webhook: Option<String>,
    /// A Discord webhook URL, for the chat channel; stored encrypted.
    pub discord_webhook: Option<String>,
    pub topic: Option<String>,
}

impl Recipient {
    /// Whether an address is given inline (not just an id or a topic).
    pub fn has_inline_address(&self) -> bool {
        self.email.is_some() || self.phone.is_some() || self.whatsapp.is_some() || self.chat_inline()
    }

    /// Whether a chat destination is given inline (it replaces a subscriber's chat addresses).
    pub fn chat_inline(&self) -> bool {
        self.slack_channel.is_some()
            || self.slack_webhook.is_some()
            || self.teams_webhook.is_some()
            || self.discord_webhook.is_some()
    }

    /// The inline webhook URLs (or, once the API sealed them, their sealed values), by field.
    pub fn webhooks_mut(&mut self) -> [(&'static str, &mut Option<String>); 3] {
        [
            ("slack_webhook", &mut self.slack_webhook),
            ("teams_webhook", &mut self.teams_webhook),
            ("discord_webhook", &mut self.discord_webhook),
        ]
    }
}

/// Who a notification without `to` goes to: the members of the tenant's topic of that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Customer,
    Support,
}

impl Audience {
    /// Its topic, which is also its name.
    pub fn topic(self) -> &'static str {
        self.as_str()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Customer => "customer",
            Audience::Support => "support",
        }
    }

    pub fn parse(s: &str) -> Option<Audience> {
        [Audience::Customer, Audience::Support].into_iter().find(|a| a.as_str() == s)
    }
}

/// Content, given inline or rendered from a template (a template holds the same fields as
/// minijinja sources). Email needs `subject` and `text` or `html`; SMS and WhatsApp need
/// `text`; chat needs `text` and may add `structured`; the in-app inbox uses `title`,
/// `body` and `action_url`; push uses `title`, `body`, `action_url`, `image`, `sound`,
/// `badge` and `data`; Novu renders in its own workflow and takes the notification's
/// `data` as its payload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_url: Option<String>,
    /// Chat only: per provider, what it shows instead of plain text, as that provider's
    /// JSON: `{"slack": [Block Kit blocks], "teams": {Adaptive Card}, "discord": [embeds]}`
    /// (at most 16 KiB). A provider without its key sends `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub structured: Option<serde_json::Value>,
    /// Push only: an image URL shown with the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Push only: the sound to play (`default`, or a sound file the app bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    /// Push only: the app icon's badge count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Int64, maximum = 4294967295.0)]
    pub badge: Option<u32>,
    /// Push only: key/value pairs the app receives with the notification (strings only,
    /// as FCM requires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<std::collections::BTreeMap<String, String>>,
}

/// One rejected field, named by its JSON path (`to[2].email`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// How bad the condition a notification reports is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Low, Severity::Medium, Severity::High, Severity::Critical].into_iter().find(|v| v.as_str() == s)
    }

    /// The priority a notification of this severity gets when nothing else sets one.
    pub fn priority(self) -> Priority {
        match self {
            Severity::Low => Priority::Low,
            Severity::Medium => Priority::Normal,
            Severity::High => Priority::High,
            Severity::Critical => Priority::Urgent,
        }
    }
}

/// A notification that passed the checks that need no database.
#[derive(Clone, Debug)]
pub struct ValidNotification {
    pub kind: String,
    /// The request's, else its severity's, else `normal`; a classification may still set
    /// it when the request named none ([`ValidNotification::priority_given`]).
    pub priority: Priority,
    pub priority_given: bool,
    pub severity: Option<Severity>,
    pub error_code: Option<String>,
    pub error_class: Option<String>,
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Inline content; `None`: the type's templates.
    pub content: Option<Content>,
    /// `None` means now; a time in the past is treated as now.
    pub send_at: Option<OffsetDateTime>,
    pub correlation_id: Option<String>,
    /// The channels asked for, de-duplicated; `None`: the type's.
    pub channels: Option<Vec<Channel>>,
    /// The recipients; an `audience` became its topic.
    pub to: Vec<Recipient>,
    pub tags: Vec<String>,
}

impl ValidNotification {
    pub fn subscriber_ids(&self) -> impl Iterator<Item = &str> {
        self.to.iter().filter(|r| r.topic.is_none()).filter_map(|r| r.subscriber_id.as_deref())
    }

    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.to.iter().filter_map(|r| r.topic.as_deref())
    }
}

/// Limits that are configuration rather than contract.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How far ahead `send_at` may be.
    pub max_schedule_ahead: Duration,
    /// Render steps one request may spend on its templates in all (`plan::Budget`).
    pub render_fuel: u64,
    /// Inline chat webhook URLs may be http and point at any host (tests' stand-ins).
    pub allow_private_hosts: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_schedule_ahead: Duration::days(90),
            render_fuel: crate::plan::RENDER_FUEL_PER_REQUEST,
            allow_private_hosts: false,
        }
    }
}

impl NewNotification {
    /// Checks everything that can be checked without the database. Every problem is
    /// reported, not just the first.
    pub fn validate(self, limits: Limits, now: OffsetDateTime) -> Result<ValidNotification, Vec<FieldError>> {
        let mut errors = Vec::new();

        if !crate::notification_type::is_valid_key(&self.kind) {
            errors.push(FieldError::new("type", "must be 1 to 200 letters, digits and . _ - : /"));
        }

        let mut to = self.to;
        match (to.is_empty(), self.audience) {
            // The audience of its error class or type, which the accept reads (or it is
            // refused there, naming `to`).
            (true, None) => {}
            (true, Some(audience)) => {
                to.push(Recipient { topic: Some(audience.topic().to_owned()), ..Default::default() })
            }
            (false, Some(_)) => errors.push(FieldError::new("audience", "give either `to` or `audience`, not both")),
            (false, None) if to.len() > MAX_RECIPIENTS => {
                errors.push(FieldError::new("to", format!("at most {MAX_RECIPIENTS} recipients")))
            }
            (false, None) => {}
        }
        for (i, r) in to.iter().enumerate() {
            check_recipient(i, r, limits.allow_private_hosts, &mut errors);
            // Inline content to an inline webhook: a provider's own limit is known now, so a
            // message it would refuse is refused here rather than failed at send (subscribers'
            // webhooks and rendered templates are checked when planning).
            if let Some(content) = &self.content {
                let text = content.text.as_deref().unwrap_or("");
                for (provider, given) in [("discord", &r.discord_webhook), ("teams", &r.teams_webhook)] {
                    if given.is_none() {
                        continue;
                    }
                    if let Some(why) = crate::chat::over_provider_limit(provider, text, content.structured.as_ref()) {
                        // Structured content is small (16 KiB): only the text can be too long.
                        errors
                            .push(FieldError::new("content.text", format!("{why} (to[{i}] is a {provider} webhook)")));
                    }
                }
            }
        }

        let channels = match self.channels {
            Some(list) if list.is_empty() => {
                errors.push(FieldError::new("channels", "must name at least one channel when given"));
                None
            }
            Some(list) => Some(dedup(list)),
            None => None,
        };

        // Inline content must suit every channel asked for; with the type's channels it is
        // checked once they are known.
        if let (Some(content), Some(channels)) = (&self.content, &channels) {
            for channel in channels {
                check_content(*channel, content, "content", &mut errors);
            }
        }
        // Whether http is allowed is the tenant's to say, checked when planning.
        if let Some(content) = &self.content {
            check_action_url(content, "content", true, &mut errors);
        }

        let data = self.data.unwrap_or_default();
        let data_len = serde_json::to_vec(&data).map(|v| v.len()).unwrap_or(usize::MAX);
        if data_len > MAX_DATA_BYTES {
            errors.push(FieldError::new("data", format!("at most {} KiB when serialized", MAX_DATA_BYTES / 1024)));
        }

        if let Some(at) = self.send_at
            && at > now + limits.max_schedule_ahead
        {
            errors.push(FieldError::new(
                "send_at",
                format!("at most {} days ahead", limits.max_schedule_ahead.whole_days()),
            ));
        }

        if self.tags.len() > MAX_TAGS {
            errors.push(FieldError::new("tags", format!("at most {MAX_TAGS} tags")));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if !crate::notification_type::is_valid_key(tag) {
                errors.push(FieldError::new(format!("tags[{i}]"), "must be 1 to 200 letters, digits and . _ - : /"));
            }
        }

        if let Some(c) = &self.correlation_id
            && (c.is_empty() || c.len() > 200)
        {
            errors.push(FieldError::new("correlation_id", "must be 1 to 200 characters"));
        }
        for (field, value) in [("error_code", &self.error_code), ("error_class", &self.error_class)] {
            if value.as_ref().is_some_and(|v| !crate::notification_type::is_valid_key(v)) {
                errors.push(FieldError::new(field, "must be 1 to 200 letters, digits and . _ - : /"));
            }
        }
        if let Some(k) = &self.idempotency_key
            && !is_valid_idempotency_key(k)
        {
            errors.push(FieldError::new("idempotency_key", "must be 1 to 255 printable ASCII characters"));
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ValidNotification {
            kind: self.kind,
            priority: self.priority.or(self.severity.map(Severity::priority)).unwrap_or_default(),
            priority_given: self.priority.is_some(),
            severity: self.severity,
            error_code: self.error_code,
            error_class: self.error_class,
            data,
            content: self.content,
            send_at: self.send_at.filter(|at| *at > now),
            correlation_id: self.correlation_id,
            channels,
            to,
            tags: self.tags,
        })
    }
}

/// An idempotency key: 1 to 255 printable ASCII characters (it also travels as a header).
pub fn is_valid_idempotency_key(k: &str) -> bool {
    (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn dedup(mut v: Vec<Channel>) -> Vec<Channel> {
    let mut seen = Vec::with_capacity(v.len());
    v.retain(|c| {
        let new = !seen.contains(c);
        seen.push(*c);
        new
    });
    v
}

fn check_recipient(i: usize, r: &Recipient, allow_private_hosts: bool, errors: &mut Vec<FieldError>) {
    let at = |f: &str| format!("to[{i}].{f}");
    if let Some(topic) = &r.topic {
        if r.subscriber_id.is_some() || r.has_inline_address() {
            errors.push(FieldError::new(at("topic"), "a topic entry names the topic and nothing else"));
        }
        if !crate::notification_type::is_valid_key(topic) {
            errors.push(FieldError::new(at("topic"), "must be 1 to 200 letters, digits and . _ - : /"));
        }
        return;
    }
    if r.subscriber_id.is_none() && !r.has_inline_address() {
        errors.push(FieldError::new(
            format!("to[{i}]"),
            "needs at least one of subscriber_id, email, phone, whatsapp, slack_channel, a chat webhook, topic",
        ));
    }
    let given = [&r.slack_channel, &r.slack_webhook, &r.teams_webhook, &r.discord_webhook];
    if given.iter().filter(|v| v.is_some()).count() > 1 {
        errors.push(FieldError::new(format!("to[{i}]"), "names at most one chat destination"));
    }
    for (field, key, value) in [
        ("slack_webhook", crate::chat::Key::Slack, &r.slack_webhook),
        ("teams_webhook", crate::chat::Key::Teams, &r.teams_webhook),
        ("discord_webhook", crate::chat::Key::Discord, &r.discord_webhook),
    ] {
        let Some(url) = value else { continue };
        match crate::chat::check_address(key, url, allow_private_hosts) {
            Ok(crate::chat::Target::Webhook { .. }) => {}
            Ok(crate::chat::Target::SlackId(_)) => {
                errors.push(FieldError::new(at(field), "must be a webhook URL (a Slack id goes in slack_channel)"))
            }
            Err(why) => errors.push(FieldError::new(at(field), why)),
        }
    }
    if let Some(c) = &r.slack_channel
        && !crate::chat::is_slack_id(c)
    {
        errors.push(FieldError::new(at("slack_channel"), "must be a Slack channel id (C…, G…) or user id (U…, W…)"));
    }
    if let Some(id) = &r.subscriber_id
        && !crate::subscriber::is_valid_subscriber_id(id)
    {
        errors.push(FieldError::new(
            at("subscriber_id"),
            "must be 1 to 200 characters, without `/` or control characters",
        ));
    }
    if let Some(e) = &r.email
        && !address::is_valid_email(e)
    {
        errors.push(FieldError::new(at("email"), "is not a valid email address"));
    }
    if let Some(p) = &r.phone
        && !address::is_valid_e164(p)
    {
        errors.push(FieldError::new(at("phone"), "must be an E.164 number such as +15551234567"));
    }
    if let Some(w) = &r.whatsapp
        && !address::is_valid_e164(w)
    {
        errors.push(FieldError::new(at("whatsapp"), "must be an E.164 number such as +15551234567"));
    }
}

/// Checks the URLs of `c`, naming `{prefix}.action_url` or `{prefix}.image`. The in-app
/// and push `action_url`: the inbox page puts it in a link, so it must be an `https` URL,
/// an `http` one where the tenant allows it (`http_allowed`), or a path on the tenant's own
/// site (`/…`, but not `//…`, which names another host); never `javascript:`, `data:` or
/// any other scheme. Push's `image`, which the push services fetch: an `https` URL.
pub fn check_action_url(c: &Content, prefix: &str, http_allowed: bool, errors: &mut Vec<FieldError>) {
    let problems = [
        ("action_url", c.action_url.as_deref().and_then(|url| action_url_problem(url, http_allowed))),
        ("image", c.image.as_deref().and_then(crate::push::image_problem)),
    ];
    for (name, why) in problems {
        let Some(why) = why else { continue };
        let field = format!("{prefix}.{name}");
        if !errors.iter().any(|e| e.field == field) {
            errors.push(FieldError::new(field, why));
        }
    }
}

/// Why `url` cannot be an in-app action URL, if it cannot.
fn action_url_problem(url: &str, http_allowed: bool) -> Option<&'static str> {
    const ALLOWED: &str = "must be an https URL or a path starting with `/`";
    // Browsers drop tabs and newlines anywhere in a URL and spaces around it, which would
    // let a scheme hide behind them: none is taken.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces or control characters");
    }
    let after =
        |scheme: &str| url.get(..scheme.len()).filter(|s| s.eq_ignore_ascii_case(scheme)).map(|_| &url[scheme.len()..]);
    let host_given = |rest: &str| !rest.is_empty() && !rest.starts_with(['/', '\\']);
    if let Some(rest) = after("https://") {
        return (!host_given(rest)).then_some("must name a host after `https://`");
    }
    if let Some(rest) = after("http://") {
        if !http_allowed {
            return Some("must be an https URL: this tenant does not allow http action URLs");
        }
        return (!host_given(rest)).then_some("must name a host after `http://`");
    }
    match url.strip_prefix('/') {
        // `//host` and `/\host` name another host, with the page's scheme.
        Some(rest) if !rest.starts_with(['/', '\\']) => None,
        _ => Some(ALLOWED),
    }
}

/// Checks that a template's `action_url` and `image` sources can only render an allowed
/// URL as far as their literal start tells: `https://`, `http://` or `/` for the action
/// URL, `https://` for the image, unless it starts with an expression (the rendering is
/// checked by [`check_action_url`]).
pub fn check_action_url_source(source: &Content, errors: &mut Vec<FieldError>) {
    let literal = |url: &Option<String>| url.as_deref().map(|u| u.split('{').next().unwrap_or_default().to_owned());
    let starts = |literal: &str, prefix: &str| {
        let n = prefix.len().min(literal.len());
        literal.get(..n).is_some_and(|s| s.eq_ignore_ascii_case(&prefix[..n]))
    };
    if let Some(literal) = literal(&source.action_url).filter(|l| !l.is_empty()) {
        let path = literal.starts_with('/') && !literal[1..].starts_with(['/', '\\']);
        if !(starts(&literal, "https://") || starts(&literal, "http://") || path) {
            errors.push(FieldError::new(
                "content.action_url",
                "must start with `https://`, `http://`, `/` or a template expression",
            ));
        }
    }
    if let Some(literal) = literal(&source.image).filter(|l| !l.is_empty())
        && !starts(&literal, "https://")
    {
        errors.push(FieldError::new("content.image", "must start with `https://` or a template expression"));
    }
}

/// Checks that `c` has what `channel` needs; errors name the fields under `prefix`
/// (`content.subject`). Used for inline content, template sources and rendered content.
pub fn check_content(channel: Channel, c: &Content, prefix: &str, errors: &mut Vec<FieldError>) {
    let missing = |errors: &mut Vec<FieldError>, field: &str, why: String| {
        let field = format!("{prefix}.{field}");
        if !errors.iter().any(|e| e.field == field) {
            errors.push(FieldError::new(field, why));
        }
    };
    let fields = [
        ("subject", &c.subject),
        ("text", &c.text),
        ("html", &c.html),
        ("title", &c.title),
        ("body", &c.body),
        ("action_url", &c.action_url),
        ("image", &c.image),
        ("sound", &c.sound),
    ];
    for (name, value) in fields {
        let Some(value) = value else { continue };
        if value.len() > MAX_CONTENT_FIELD_BYTES {
            missing(errors, name, format!("at most {} KiB", MAX_CONTENT_FIELD_BYTES / 1024));
        } else if value.contains('\0') {
            // PostgreSQL's text and jsonb cannot hold it (a template can render one).
            missing(errors, name, "must not contain a NUL character".into());
        }
    }
    for value in c.data.iter().flat_map(|d| d.values()) {
        if value.len() > MAX_CONTENT_FIELD_BYTES {
            missing(errors, "data", format!("values of at most {} KiB", MAX_CONTENT_FIELD_BYTES / 1024));
        } else if value.contains('\0') {
            missing(errors, "data", "values must not contain a NUL character".into());
        }
    }
    // Push's own fields are checked on every channel (inline content serves them all and
    // is stored whole); the payload limit holds where the content goes out as a push.
    crate::push::check_content(c, prefix, channel == Channel::Push, errors);
    // Inline content serves every channel: the others ignore `structured`, but it is
    // stored, so its limits hold all the same (chat checks it below).
    if let Some(structured) = c.structured.as_ref().filter(|_| channel != Channel::Chat) {
        for e in crate::chat::check_structured(structured, &format!("{prefix}.structured")) {
            if !errors.iter().any(|x| x.field == e.field) {
                errors.push(e);
            }
        }
    }
    match channel {
        Channel::Email => {
            if c.subject.as_deref().is_none_or(str::is_empty) {
                missing(errors, "subject", "is required for the email channel".into());
            }
            if c.text.as_deref().is_none_or(str::is_empty) && c.html.as_deref().is_none_or(str::is_empty) {
                missing(errors, "text", format!("email needs {prefix}.text or {prefix}.html"));
            }
        }
        Channel::Sms | Channel::Whatsapp => match c.text.as_deref() {
            None | Some("") => missing(errors, "text", format!("is required for the {channel} channel")),
            Some(t) if t.chars().count() > MAX_TEXT_MESSAGE_CHARS => missing(
                errors,
                "text",
                format!("at most {MAX_TEXT_MESSAGE_CHARS} characters for the {channel} channel"),
            ),
            Some(_) => {}
        },
        Channel::InApp | Channel::Push => {
            if c.title.as_deref().is_none_or(str::is_empty) && c.body.as_deref().is_none_or(str::is_empty) {
                missing(errors, "title", format!("the {channel} channel needs {prefix}.title or {prefix}.body"));
            }
        }
        Channel::Chat => {
            let found = crate::chat::check_content(c.text.as_deref(), c.structured.as_ref(), prefix);
            for e in found {
                if !errors.iter().any(|x| x.field == e.field) {
                    errors.push(e);
                }
            }
        }
        Channel::Novu => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn action_urls_are_https_a_path_or_http_where_allowed() {
        for good in ["https://example.com/a?b#c", "HtTpS://example.com", "/orders/1", "/"] {
            assert_eq!(action_url_problem(good, false), None, "{good}");
        }
        assert_eq!(action_url_problem("http://example.com", true), None);
        for bad in [
            "http://example.com",
            "javascript:alert(1)",
            "data:text/html,x",
            "//evil.example",
            "/\\evil.example",
            "https://",
            "https:///x",
            "https:\\\\evil.example",
            "\nhttps://example.com",
            "java\tscript:x",
            "",
            "orders/1",
        ] {
            assert!(action_url_problem(bad, false).is_some(), "{bad:?}");
        }
        // A template's literal start is checked; an expression decides at render.
        let source = |url: &str| {
            let mut errors = Vec::new();
            check_action_url_source(&Content { action_url: Some(url.into()), ..Default::default() }, &mut errors);
            errors.len()
        };
        assert_eq!(
            source("{{ link }}") + source("https://{{ host }}/x") + source("/i/{{ n }}") + source("htt{{ s }}"),
            0
        );
        assert_eq!(source("javascript:{{ x }}") + source("//{{ host }}") + source("data:{{ x }}"), 3);
    }

    fn parse(v: serde_json::Value) -> NewNotification {
        serde_json::from_value(v).unwrap()
    }

    fn fields(r: Result<ValidNotification, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn inline_structured_content_serves_chat_and_is_ignored_elsewhere() {
        let n = parse(json!({"type": "t", "to": [{"email": "a@example.com", "slack_channel": "C0123456789"}],
            "channels": ["email", "chat"], "content": {"subject": "s", "text": "x", "structured": {"slack": []}}}));
        assert!(n.validate(Limits::default(), OffsetDateTime::now_utc()).is_ok());
        let n = parse(json!({"type": "t", "to": [{"email": "a@example.com"}], "channels": ["email"],
            "content": {"subject": "s", "text": "x", "structured": {"slack": {}}}}));
        assert_eq!(fields(n.validate(Limits::default(), OffsetDateTime::now_utc())), vec!["content.structured.slack"]);
    }

    #[test]
    fn inline_text_past_an_inline_webhooks_limit_is_refused_at_accept() {
        let check = |to: serde_json::Value, text: String| {
            let n = parse(json!({"type": "t", "to": [to], "channels": ["chat"], "content": {"text": text}}));
            n.validate(Limits::default(), OffsetDateTime::now_utc())
        };
        let discord = json!({"discord_webhook": "https://discord.com/api/webhooks/1/abc"});
        let teams = json!({"teams_webhook": "https://prod-01.westus.logic.azure.com/workflows/x?sig=y"});
        assert!(check(discord.clone(), "x".repeat(2000)).is_ok());
        let errors = check(discord, "x".repeat(2001)).unwrap_err();
        assert_eq!(errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["content.text"]);
        assert!(errors[0].message.contains("to[0]") && errors[0].message.contains("2000"), "{errors:?}");
        assert!(check(teams.clone(), "x".repeat(20_000)).is_ok());
        assert_eq!(fields(check(teams, "x".repeat(30_000))), ["content.text"]);
        // Slack takes the text as it is (40,000 characters at most, for every chat provider).
        assert!(check(json!({"slack_channel": "C0123456789"}), "x".repeat(30_000)).is_ok());
    }

    #[test]
    fn names_every_bad_field() {
        let n = parse(json!({"type": "t", "to": [{"email": "nope"}, {"phone": "555"}], "channels": ["email", "sms"],
            "content": {"text": "x"}}));
        assert_eq!(
            fields(n.validate(Limits::default(), OffsetDateTime::now_utc())),
            vec!["to[0].email", "to[1].phone", "content.subject"]
        );
        // No recipients is for the accept to settle: its error class's or type's audience.
        let n = parse(json!({"type": "t", "to": [], "severity": "critical", "error_class": "system"}));
        let n = n.validate(Limits::default(), OffsetDateTime::now_utc()).unwrap();
        assert!(n.to.is_empty());
        assert_eq!((n.priority, n.priority_given), (Priority::Urgent, false), "the severity's, for want of another");
        let n = parse(json!({"type": "t", "to": [], "severity": "critical", "priority": "low"}));
        assert_eq!(n.validate(Limits::default(), OffsetDateTime::now_utc()).unwrap().priority, Priority::Low);
        let n = parse(json!({"type": "t", "error_code": "no spaces", "error_class": ""}));
        assert_eq!(fields(n.validate(Limits::default(), OffsetDateTime::now_utc())), vec!["error_code", "error_class"]);
    }

    #[test]
    fn audience_stands_for_its_topic_and_excludes_to() {
        let n = parse(json!({"type": "t", "audience": "support", "content": {"text": "x"}}));
        let v = n.validate(Limits::default(), OffsetDateTime::now_utc()).unwrap();
        assert_eq!(v.topics().collect::<Vec<_>>(), ["support"]);
        let n = parse(json!({"type": "t", "audience": "customer", "to": [{"email": "a@example.com"}]}));
        assert_eq!(fields(n.validate(Limits::default(), OffsetDateTime::now_utc())), vec!["audience"]);
        let n = parse(json!({"type": "t", "to": [{"topic": "support", "email": "a@example.com"}]}));
        assert_eq!(fields(n.validate(Limits::default(), OffsetDateTime::now_utc())), vec!["to[0].topic"]);
    }

    #[test]
    fn send_at_beyond_the_horizon_is_rejected_and_past_means_now() {
        let now = OffsetDateTime::now_utc();
        let mut n = parse(json!({"type": "t", "to": [{"subscriber_id": "u"}]}));
        n.send_at = Some(now + Duration::days(91));
        assert_eq!(fields(n.validate(Limits::default(), now)), vec!["send_at"]);
        let mut n = parse(json!({"type": "t", "to": [{"subscriber_id": "u"}]}));
        n.send_at = Some(now - Duration::hours(1));
        assert_eq!(n.validate(Limits::default(), now).unwrap().send_at, None);
    }

    #[test]
    fn inline_push_content_is_checked_at_accept() {
        let check = |content: serde_json::Value| {
            let n = parse(json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "channels": ["push"],
                "content": content}));
            n.validate(Limits::default(), OffsetDateTime::now_utc())
        };
        assert!(
            check(json!({"title": "t", "image": "https://x.example/i.png", "badge": 2,
            "data": {"order": "1"}}))
            .is_ok()
        );
        assert_eq!(fields(check(json!({"subject": "s"}))), ["content.title"]);
        assert_eq!(
            fields(check(json!({"body": "b", "image": "javascript:x", "data": {"google.x": "1"}}))),
            ["content.data.google.x", "content.image"]
        );
        assert_eq!(fields(check(json!({"body": "b".repeat(4000)}))), ["content.body"]);
    }
}
