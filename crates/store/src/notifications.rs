//! Reading notifications: one with everything about it, or a page of summaries.

use domain::{
    Channel, DeliveryStatus, NotificationStatus, Priority,
    view::{AttemptView, AuditEventView, DeliveryView, NotificationSummary, NotificationView},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Result, Store, corrupt};

/// Filters and position of `GET /v1/notifications`.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub status: Option<NotificationStatus>,
    pub kind: Option<String>,
    pub correlation_id: Option<String>,
    pub created_after: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    /// Continue after this (created_at, id): the last item of the previous page.
    pub after: Option<(OffsetDateTime, Uuid)>,
    pub limit: i64,
}

type NotificationRow = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    serde_json::Value,
    serde_json::Value,
    Option<OffsetDateTime>,
    OffsetDateTime,
    OffsetDateTime,
);

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    channel: String,
    recipient: String,
    subscriber_id: Option<String>,
    locale: Option<String>,
    content: Option<serde_json::Value>,
    status: String,
    provider: Option<String>,
    provider_message_id: Option<String>,
    attempts: i32,
    last_error_code: Option<String>,
    last_error_message: Option<String>,
    next_attempt_at: Option<OffsetDateTime>,
    sent_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

type AttemptRow = (Uuid, i32, String, String, Option<String>, Option<String>, i32, OffsetDateTime, OffsetDateTime);

impl Store {
    pub async fn get_notification(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<NotificationView>> {
        let row: Option<NotificationRow> = sqlx::query_as(
            "SELECT id, type, status, priority, correlation_id, idempotency_key, data, content, send_at, created_at,
                    updated_at
             FROM notifications WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(n) = row else { return Ok(None) };

        let deliveries: Vec<DeliveryRow> = sqlx::query_as(
            "SELECT id, channel, recipient, subscriber_id, locale, content, status, provider, provider_message_id,
                    attempts, last_error_code, last_error_message, next_attempt_at, sent_at, created_at, updated_at
             FROM deliveries WHERE tenant_id = $1 AND notification_id = $2 ORDER BY id",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let attempts: Vec<AttemptRow> = sqlx::query_as(
            "SELECT a.delivery_id, a.number, a.provider, a.outcome, a.error_code, a.error_message, a.latency_ms,
                    a.started_at, a.finished_at
             FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.tenant_id = $1 AND d.notification_id = $2 ORDER BY a.id",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let events: Vec<(String, Option<Uuid>, String, serde_json::Value, OffsetDateTime)> = sqlx::query_as(
            "SELECT action, delivery_id, actor, detail, created_at FROM audit_events
             WHERE tenant_id = $1 AND notification_id = $2 ORDER BY id",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;

        let mut attempts_of: std::collections::HashMap<Uuid, Vec<AttemptView>> = std::collections::HashMap::new();
        for a in attempts.into_iter().map(|a| AttemptView {
            delivery_id: a.0,
            number: a.1,
            provider: a.2,
            outcome: a.3,
            error_code: a.4,
            error_message: a.5,
            latency_ms: a.6,
            started_at: a.7,
            finished_at: a.8,
        }) {
            attempts_of.entry(a.delivery_id).or_default().push(a);
        }
        let mut views = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            views.push(DeliveryView {
                id: d.id,
                channel: parse_channel(&d.channel)?,
                recipient: d.recipient,
                subscriber_id: d.subscriber_id,
                locale: d.locale,
                content: d.content,
                status: DeliveryStatus::parse(&d.status)
                    .ok_or_else(|| corrupt(format!("delivery status {}", d.status)))?,
                provider: d.provider,
                provider_message_id: d.provider_message_id,
                attempt_count: d.attempts,
                last_error_code: d.last_error_code,
                last_error_message: d.last_error_message,
                next_attempt_at: d.next_attempt_at,
                sent_at: d.sent_at,
                created_at: d.created_at,
                updated_at: d.updated_at,
                attempts: attempts_of.remove(&d.id).unwrap_or_default(),
            });
        }
        Ok(Some(NotificationView {
            id: n.0,
            kind: n.1,
            status: parse_status(&n.2)?,
            priority: parse_priority(&n.3)?,
            correlation_id: n.4,
            idempotency_key: n.5,
            data: n.6,
            content: n.7,
            send_at: n.8,
            created_at: n.9,
            updated_at: n.10,
            deliveries: views,
            events: events
                .into_iter()
                .map(|e| AuditEventView { action: e.0, delivery_id: e.1, actor: e.2, detail: e.3, created_at: e.4 })
                .collect(),
        }))
    }

    /// Newest first. Paging by (created_at, id) keeps pages stable while notifications
    /// are added: new ones sort before the position already reached.
    pub async fn list_notifications(&self, tenant_id: Uuid, f: &ListFilter) -> Result<Vec<NotificationSummary>> {
        type Row =
            (Uuid, String, String, String, Option<String>, Option<OffsetDateTime>, OffsetDateTime, OffsetDateTime);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, type, status, priority, correlation_id, send_at, created_at, updated_at
             FROM notifications
             WHERE tenant_id = $1
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR type = $3)
               AND ($4::text IS NULL OR correlation_id = $4)
               AND ($5::timestamptz IS NULL OR created_at >= $5)
               AND ($6::timestamptz IS NULL OR created_at < $6)
               AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8::uuid))
             ORDER BY created_at DESC, id DESC
             LIMIT $9",
        )
        .bind(tenant_id)
        .bind(f.status.map(|s| s.as_str()))
        .bind(&f.kind)
        .bind(&f.correlation_id)
        .bind(f.created_after)
        .bind(f.created_before)
        .bind(f.after.map(|a| a.0))
        .bind(f.after.map(|a| a.1))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(NotificationSummary {
                    id: r.0,
                    kind: r.1,
                    status: parse_status(&r.2)?,
                    priority: parse_priority(&r.3)?,
                    correlation_id: r.4,
                    send_at: r.5,
                    created_at: r.6,
                    updated_at: r.7,
                })
            })
            .collect()
    }
}

fn parse_channel(s: &str) -> Result<Channel> {
    s.parse().map_err(|_| corrupt(format!("channel {s}")))
}

fn parse_status(s: &str) -> Result<NotificationStatus> {
    NotificationStatus::parse(s).ok_or_else(|| corrupt(format!("notification status {s}")))
}

fn parse_priority(s: &str) -> Result<Priority> {
    Priority::parse(s).ok_or_else(|| corrupt(format!("priority {s}")))
}
