//! `POST /v1/notifications`: the request body, its validation, and the deliveries it
//! plans (one per recipient address x channel).

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::{Channel, Priority, address};

/// Recipients per notification.
pub const MAX_RECIPIENTS: usize = 100;
/// Serialized size of `data`.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Longest SMS or WhatsApp body a provider accepts (Twilio and SNS: 1600 characters).
pub const MAX_TEXT_MESSAGE_CHARS: usize = 1600;

/// A notification to send: what happened, to whom, over which channels, with what.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNotification {
    /// What happened, as a dotted name (`invoice.overdue`); Novu's workflow key.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 to 100 recipients.
    pub to: Vec<Recipient>,
    /// Default: every channel some recipient has an address for.
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    /// Free data, at most 64 KiB; Novu's payload.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub priority: Priority,
    /// When to send; in the past means now; at most 90 days ahead (configurable).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub send_at: Option<OffsetDateTime>,
    /// Your own reference, to find the notification again (`GET /v1/notifications?correlation_id=`).
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Makes a retried request safe: the same key and body answer the first request's
    /// result. Also accepted as the `Idempotency-Key` header.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// One recipient: addresses given inline. `subscriber_id` is the recipient's id in Novu.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub subscriber_id: Option<String>,
    pub email: Option<String>,
    /// E.164, for SMS.
    pub phone: Option<String>,
    /// E.164, for WhatsApp.
    pub whatsapp: Option<String>,
}

impl Recipient {
    /// The address this recipient has for `channel`, if any.
    pub fn address_for(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms => self.phone.as_deref(),
            Channel::Whatsapp => self.whatsapp.as_deref(),
            Channel::Novu => self.subscriber_id.as_deref(),
        }
    }
}

/// Inline content. Email needs `subject` and `text` or `html`; SMS and WhatsApp need
/// `text`; Novu renders in its own workflow and takes `data` as its payload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// One rejected field, named by its JSON path (`to[2].email`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDelivery {
    pub channel: Channel,
    /// The address (or Novu subscriber id) on that channel.
    pub recipient: String,
}

/// A notification that passed validation, with the deliveries it makes.
#[derive(Clone, Debug)]
pub struct ValidNotification {
    pub kind: String,
    pub priority: Priority,
    pub data: serde_json::Map<String, serde_json::Value>,
    pub content: Content,
    /// `None` means now; a time in the past is treated as now.
    pub send_at: Option<OffsetDateTime>,
    pub correlation_id: Option<String>,
    pub deliveries: Vec<PlannedDelivery>,
}

/// Limits that are configuration rather than contract.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How far ahead `send_at` may be.
    pub max_schedule_ahead: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_schedule_ahead: Duration::days(90) }
    }
}

impl NewNotification {
    /// Checks everything that can be checked without the database and plans the
    /// deliveries. Every problem is reported, not just the first.
    pub fn validate(self, limits: Limits, now: OffsetDateTime) -> Result<ValidNotification, Vec<FieldError>> {
        let mut errors = Vec::new();

        if self.kind.is_empty() || self.kind.len() > 200 {
            errors.push(FieldError::new("type", "must be 1 to 200 characters"));
        } else if !self.kind.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')) {
            errors.push(FieldError::new("type", "may contain only letters, digits and . _ - : /"));
        }

        if self.to.is_empty() {
            errors.push(FieldError::new("to", "must name at least one recipient"));
        } else if self.to.len() > MAX_RECIPIENTS {
            errors.push(FieldError::new("to", format!("at most {MAX_RECIPIENTS} recipients")));
        }
        for (i, r) in self.to.iter().enumerate() {
            check_recipient(i, r, &mut errors);
        }

        let channels: Vec<Channel> = match &self.channels {
            Some(list) if list.is_empty() => {
                errors.push(FieldError::new("channels", "must name at least one channel when given"));
                vec![]
            }
            Some(list) => dedup(list.clone()),
            // No notification types yet: the channels are those the recipients have addresses for.
            None => Channel::ALL.into_iter().filter(|c| self.to.iter().any(|r| r.address_for(*c).is_some())).collect(),
        };

        let content = self.content.unwrap_or_default();
        for channel in &channels {
            check_content(*channel, &content, &mut errors);
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

        if let Some(c) = &self.correlation_id
            && (c.is_empty() || c.len() > 200)
        {
            errors.push(FieldError::new("correlation_id", "must be 1 to 200 characters"));
        }
        if let Some(k) = &self.idempotency_key
            && !is_valid_idempotency_key(k)
        {
            errors.push(FieldError::new("idempotency_key", "must be 1 to 255 printable ASCII characters"));
        }

        let mut deliveries = Vec::new();
        for channel in &channels {
            for r in &self.to {
                if let Some(addr) = r.address_for(*channel) {
                    let planned = PlannedDelivery { channel: *channel, recipient: addr.to_owned() };
                    if !deliveries.contains(&planned) {
                        deliveries.push(planned);
                    }
                }
            }
        }
        if errors.is_empty() && deliveries.is_empty() {
            errors.push(FieldError::new("to", "no recipient has an address for any of the requested channels"));
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ValidNotification {
            kind: self.kind,
            priority: self.priority,
            data,
            content,
            send_at: self.send_at.filter(|at| *at > now),
            correlation_id: self.correlation_id,
            deliveries,
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

fn check_recipient(i: usize, r: &Recipient, errors: &mut Vec<FieldError>) {
    let at = |f: &str| format!("to[{i}].{f}");
    if r.subscriber_id.is_none() && r.email.is_none() && r.phone.is_none() && r.whatsapp.is_none() {
        errors.push(FieldError::new(format!("to[{i}]"), "needs at least one of subscriber_id, email, phone, whatsapp"));
    }
    if let Some(id) = &r.subscriber_id
        && (id.is_empty() || id.len() > 200)
    {
        errors.push(FieldError::new(at("subscriber_id"), "must be 1 to 200 characters"));
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

fn check_content(channel: Channel, c: &Content, errors: &mut Vec<FieldError>) {
    let missing = |errors: &mut Vec<FieldError>, field: &str, why: String| {
        if !errors.iter().any(|e| e.field == field) {
            errors.push(FieldError::new(field, why));
        }
    };
    match channel {
        Channel::Email => {
            if c.subject.as_deref().is_none_or(str::is_empty) {
                missing(errors, "content.subject", "is required for the email channel".into());
            }
            if c.text.as_deref().is_none_or(str::is_empty) && c.html.as_deref().is_none_or(str::is_empty) {
                missing(errors, "content.text", "email needs content.text or content.html".into());
            }
        }
        Channel::Sms | Channel::Whatsapp => match c.text.as_deref() {
            None | Some("") => missing(errors, "content.text", format!("is required for the {channel} channel")),
            Some(t) if t.chars().count() > MAX_TEXT_MESSAGE_CHARS => missing(
                errors,
                "content.text",
                format!("at most {MAX_TEXT_MESSAGE_CHARS} characters for the {channel} channel"),
            ),
            Some(_) => {}
        },
        Channel::Novu => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: serde_json::Value) -> NewNotification {
        serde_json::from_value(v).unwrap()
    }

    fn fields(r: Result<ValidNotification, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn plans_one_delivery_per_address_and_channel() {
        let n = parse(json!({"type": "t", "to": [{"email": "a@example.com", "phone": "+15551234567"},
            {"email": "a@example.com"}, {"subscriber_id": "u-1"}],
            "content": {"subject": "s", "text": "hi"}}));
        let v = n.validate(Limits::default(), OffsetDateTime::now_utc()).unwrap();
        let planned: Vec<_> = v.deliveries.iter().map(|d| (d.channel, d.recipient.as_str())).collect();
        assert_eq!(
            planned,
            vec![(Channel::Email, "a@example.com"), (Channel::Sms, "+15551234567"), (Channel::Novu, "u-1")]
        );
    }

    #[test]
    fn names_every_bad_field() {
        let n = parse(json!({"type": "t", "to": [{"email": "nope"}, {"phone": "555"}], "channels": ["email", "sms"],
            "content": {"text": "x"}}));
        assert_eq!(
            fields(n.validate(Limits::default(), OffsetDateTime::now_utc())),
            vec!["to[0].email", "to[1].phone", "content.subject"]
        );
        let n = parse(json!({"type": "t", "to": []}));
        assert_eq!(fields(n.validate(Limits::default(), OffsetDateTime::now_utc())), vec!["to"]);
    }

    #[test]
    fn a_recipient_without_an_address_for_the_channels_is_an_error() {
        let n = parse(
            json!({"type": "t", "to": [{"email": "a@example.com"}], "channels": ["sms"], "content": {"text": "x"}}),
        );
        assert_eq!(fields(n.validate(Limits::default(), OffsetDateTime::now_utc())), vec!["to"]);
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
}
