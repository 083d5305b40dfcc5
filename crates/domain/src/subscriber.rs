//! Subscribers: the people a tenant notifies, by the tenant's own id for them, with their
//! addresses, locale and time zone; and their preferences (opt-outs per channel, per type
//! and per category, quiet hours in their time zone).

use std::collections::BTreeMap;

use jiff::{
    Timestamp,
    civil::DateTime,
    tz::{AmbiguousOffset, TimeZone},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::{
    Channel, FieldError, address,
    chat::{self, ChatInput, ChatView, StoredChat},
    locale,
    notification_type::is_valid_key,
    request::MAX_DATA_BYTES,
};

/// Entries of `types` or `categories` in one preferences document.
pub const MAX_PREFERENCE_ENTRIES: usize = 500;

/// A subscriber id (the tenant's own): 1 to 200 characters, no control characters and no
/// `/` (it is a path segment).
pub fn is_valid_subscriber_id(id: &str) -> bool {
    (1..=200).contains(&id.chars().count()) && !id.chars().any(|c| c.is_control() || c == '/')
}

/// `PUT /v1/subscribers/{id}`: the subscriber as it shall be (fields left out are cleared).
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberInput {
    #[serde(default)]
    pub email: Option<String>,
    /// E.164, for SMS.
    #[serde(default)]
    pub phone: Option<String>,
    /// E.164, for WhatsApp.
    #[serde(default)]
    pub whatsapp: Option<String>,
    /// Chat addresses: `{"slack": "U024BE7LH", "teams": "<Workflows webhook URL>",
    /// "discord": "<webhook URL>"}`. Webhook URLs are stored encrypted and never returned.
    #[serde(default, deserialize_with = "crate::object::optional")]
    pub chat: Option<ChatInput>,
    /// BCP 47 (`de`, `pt-BR`): picks the template; stored in normal form.
    #[serde(default)]
    pub locale: Option<String>,
    /// IANA time zone name (`Europe/Berlin`): quiet hours are in it.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Free data for templates, at most 64 KiB.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Map<String, Value>>,
}

impl SubscriberInput {
    /// Normalizes the locale and checks addresses, time zone and data size; every problem
    /// is reported with its field.
    /// `allow_private_hosts` (tests): chat webhook URLs may point at any host.
    /// Answers the input with its chat addresses checked ([`ChatInput::check`]).
    pub fn validate(mut self, allow_private_hosts: bool) -> Result<(SubscriberInput, chat::Targets), Vec<FieldError>> {
        let mut errors = Vec::new();
        let chat = self.chat.as_ref().map(|c| c.check("chat", allow_private_hosts, &mut errors)).unwrap_or_default();
        if let Some(e) = &self.email
            && !address::is_valid_email(e)
        {
            errors.push(FieldError::new("email", "is not a valid email address"));
        }
        if let Some(p) = &self.phone
            && !address::is_valid_e164(p)
        {
            errors.push(FieldError::new("phone", "must be an E.164 number such as +15551234567"));
        }
        if let Some(w) = &self.whatsapp
            && !address::is_valid_e164(w)
        {
            errors.push(FieldError::new("whatsapp", "must be an E.164 number such as +15551234567"));
        }
        if let Some(l) = &self.locale {
            match locale::normalize(l) {
                Some(normal) => self.locale = Some(normal),
                None => errors.push(FieldError::new("locale", "must be a BCP 47 tag such as `de` or `pt-BR`")),
            }
        }
        if let Some(tz) = &self.timezone
            && !is_valid_timezone(tz)
        {
            errors.push(FieldError::new("timezone", "must be an IANA time zone name such as `Europe/Berlin`"));
        }
        if let Some(data) = &self.data {
            let len = serde_json::to_vec(data).map(|v| v.len()).unwrap_or(usize::MAX);
            if len > MAX_DATA_BYTES {
                errors.push(FieldError::new("data", format!("at most {} KiB when serialized", MAX_DATA_BYTES / 1024)));
            }
        }
        if errors.is_empty() { Ok((self, chat)) } else { Err(errors) }
    }
}

/// An IANA time zone name the bundled database knows. `UTC` is one.
pub fn is_valid_timezone(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && TimeZone::get(name).is_ok()
}

/// A stored subscriber.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Subscriber {
    pub id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub whatsapp: Option<String>,
    /// Chat addresses: a Slack id as is, a webhook as `{"webhook": true, "last4": "…"}`
    /// (its URL is never returned).
    #[serde(serialize_with = "chat_view", skip_serializing_if = "StoredChat::is_empty")]
    #[schema(value_type = Object, example = json!({"slack": "U024BE7LH", "discord": {"webhook": true, "last4": "Xk3q"}}))]
    pub chat: StoredChat,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn chat_view<S: serde::Serializer>(chat: &StoredChat, s: S) -> Result<S::Ok, S::Error> {
    ChatView(chat.clone()).serialize(s)
}

/// A subscriber's choices, one document: `GET/PUT /v1/subscribers/{id}/preferences`.
/// `true` opts in, `false` out; what is not said follows the tenant's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Per channel, for every type: `{"sms": false}`.
    #[serde(default)]
    pub channels: BTreeMap<Channel, bool>,
    /// Per type key and channel: `{"invoice.overdue": {"email": true}}`.
    #[serde(default)]
    pub types: BTreeMap<String, BTreeMap<Channel, bool>>,
    /// Per type category and channel: `{"marketing": {"email": false}}`.
    #[serde(default)]
    pub categories: BTreeMap<String, BTreeMap<Channel, bool>>,
    /// Nothing is sent in this window (critical types excepted); what falls in it waits
    /// for its end.
    #[serde(default, deserialize_with = "crate::object::optional")]
    pub quiet_hours: Option<QuietHours>,
}

impl Preferences {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        for (field, map) in [("types", &self.types), ("categories", &self.categories)] {
            if map.len() > MAX_PREFERENCE_ENTRIES {
                errors.push(FieldError::new(field, format!("at most {MAX_PREFERENCE_ENTRIES} entries")));
            }
            for key in map.keys().filter(|k| !is_valid_key(k)) {
                errors.push(FieldError::new(
                    format!("{field}.{key}"),
                    "a key must be 1 to 200 letters, digits and . _ - : /",
                ));
            }
        }
        if let Some(q) = &self.quiet_hours {
            q.check("quiet_hours", &mut errors);
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Whether this subscriber accepts `channel` for a notification of type `kind` (of
    /// `category`). The most specific choice wins: per type, then per category, then per
    /// channel, then the tenant's default for the type and channel (`type_default`); with
    /// none of them, yes. Critical types are the caller's business.
    pub fn allows(&self, kind: &str, category: Option<&str>, channel: Channel, type_default: Option<bool>) -> bool {
        let by_type = self.types.get(kind).and_then(|m| m.get(&channel));
        let by_category = category.and_then(|c| self.categories.get(c)).and_then(|m| m.get(&channel));
        by_type.or(by_category).or(self.channels.get(&channel)).copied().or(type_default).unwrap_or(true)
    }
}

/// Local times `HH:MM` in the subscriber's time zone, from `start` (included) to `end`
/// (excluded). The window may cross midnight (`22:00`-`07:00`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    #[schema(example = "22:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub start: String,
    #[schema(example = "07:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub end: String,
}

impl QuietHours {
    fn check(&self, prefix: &str, errors: &mut Vec<FieldError>) {
        let start = parse_hhmm(&self.start);
        let end = parse_hhmm(&self.end);
        if start.is_none() {
            errors.push(FieldError::new(format!("{prefix}.start"), "must be a local time HH:MM (00:00 to 23:59)"));
        }
        if end.is_none() {
            errors.push(FieldError::new(format!("{prefix}.end"), "must be a local time HH:MM (00:00 to 23:59)"));
        }
        if start.is_some() && start == end {
            errors.push(FieldError::new(format!("{prefix}.end"), "must differ from start"));
        }
    }

    /// If `at` falls inside the window in `timezone` (none, or one the database does not
    /// know: UTC), the instant the window ends: the next local `end` after `at`. A local
    /// end that does not exist that day (skipped by a spring-forward gap) ends the window
    /// at the first instant after the gap; one that exists twice (fall-back) at the earlier
    /// of the two that is after `at`. Outside the window (or for a window that does not
    /// parse): `None`.
    pub fn defer(&self, timezone: Option<&str>, at: OffsetDateTime) -> Option<OffsetDateTime> {
        let (start, end) = (parse_hhmm(&self.start)?, parse_hhmm(&self.end)?);
        if start == end {
            return None;
        }
        let tz = timezone.and_then(|name| TimeZone::get(name).ok()).unwrap_or(TimeZone::UTC);
        let now = Timestamp::from_nanosecond(at.unix_timestamp_nanos()).ok()?;
        let local = tz.to_datetime(now);
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let inside = if start < end { start <= minute && minute < end } else { minute >= start || minute < end };
        if !inside {
            return None;
        }
        // The end is today or tomorrow, local; a third day only covers odd transitions.
        let mut day = local.date();
        for _ in 0..3 {
            let candidate = day.at((end / 60) as i8, (end % 60) as i8, 0, 0);
            if let Some(ends) = resolve_after(&tz, candidate, now) {
                return OffsetDateTime::from_unix_timestamp_nanos(ends.as_nanosecond()).ok();
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

/// The first instant after `after` that local time `dt` denotes in `tz`: in a gap, the
/// first instant after it; in a fold, the earlier of the two, unless only the later one
/// is still to come.
fn resolve_after(tz: &TimeZone, dt: DateTime, after: Timestamp) -> Option<Timestamp> {
    let candidates: Vec<Timestamp> = match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => vec![offset.to_timestamp(dt).ok()?],
        AmbiguousOffset::Gap { after: later_offset, .. } => {
            // With the offset after the gap, `dt` lands before the transition; the
            // transition itself is the first instant after the gap.
            let before_transition = later_offset.to_timestamp(dt).ok()?;
            vec![tz.following(before_transition).next()?.timestamp()]
        }
        AmbiguousOffset::Fold { before, after: later_offset } => {
            vec![before.to_timestamp(dt).ok()?, later_offset.to_timestamp(dt).ok()?]
        }
    };
    candidates.into_iter().find(|t| *t > after)
}

/// Minutes since midnight of `HH:MM`.
fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn window(start: &str, end: &str) -> QuietHours {
        QuietHours { start: start.into(), end: end.into() }
    }

    #[test]
    fn a_same_day_window_defers_only_inside() {
        let q = window("12:00", "14:00");
        assert_eq!(q.defer(None, datetime!(2026-01-10 12:00 UTC)), Some(datetime!(2026-01-10 14:00 UTC)));
        assert_eq!(q.defer(None, datetime!(2026-01-10 13:59:59 UTC)), Some(datetime!(2026-01-10 14:00 UTC)));
        assert_eq!(q.defer(None, datetime!(2026-01-10 14:00 UTC)), None);
        assert_eq!(q.defer(None, datetime!(2026-01-10 11:59 UTC)), None);
        assert_eq!(q.defer(None, datetime!(2026-01-10 23:00 UTC)), None);
    }

    #[test]
    fn a_window_may_cross_midnight() {
        let q = window("22:00", "07:00");
        assert_eq!(q.defer(None, datetime!(2026-01-10 23:30 UTC)), Some(datetime!(2026-01-11 07:00 UTC)));
        assert_eq!(q.defer(None, datetime!(2026-01-11 03:00 UTC)), Some(datetime!(2026-01-11 07:00 UTC)));
        assert_eq!(q.defer(None, datetime!(2026-01-10 22:00 UTC)), Some(datetime!(2026-01-11 07:00 UTC)));
        assert_eq!(q.defer(None, datetime!(2026-01-11 07:00 UTC)), None);
        assert_eq!(q.defer(None, datetime!(2026-01-11 12:00 UTC)), None);
    }

    #[test]
    fn the_window_is_in_the_subscribers_time_zone() {
        let q = window("22:00", "07:00");
        // 04:00Z is 23:00 EST the day before.
        let at = datetime!(2026-01-10 04:00 UTC);
        assert_eq!(q.defer(Some("America/New_York"), at), Some(datetime!(2026-01-10 12:00 UTC)));
        // In UTC (no time zone, or an unknown one) 04:00 is inside too, ending at 07:00Z.
        assert_eq!(q.defer(None, at), Some(datetime!(2026-01-10 07:00 UTC)));
        assert_eq!(q.defer(Some("Mars/Olympus_Mons"), at), Some(datetime!(2026-01-10 07:00 UTC)));
        // 15:00Z is 10:00 EST: outside.
        assert_eq!(q.defer(Some("America/New_York"), datetime!(2026-01-10 15:00 UTC)), None);
    }

    #[test]
    fn a_night_across_spring_forward_ends_at_the_new_offset() {
        let q = window("22:00", "07:00");
        // 22:30 EST on March 7; clocks go 02:00 EST -> 03:00 EDT on March 8.
        let at = datetime!(2026-03-08 03:30 UTC);
        assert_eq!(q.defer(Some("America/New_York"), at), Some(datetime!(2026-03-08 11:00 UTC)));
    }

    #[test]
    fn an_end_inside_the_gap_means_the_first_instant_after_it() {
        let q = window("01:00", "02:30");
        // 01:30 EST on March 8; 02:30 does not exist that day: the window ends at 03:00 EDT.
        let at = datetime!(2026-03-08 06:30 UTC);
        assert_eq!(q.defer(Some("America/New_York"), at), Some(datetime!(2026-03-08 07:00 UTC)));
    }

    #[test]
    fn fall_back_picks_the_earlier_end_still_to_come() {
        let berlin = Some("Europe/Berlin");
        // 25 October 2026: 03:00 CEST -> 02:00 CET; 02:00-02:59 happens twice.
        let q = window("23:00", "06:00");
        // 23:30 CEST on the 24th; the night is an hour longer: 06:00 CET is 05:00Z.
        assert_eq!(q.defer(berlin, datetime!(2026-10-24 21:30 UTC)), Some(datetime!(2026-10-25 05:00 UTC)));

        let q = window("01:00", "02:30");
        // 02:10 CEST (first pass): the earlier 02:30, CEST.
        assert_eq!(q.defer(berlin, datetime!(2026-10-25 00:10 UTC)), Some(datetime!(2026-10-25 00:30 UTC)));
        // 02:10 CET (second pass): 02:30 CEST has passed; 02:30 CET.
        assert_eq!(q.defer(berlin, datetime!(2026-10-25 01:10 UTC)), Some(datetime!(2026-10-25 01:30 UTC)));
        // 02:40 CEST (first pass) is outside the window.
        assert_eq!(q.defer(berlin, datetime!(2026-10-25 00:40 UTC)), None);
    }

    #[test]
    fn quiet_hours_are_checked() {
        let p = |q: QuietHours| Preferences { quiet_hours: Some(q), ..Default::default() }.validate();
        assert!(p(window("22:00", "07:00")).is_ok());
        let fields = |r: Result<(), Vec<FieldError>>| r.unwrap_err().into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(fields(p(window("7:00", "24:00"))), ["quiet_hours.start", "quiet_hours.end"]);
        assert_eq!(fields(p(window("22:00", "22:00"))), ["quiet_hours.end"]);
        assert_eq!(fields(p(window("ab:cd", "07:60"))), ["quiet_hours.start", "quiet_hours.end"]);
    }

    #[test]
    fn the_most_specific_preference_wins() {
        let p: Preferences = serde_json::from_value(json!({
            "channels": {"sms": false, "email": true},
            "types": {"invoice.overdue": {"sms": true}},
            "categories": {"marketing": {"email": false, "sms": true}}
        }))
        .unwrap();
        // Per type beats per category and per channel.
        assert!(p.allows("invoice.overdue", Some("marketing"), Channel::Sms, Some(false)));
        // Per category beats per channel.
        assert!(!p.allows("promo", Some("marketing"), Channel::Email, None));
        assert!(p.allows("promo", Some("marketing"), Channel::Sms, None));
        // Per channel beats the tenant's default.
        assert!(!p.allows("promo", None, Channel::Sms, Some(true)));
        assert!(p.allows("promo", None, Channel::Email, Some(false)));
        // Nothing said: the tenant's default for the type, else yes.
        assert!(!p.allows("promo", None, Channel::Whatsapp, Some(false)));
        assert!(p.allows("promo", None, Channel::Whatsapp, None));
        assert!(Preferences::default().allows("t", Some("c"), Channel::Email, None));
    }

    #[test]
    fn preferences_refuse_unknown_fields_and_bad_keys() {
        assert!(serde_json::from_value::<Preferences>(json!({"channel": {}})).is_err());
        assert!(serde_json::from_value::<Preferences>(json!({"channels": {"fax": true}})).is_err());
        let p: Preferences = serde_json::from_value(json!({"types": {"bad key": {"sms": true}}})).unwrap();
        assert_eq!(p.validate().unwrap_err()[0].field, "types.bad key");
        let empty: Preferences = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty, Preferences::default());
    }

    #[test]
    fn subscriber_input_is_checked_and_normalized() {
        let ok: SubscriberInput = serde_json::from_value(json!({"email": "a@example.com", "phone": "+15551234567",
            "locale": "pt_br", "timezone": "Europe/Berlin", "data": {"name": "Ada"}}))
        .unwrap();
        assert_eq!(ok.validate(false).unwrap().0.locale.as_deref(), Some("pt-BR"));
        let bad: SubscriberInput = serde_json::from_value(json!({"email": "nope", "phone": "555", "whatsapp": "1",
            "locale": "english", "timezone": "Europe/Nowhere"}))
        .unwrap();
        let fields: Vec<String> = bad.validate(false).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["email", "phone", "whatsapp", "locale", "timezone"]);
        assert!(is_valid_subscriber_id("u-42"));
        assert!(!is_valid_subscriber_id("a/b"));
        assert!(!is_valid_subscriber_id(""));
        assert!(!is_valid_subscriber_id(&"x".repeat(201)));
    }
}
