use domain::{Content, DeliveryJob, DeliveryMessage, Priority, SendFailure};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{OUTBOX_CHANNEL, Result, Store, corrupt};

/// What a worker may do with a message.
#[derive(Debug)]
pub enum Claim {
    /// The delivery is now `sending` for this attempt: send it. The time is when its
    /// notification was accepted.
    Claimed(Box<DeliveryJob>, OffsetDateTime),
    /// Already terminal, an older attempt, or in flight elsewhere: drop the message.
    Stale(&'static str),
    /// No such delivery on this channel: the message is poison.
    Unknown,
}

/// The outcome of one attempt, as the worker records it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub provider: String,
    /// The trace of the attempt, carried by the retry's outbox row.
    pub traceparent: Option<String>,
    pub started_at: OffsetDateTime,
    pub latency_ms: i32,
    pub result: AttemptResult,
}

#[derive(Debug, Clone)]
pub enum AttemptResult {
    Sent {
        provider_message_id: String,
        response_excerpt: Option<String>,
    },
    /// A retryable failure with attempts left: `retrying`, due again at `at`.
    Retry {
        failure: SendFailure,
        at: OffsetDateTime,
    },
    /// A permanent failure, or retries exhausted: `failed`.
    Failed {
        failure: SendFailure,
    },
}

impl Store {
    /// Marks the delivery `sending` for `msg.attempt` if the message is the one it waits
    /// for: status pending/queued/retrying with `attempt - 1` attempts so far. A message
    /// the broker redelivered may also take over a `sending` row of the same attempt: its
    /// previous holder died before recording the outcome.
    pub async fn claim_delivery(&self, msg: &DeliveryMessage, redelivered: bool) -> Result<Claim> {
        type Row = (
            Uuid,
            String,
            i32,
            String,
            serde_json::Value,
            serde_json::Value,
            String,
            OffsetDateTime,
            Option<String>,
            Option<serde_json::Value>,
        );
        let row: Option<Row> = sqlx::query_as(
            "WITH claimed AS (
                UPDATE deliveries d SET status = 'sending', attempts = $4, next_attempt_at = NULL, updated_at = now()
                WHERE d.id = $1 AND d.tenant_id = $2 AND d.channel = $3
                  AND ((d.status IN ('pending', 'queued', 'retrying') AND d.attempts = $4 - 1)
                       OR (d.status = 'sending' AND d.attempts = $4 AND $5))
                RETURNING d.notification_id, d.recipient, d.retry_base, d.content),
             processing AS (
                UPDATE notifications n SET status = 'processing', updated_at = now()
                FROM claimed c WHERE n.id = c.notification_id AND n.status = 'pending')
             SELECT c.notification_id, c.recipient, c.retry_base, n.type, coalesce(c.content, n.content), n.data,
                    n.priority, n.created_at, n.workflow, n.retry
             FROM claimed c JOIN notifications n ON n.id = c.notification_id",
        )
        .bind(msg.delivery_id)
        .bind(msg.tenant_id)
        .bind(msg.channel.as_str())
        .bind(msg.attempt)
        .bind(redelivered)
        .fetch_optional(&self.pool)
        .await?;

        if let Some((
            notification_id,
            recipient,
            retry_base,
            kind,
            content,
            data,
            priority,
            accepted_at,
            workflow,
            retry,
        )) = row
        {
            let content: Content =
                serde_json::from_value(content).map_err(|e| corrupt(format!("notification content: {e}")))?;
            let data = match data {
                serde_json::Value::Object(map) => map,
                other => return Err(corrupt(format!("notification data is not an object: {other}"))),
            };
            let retry = retry
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| corrupt(format!("notification retry policy: {e}")))?;
            return Ok(Claim::Claimed(
                Box::new(DeliveryJob {
                    delivery_id: msg.delivery_id,
                    notification_id,
                    tenant_id: msg.tenant_id,
                    channel: msg.channel,
                    attempt: msg.attempt,
                    retry_base,
                    recipient,
                    kind,
                    priority: Priority::parse(&priority).ok_or_else(|| corrupt(format!("priority {priority}")))?,
                    content,
                    data,
                    workflow,
                    retry,
                }),
                accepted_at,
            ));
        }

        let current: Option<(String, i32)> =
            sqlx::query_as("SELECT status, attempts FROM deliveries WHERE id = $1 AND tenant_id = $2 AND channel = $3")
                .bind(msg.delivery_id)
                .bind(msg.tenant_id)
                .bind(msg.channel.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match current {
            None => Claim::Unknown,
            Some((status, _)) if domain::DeliveryStatus::parse(&status).is_some_and(|s| s.is_terminal()) => {
                Claim::Stale("delivery is already final")
            }
            Some((_, attempts)) if attempts >= msg.attempt => Claim::Stale("attempt already taken"),
            Some(_) => Claim::Stale("message is ahead of the delivery's attempts"),
        })
    }

    /// Records the attempt and the delivery's new state, schedules the retry (an outbox
    /// row, with a NOTIFY so relays wake for it) and refreshes the notification's aggregate
    /// status, all in one transaction. The notification row is locked first so concurrent
    /// outcomes for its deliveries serialize and the aggregate sees all of them.
    pub async fn record_attempt(&self, job: &DeliveryJob, rec: &AttemptRecord) -> Result<()> {
        let (status, outcome, provider_message_id, excerpt, failure, retry_at) = match &rec.result {
            AttemptResult::Sent { provider_message_id, response_excerpt } => {
                ("sent", "sent", Some(provider_message_id.as_str()), response_excerpt.as_deref(), None, None)
            }
            AttemptResult::Retry { failure, at } => {
                ("retrying", failure.kind.as_str(), None, None, Some(failure), Some(*at))
            }
            AttemptResult::Failed { failure } => ("failed", failure.kind.as_str(), None, None, Some(failure), None),
        };
        let code = failure.map(|f| f.code.as_str());
        let message = failure.map(|f| truncate(&f.message, 1000));

        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT 1 FROM notifications WHERE id = $1 FOR NO KEY UPDATE")
            .bind(job.notification_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "WITH updated AS (
                UPDATE deliveries SET status = $3, provider = $4,
                    provider_message_id = coalesce($5, provider_message_id),
                    last_error_code = $6, last_error_message = $7, next_attempt_at = $8,
                    sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END, updated_at = now()
                WHERE id = $1 AND status = 'sending' AND attempts = $2
                RETURNING id),
             attempt AS (
                INSERT INTO delivery_attempts (tenant_id, delivery_id, number, provider, outcome, error_code,
                    error_message, response_excerpt, latency_ms, started_at)
                VALUES ($9, $1, $2, $4, $10, $6, $7, $11, $12, $13)),
             retry AS (
                INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, available_at,
                                    traceparent)
                SELECT $9, $14, id, $15, $2 + 1, $16, $8, $18 FROM updated WHERE $8::timestamptz IS NOT NULL
                RETURNING id)
             SELECT pg_notify($17, '') FROM retry LIMIT 1",
        )
        .bind(job.delivery_id)
        .bind(job.attempt)
        .bind(status)
        .bind(&rec.provider)
        .bind(provider_message_id)
        .bind(code)
        .bind(message)
        .bind(retry_at)
        .bind(job.tenant_id)
        .bind(outcome)
        .bind(excerpt.map(|e| truncate(e, 1000)))
        .bind(rec.latency_ms)
        .bind(rec.started_at)
        .bind(job.notification_id)
        .bind(job.channel.as_str())
        .bind(job.priority.rank())
        .bind(OUTBOX_CHANNEL)
        .bind(&rec.traceparent)
        .execute(&mut *tx)
        .await?;
        refresh_notification_statuses(&mut tx, &[job.notification_id]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Delivery status and attempt count, for tests and operators.
    pub async fn delivery_state(&self, tenant_id: Uuid, delivery_id: Uuid) -> Result<Option<(String, i32)>> {
        Ok(sqlx::query_as("SELECT status, attempts FROM deliveries WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(delivery_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// Recomputes the status of the notifications `ids` from their deliveries (DESIGN.md §4),
/// in one statement: `processing` while any is in flight; then `sent` if some succeeded
/// and none failed, `partial` if both, `failed` if only failures, `cancelled` if all were
/// cancelled. Suppressed deliveries count for nothing, so a notification whose deliveries
/// were all suppressed is `sent`: nothing that should have gone out failed.
pub(crate) async fn refresh_notification_statuses(tx: &mut sqlx::PgConnection, ids: &[Uuid]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE notifications n SET status = agg.status, updated_at = now()
         FROM (SELECT notification_id, CASE
                 WHEN bool_or(status IN ('pending', 'queued', 'sending', 'retrying')) THEN 'processing'
                 WHEN bool_or(status IN ('sent', 'delivered')) AND bool_or(status IN ('failed', 'bounced', 'undelivered'))
                     THEN 'partial'
                 WHEN bool_or(status IN ('sent', 'delivered')) THEN 'sent'
                 WHEN bool_or(status IN ('failed', 'bounced', 'undelivered')) THEN 'failed'
                 WHEN bool_or(status = 'cancelled') THEN 'cancelled'
                 ELSE 'sent' END AS status
               FROM deliveries WHERE notification_id = ANY($1) GROUP BY notification_id) agg
         WHERE n.id = agg.notification_id AND n.status IS DISTINCT FROM agg.status",
    )
    .bind(ids)
    .execute(tx)
    .await?;
    Ok(())
}

pub(crate) fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
