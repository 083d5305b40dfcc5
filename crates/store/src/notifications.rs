use domain::{Channel, DeliveryStatus, NotificationStatus, Priority, ValidNotification};
use serde::Serialize;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{OUTBOX_CHANNEL, Result, Store, corrupt};

/// What `POST /v1/notifications` answers.
#[derive(Debug, Clone, Serialize)]
pub struct AcceptedNotification {
    pub id: Uuid,
    pub status: NotificationStatus,
    pub deliveries: Vec<AcceptedDelivery>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize)]
pub struct AcceptedDelivery {
    pub id: Uuid,
    pub channel: Channel,
    pub recipient: String,
    pub status: DeliveryStatus,
}

/// `GET /v1/notifications/{id}`: the notification, its deliveries and their attempts.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: NotificationStatus,
    pub priority: Priority,
    pub correlation_id: Option<String>,
    pub data: serde_json::Value,
    pub content: serde_json::Value,
    #[serde(with = "time::serde::rfc3339::option")]
    pub send_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: Uuid,
    pub channel: Channel,
    pub recipient: String,
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

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptView {
    #[serde(skip)]
    pub delivery_id: Uuid,
    pub number: i32,
    pub provider: String,
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub latency_ms: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

impl Store {
    /// Writes the notification, its deliveries and their outbox rows in one statement (so
    /// one transaction and one round trip). The NOTIFY reaches the relays at commit, also
    /// for scheduled rows, so a relay can move its next wake-up earlier.
    pub async fn accept_notification(&self, tenant_id: Uuid, n: &ValidNotification) -> Result<AcceptedNotification> {
        let id = Uuid::now_v7();
        let delivery_ids: Vec<Uuid> = n.deliveries.iter().map(|_| Uuid::now_v7()).collect();
        let channels: Vec<&str> = n.deliveries.iter().map(|d| d.channel.as_str()).collect();
        let recipients: Vec<&str> = n.deliveries.iter().map(|d| d.recipient.as_str()).collect();
        let (created_at,): (OffsetDateTime,) = sqlx::query_as(
            "WITH n AS (
                INSERT INTO notifications (id, tenant_id, type, priority, data, content, correlation_id, send_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                RETURNING created_at),
             d AS (
                INSERT INTO deliveries (id, tenant_id, notification_id, channel, recipient)
                SELECT u.id, $2, $1, u.channel, u.recipient
                FROM unnest($9::uuid[], $10::text[], $11::text[]) AS u(id, channel, recipient)),
             o AS (
                INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, available_at)
                SELECT $2, $1, u.id, u.channel, 1, $12, coalesce($8::timestamptz, now())
                FROM unnest($9::uuid[], $10::text[]) AS u(id, channel)),
             wake AS (SELECT pg_notify($13, ''))
             SELECT created_at FROM n, wake",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(&n.kind)
        .bind(n.priority.as_str())
        .bind(Json(&n.data))
        .bind(Json(&n.content))
        .bind(&n.correlation_id)
        .bind(n.send_at)
        .bind(&delivery_ids)
        .bind(&channels)
        .bind(&recipients)
        .bind(n.priority.rank())
        .bind(OUTBOX_CHANNEL)
        .fetch_one(&self.pool)
        .await?;
        Ok(AcceptedNotification {
            id,
            status: NotificationStatus::Pending,
            created_at,
            deliveries: n
                .deliveries
                .iter()
                .zip(delivery_ids)
                .map(|(d, id)| AcceptedDelivery {
                    id,
                    channel: d.channel,
                    recipient: d.recipient.clone(),
                    status: DeliveryStatus::Pending,
                })
                .collect(),
        })
    }

    pub async fn get_notification(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<NotificationView>> {
        type Row = (
            Uuid,
            String,
            String,
            String,
            Option<String>,
            serde_json::Value,
            serde_json::Value,
            Option<OffsetDateTime>,
            OffsetDateTime,
            OffsetDateTime,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, type, status, priority, correlation_id, data, content, send_at, created_at, updated_at
             FROM notifications WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, kind, status, priority, correlation_id, data, content, send_at, created_at, updated_at)) = row
        else {
            return Ok(None);
        };

        type DRow = (
            Uuid,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            i32,
            Option<String>,
            Option<String>,
            Option<OffsetDateTime>,
            Option<OffsetDateTime>,
            OffsetDateTime,
            OffsetDateTime,
        );
        let drows: Vec<DRow> = sqlx::query_as(
            "SELECT id, channel, recipient, status, provider, provider_message_id, attempts, last_error_code,
                    last_error_message, next_attempt_at, sent_at, created_at, updated_at
             FROM deliveries WHERE tenant_id = $1 AND notification_id = $2 ORDER BY id",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut attempts: Vec<AttemptView> = sqlx::query_as(
            "SELECT a.delivery_id, a.number, a.provider, a.outcome, a.error_code, a.error_message, a.latency_ms,
                    a.started_at, a.finished_at
             FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.tenant_id = $1 AND d.notification_id = $2 ORDER BY a.id",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;

        let mut deliveries = Vec::with_capacity(drows.len());
        for d in drows {
            let (did, channel, recipient, dstatus, provider, provider_message_id, attempt_count, code, message) =
                (d.0, d.1, d.2, d.3, d.4, d.5, d.6, d.7, d.8);
            let mine: Vec<AttemptView>;
            (mine, attempts) = attempts.into_iter().partition(|a| a.delivery_id == did);
            deliveries.push(DeliveryView {
                id: did,
                channel: channel.parse().map_err(|_| corrupt(format!("channel {channel}")))?,
                recipient,
                status: DeliveryStatus::parse(&dstatus).ok_or_else(|| corrupt(format!("delivery status {dstatus}")))?,
                provider,
                provider_message_id,
                attempt_count,
                last_error_code: code,
                last_error_message: message,
                next_attempt_at: d.9,
                sent_at: d.10,
                created_at: d.11,
                updated_at: d.12,
                attempts: mine,
            });
        }
        Ok(Some(NotificationView {
            id,
            kind,
            status: NotificationStatus::parse(&status)
                .ok_or_else(|| corrupt(format!("notification status {status}")))?,
            priority: Priority::parse(&priority).ok_or_else(|| corrupt(format!("priority {priority}")))?,
            correlation_id,
            data,
            content,
            send_at,
            created_at,
            updated_at,
            deliveries,
        }))
    }
}
