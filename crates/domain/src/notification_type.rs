//! Notification types: what a notification of a type does by default (channels, Novu
//! workflow, retry policy), whether it is critical, its category, and the tenant's default
//! preference per channel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Channel, FieldError, RetryPolicy, request::Audience};

/// A type key (also a notification's `type`, a topic key, a category): 1 to 200
/// characters, each an ASCII letter or digit or one of `. _ - : /`.
pub fn is_valid_key(s: &str) -> bool {
    (1..=200).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
}

/// `PUT /v1/types/{key}`: the type as it shall be.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationTypeInput {
    /// The channels a notification of this type goes to when it names none; at least one.
    #[schema(min_items = 1)]
    pub channels: Vec<Channel>,
    /// Critical notifications ignore opt-outs and quiet hours (security alerts, receipts).
    #[serde(default)]
    pub critical: bool,
    /// Novu's workflow key; default: the type's key.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,200}$")]
    pub novu_workflow: Option<String>,
    /// Overrides the channel's retry policy (`{"max_attempts": 6, "initial_delay": "30s"}`).
    #[serde(default, deserialize_with = "crate::object::optional")]
    #[schema(value_type = Option<Object>)]
    pub retry: Option<RetryPolicy>,
    /// Subscribers can opt out of a whole category (`marketing`).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,200}$")]
    pub category: Option<String>,
    /// The tenant's default per channel for this type, where the subscriber said nothing:
    /// `{"sms": false}` makes SMS opt-in.
    #[serde(default)]
    pub preferences: BTreeMap<Channel, bool>,
    /// Who its notifications are for when they name no recipients: the tenant's `customer`
    /// or `support` topic (after the classification of their error class).
    #[serde(default)]
    pub audience: Option<Audience>,
    /// The class of error its notifications report when they name none
    /// (`PUT /v1/classifications` maps a class to an audience and a priority).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,200}$")]
    pub error_class: Option<String>,
}

impl NotificationTypeInput {
    pub fn validate(self) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.channels.is_empty() {
            errors.push(FieldError::new("channels", "must name at least one channel"));
        }
        for (i, c) in self.channels.iter().enumerate() {
            if self.channels[..i].contains(c) {
                errors.push(FieldError::new(format!("channels[{i}]"), format!("`{c}` is named twice")));
            }
        }
        if let Some(w) = &self.novu_workflow
            && !is_valid_key(w)
        {
            errors.push(FieldError::new("novu_workflow", "must be 1 to 200 letters, digits and . _ - : /"));
        }
        if let Some(r) = &self.retry
            && let Err(e) = r.validate()
        {
            errors.push(FieldError::new(format!("retry.{}", e.field), e.message));
        }
        for (field, value) in [("category", &self.category), ("error_class", &self.error_class)] {
            if value.as_ref().is_some_and(|v| !is_valid_key(v)) {
                errors.push(FieldError::new(field, "must be 1 to 200 letters, digits and . _ - : /"));
            }
        }
        if errors.is_empty() { Ok(self) } else { Err(errors) }
    }
}

/// A stored notification type.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationType {
    pub key: String,
    pub channels: Vec<Channel>,
    pub critical: bool,
    pub novu_workflow: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub retry: Option<RetryPolicy>,
    pub category: Option<String>,
    pub preferences: BTreeMap<Channel, bool>,
    pub audience: Option<Audience>,
    pub error_class: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys() {
        for ok in ["invoice.overdue", "a", "billing/invoice:v2", "x_y-z"] {
            assert!(is_valid_key(ok), "{ok}");
        }
        for bad in ["", "a b", "ü", "a?b", &"x".repeat(201)] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn names_every_bad_field() {
        let input: NotificationTypeInput = serde_json::from_value(json!({"channels": ["email", "sms", "email"],
            "novu_workflow": "", "retry": {"max_attempts": 0}, "category": "a b"}))
        .unwrap();
        let fields: Vec<String> = input.validate().unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["channels[2]", "novu_workflow", "retry.max_attempts", "category"]);
        let input: NotificationTypeInput = serde_json::from_value(json!({"channels": []})).unwrap();
        assert_eq!(input.validate().unwrap_err()[0].field, "channels");
        let ok: NotificationTypeInput = serde_json::from_value(json!({"channels": ["email"], "critical": true,
            "retry": {"max_attempts": 6, "initial_delay": "30s"}, "preferences": {"sms": false}}))
        .unwrap();
        assert_eq!(ok.validate().unwrap().retry.unwrap().max_attempts, 6);
    }
}
