//! What the API answers: the shapes of accepted notifications, notifications with their
//! deliveries, attempts and audit events, and pages of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Channel, DeliveryStatus, NotificationStatus, Priority};

/// The `202` answer to an accepted notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AcceptedNotification {
    pub id: Uuid,
    pub status: NotificationStatus,
    pub deliveries: Vec<AcceptedDelivery>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AcceptedDelivery {
    pub id: Uuid,
    pub channel: Channel,
    /// The address on the channel (empty when the subscriber has none).
    pub recipient: String,
    /// The subscriber it goes to, when the recipient is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_id: Option<String>,
    pub status: DeliveryStatus,
}

/// Deliveries a [`NotificationView`] shows at most; the rest are paged from
/// `GET /v1/notifications/{id}/deliveries`.
pub const VIEW_DELIVERIES: usize = 100;
/// Audit events a [`NotificationView`] shows at most (the oldest); each delivery's own
/// events are also in its [`DeliveryView`].
pub const VIEW_EVENTS: usize = 100;

/// A notification with its delivery counts, its first deliveries and their attempts, and
/// its audit trail: bounded whatever its fan-out.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: NotificationStatus,
    pub priority: Priority,
    pub correlation_id: Option<String>,
    /// What the request said of the error it reports, if it did.
    pub severity: Option<crate::request::Severity>,
    pub error_code: Option<String>,
    pub error_class: Option<String>,
    pub idempotency_key: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    #[schema(value_type = Object)]
    pub content: serde_json::Value,
    #[serde(with = "time::serde::rfc3339::option")]
    pub send_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// How many deliveries the notification has.
    pub delivery_count: i64,
    /// Its deliveries counted by channel, then status: `{"email": {"sent": 2, "failed": 1}}`.
    #[schema(value_type = std::collections::HashMap<String, std::collections::HashMap<String, i64>>)]
    pub delivery_counts: BTreeMap<String, BTreeMap<String, i64>>,
    /// The first 100 deliveries, by id, without their rendered content (see
    /// `GET /v1/notifications/{id}/deliveries?include=content`).
    pub deliveries: Vec<DeliveryView>,
    /// Present when the notification has more deliveries than `deliveries` shows: pass as
    /// `cursor` to `GET /v1/notifications/{id}/deliveries` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_cursor: Option<String>,
    /// The first 100 audit events, oldest first.
    pub events: Vec<AuditEventView>,
    /// `true` when the notification has more audit events than `events` shows (each
    /// delivery's own are in its view).
    pub events_truncated: bool,
}

/// A page of a notification's deliveries, by id.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub channel: Channel,
    /// The address on the channel; `[erased]` after the subscriber was erased.
    pub recipient: String,
    pub subscriber_id: Option<String>,
    /// The template locale the content was rendered in.
    pub locale: Option<String>,
    /// The exact content rendered for this delivery; `null` when it used the
    /// notification's inline `content` (or Novu's workflow). Only in the delivery listing
    /// asked with `include=content`: left out everywhere else.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub content: Option<serde_json::Value>,
    pub status: DeliveryStatus,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub attempt_count: i32,
    pub last_error_code: Option<String>,
    pub last_error_message: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub attempts: Vec<AttemptView>,
    /// The audit events about this delivery (`retried`, `recovered`), oldest first.
    pub events: Vec<AuditEventView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    #[serde(skip)]
    pub delivery_id: Uuid,
    pub number: i32,
    pub provider: String,
    /// `sent`, or the failure kind: `retryable`, `ambiguous`, `permanent`, `config`. An
    /// `ambiguous` attempt with `error_code` `worker_lost` is one whose worker died before
    /// recording it (the provider may have sent it); the attempt is made again.
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub latency_ms: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// `true` when the tenant's own integration of `provider` sent it, `false` when the
    /// operator's configured provider did.
    pub integration: bool,
}

/// A state change a user or operator caused.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    /// `accepted`, `cancelled`, `retried` or `recovered`.
    pub action: String,
    pub delivery_id: Option<Uuid>,
    /// `api_key:<id>` or `operator`.
    pub actor: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One notification in a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationSummary {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: NotificationStatus,
    pub priority: Priority,
    pub correlation_id: Option<String>,
    /// What the request said of the error it reports, if it did.
    pub severity: Option<crate::request::Severity>,
    pub error_code: Option<String>,
    pub error_class: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub send_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}
