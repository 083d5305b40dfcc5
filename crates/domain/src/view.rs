//! What the API answers: the shapes of accepted notifications, notifications with their
//! deliveries, attempts and audit events, and pages of them.

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

/// A notification with its deliveries, their attempts, and its audit trail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: NotificationStatus,
    pub priority: Priority,
    pub correlation_id: Option<String>,
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
    pub deliveries: Vec<DeliveryView>,
    pub events: Vec<AuditEventView>,
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
    /// notification's inline `content` (or Novu's workflow).
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
}

/// A state change a user or operator caused.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    /// `accepted`, `cancelled` or `retried`.
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
    #[serde(with = "time::serde::rfc3339::option")]
    pub send_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}
