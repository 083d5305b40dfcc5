//! Reading notifications: one with its counts and first deliveries, a page of its
//! deliveries, or a page of summaries.

use std::collections::{BTreeMap, HashMap};

use domain::{
    Channel, DeliveryStatus, NotificationStatus, Priority,
    view::{
        AttemptView, AuditEventView, DeliveryView, NotificationSummary, NotificationView, VIEW_DELIVERIES, VIEW_EVENTS,
    },
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
    pub severity: Option<domain::request::Severity>,
    pub error_code: Option<String>,
    pub error_class: Option<String>,
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
    Option<String>,
    Option<String>,
    Option<String>,
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

type AttemptRow =
    (Uuid, i32, String, String, Option<String>, Option<String>, i32, OffsetDateTime, OffsetDateTime, bool);

impl Store {
    /// The notification with its delivery counts, its first [`VIEW_DELIVERIES`] deliveries
    /// (without rendered content) and its first [`VIEW_EVENTS`] audit events: a bounded
    /// read whatever its fan-out.
    pub async fn get_notification(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<NotificationView>> {
        let mut tx = self.snapshot().await?;
        let row: Option<NotificationRow> = sqlx::query_as(
            "SELECT id, type, status, priority, correlation_id, idempotency_key, data, content, send_at, created_at,
                    updated_at, severity, error_code, error_class
             FROM notifications WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(n) = row else { return Ok(None) };

        let counts: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT channel, status, count(*) FROM deliveries WHERE tenant_id = $1 AND notification_id = $2
             GROUP BY channel, status",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let mut delivery_counts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for (channel, status, count) in counts {
            delivery_counts.entry(channel).or_default().insert(status, count);
        }
        let delivery_count = delivery_counts.values().flat_map(BTreeMap::values).sum();

        let mut deliveries = Self::deliveries_of(&mut tx, tenant_id, id, None, VIEW_DELIVERIES + 1, false).await?;
        let deliveries_cursor = more(&mut deliveries, VIEW_DELIVERIES).map(|last| last.id.to_string());
        let mut events: Vec<AuditEventView> = sqlx::query_as::<_, EventRow>(
            "SELECT action, delivery_id, actor, detail, created_at FROM audit_events
             WHERE tenant_id = $1 AND notification_id = $2 ORDER BY id LIMIT $3",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(VIEW_EVENTS as i64 + 1)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(EventRow::view)
        .collect();
        let events_truncated = more(&mut events, VIEW_EVENTS).is_some();
        tx.commit().await?;
        Ok(Some(NotificationView {
            id: n.0,
            kind: n.1,
            status: parse_status(&n.2)?,
            priority: parse_priority(&n.3)?,
            correlation_id: n.4,
            severity: parse_severity(n.11.as_deref())?,
            error_code: n.12,
            error_class: n.13,
            idempotency_key: n.5,
            data: n.6,
            content: n.7,
            send_at: n.8,
            created_at: n.9,
            updated_at: n.10,
            delivery_count,
            delivery_counts,
            deliveries,
            deliveries_cursor,
            events,
            events_truncated,
        }))
    }

    /// A page of the notification's deliveries by id, after delivery `after`, each with its
    /// attempts and audit events, and its rendered content when `content`; `None` when the
    /// tenant has no such notification.
    pub async fn list_deliveries(
        &self,
        tenant_id: Uuid,
        notification_id: Uuid,
        after: Option<Uuid>,
        limit: usize,
        content: bool,
    ) -> Result<Option<Vec<DeliveryView>>> {
        let mut tx = self.snapshot().await?;
        let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM notifications WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(notification_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let deliveries = Self::deliveries_of(&mut tx, tenant_id, notification_id, after, limit, content).await?;
        tx.commit().await?;
        Ok(Some(deliveries))
    }

    /// A read-only transaction on one snapshot: a view made of several statements shows
    /// the deliveries, their attempts and the notification's status as one commit left
    /// them (a delivery never `sending` with the attempt that ended it already listed).
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        Ok(tx)
    }

    async fn deliveries_of(
        conn: &mut sqlx::PgConnection,
        tenant_id: Uuid,
        notification_id: Uuid,
        after: Option<Uuid>,
        limit: usize,
        content: bool,
    ) -> Result<Vec<DeliveryView>> {
        let deliveries: Vec<DeliveryRow> = sqlx::query_as(
            "SELECT id, channel, recipient, subscriber_id, locale, CASE WHEN $4 THEN content END AS content, status,
                    provider, provider_message_id, attempts, last_error_code, last_error_message, next_attempt_at,
                    sent_at, created_at, updated_at
             FROM deliveries
             WHERE tenant_id = $1 AND notification_id = $2 AND ($3::uuid IS NULL OR id > $3)
             ORDER BY id LIMIT $5",
        )
        .bind(tenant_id)
        .bind(notification_id)
        .bind(after)
        .bind(content)
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
        let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
        let attempts: Vec<AttemptRow> = sqlx::query_as(
            "SELECT delivery_id, number, provider, outcome, error_code, error_message, latency_ms, started_at,
                    finished_at, integration
             FROM delivery_attempts WHERE delivery_id = ANY ($1) ORDER BY id",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let events: Vec<EventRow> = sqlx::query_as(
            "SELECT action, delivery_id, actor, detail, created_at FROM audit_events
             WHERE tenant_id = $1 AND delivery_id = ANY ($2) ORDER BY id",
        )
        .bind(tenant_id)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;

        let mut attempts_of: HashMap<Uuid, Vec<AttemptView>> = HashMap::new();
        for a in attempts {
            attempts_of.entry(a.0).or_default().push(AttemptView {
                delivery_id: a.0,
                number: a.1,
                provider: a.2,
                outcome: a.3,
                error_code: a.4,
                error_message: a.5,
                latency_ms: a.6,
                started_at: a.7,
                finished_at: a.8,
                integration: a.9,
            });
        }
        let mut events_of: HashMap<Uuid, Vec<AuditEventView>> = HashMap::new();
        for e in events {
            if let Some(delivery) = e.delivery_id {
                events_of.entry(delivery).or_default().push(e.view());
            }
        }
        deliveries
            .into_iter()
            .map(|d| {
                Ok(DeliveryView {
                    id: d.id,
                    channel: parse_channel(&d.channel)?,
                    recipient: d.recipient,
                    subscriber_id: d.subscriber_id,
                    locale: d.locale,
                    // Asked for, a delivery that used the inline content shows `null`.
                    content: content.then(|| d.content.unwrap_or_default()),
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
                    events: events_of.remove(&d.id).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Newest first. Paging by (created_at, id) keeps pages stable while notifications
    /// are added: new ones sort before the position already reached.
    pub async fn list_notifications(&self, tenant_id: Uuid, f: &ListFilter) -> Result<Vec<NotificationSummary>> {
        type Row = (
            Uuid,
            String,
            String,
            String,
            Option<String>,
            Option<OffsetDateTime>,
            OffsetDateTime,
            OffsetDateTime,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, type, status, priority, correlation_id, send_at, created_at, updated_at, severity, error_code,
                    error_class
             FROM notifications
             WHERE tenant_id = $1
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR type = $3)
               AND ($4::text IS NULL OR correlation_id = $4)
               AND ($5::timestamptz IS NULL OR created_at >= $5)
               AND ($6::timestamptz IS NULL OR created_at < $6)
               AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8::uuid))
               AND ($10::text IS NULL OR severity = $10)
               AND ($11::text IS NULL OR error_code = $11)
               AND ($12::text IS NULL OR error_class = $12)
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
        .bind(f.severity.map(domain::request::Severity::as_str))
        .bind(&f.error_code)
        .bind(&f.error_class)
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
                    severity: parse_severity(r.8.as_deref())?,
                    error_code: r.9,
                    error_class: r.10,
                    send_at: r.5,
                    created_at: r.6,
                    updated_at: r.7,
                })
            })
            .collect()
    }
}

/// Truncates `items` (read one longer than a page) to `page`, returning the page's last
/// item when there were more.
fn more<T>(items: &mut Vec<T>, page: usize) -> Option<&T> {
    if items.len() > page {
        items.truncate(page);
        items.last()
    } else {
        None
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    action: String,
    delivery_id: Option<Uuid>,
    actor: String,
    detail: serde_json::Value,
    created_at: OffsetDateTime,
}

impl EventRow {
    fn view(self) -> AuditEventView {
        AuditEventView {
            action: self.action,
            delivery_id: self.delivery_id,
            actor: self.actor,
            detail: self.detail,
            created_at: self.created_at,
        }
    }
}

fn parse_channel(s: &str) -> Result<Channel> {
    s.parse().map_err(|_| corrupt(format!("channel {s}")))
}

fn parse_severity(s: Option<&str>) -> Result<Option<domain::request::Severity>> {
    s.map(|s| domain::request::Severity::parse(s).ok_or_else(|| corrupt(format!("severity {s}")))).transpose()
}

fn parse_status(s: &str) -> Result<NotificationStatus> {
    NotificationStatus::parse(s).ok_or_else(|| corrupt(format!("notification status {s}")))
}

fn parse_priority(s: &str) -> Result<Priority> {
    Priority::parse(s).ok_or_else(|| corrupt(format!("priority {s}")))
}
