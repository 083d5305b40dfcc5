//! What a user or operator does to notifications already accepted: cancel, retry. Each
//! writes an audit event in the same transaction.
//!
//! Lock order, shared with the relay and the workers so none of them deadlock: outbox
//! rows, then deliveries, then the notification.

use domain::Priority;
use uuid::Uuid;

use crate::{Origin, Result, Store, corrupt, deliveries::refresh_notification_statuses};

#[derive(Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// This many deliveries were cancelled.
    Some(u64),
    /// Every delivery had already been sent, failed, or is being sent right now.
    Nothing,
    NotFound,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Retried {
    /// The delivery is queued again, for the notification with this id.
    Queued(Uuid),
    /// Only a `failed` delivery can be retried, or a stranded one; this is its status.
    NotFailed(String),
    /// Not final but not stranded either: in flight, or waiting for its outbox row.
    InFlight(String),
    NotFound,
}

const CANCELLABLE: &str = "('pending', 'queued', 'retrying')";

impl Store {
    /// Cancels every delivery of the notification that is not sent or being sent, and
    /// removes their outbox rows. A message already on its way is dropped by the worker,
    /// which finds the delivery `cancelled`.
    pub async fn cancel_notification(&self, tenant_id: Uuid, id: Uuid, actor: &str) -> Result<Cancelled> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM notifications WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(Cancelled::NotFound);
        }
        sqlx::query(&format!(
            "DELETE FROM outbox WHERE notification_id = $1 AND delivery_id IN
                (SELECT id FROM deliveries WHERE notification_id = $1 AND status IN {CANCELLABLE})"
        ))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let (count,): (i64,) = sqlx::query_as(&format!(
            "WITH cancelled AS (
                UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = now()
                WHERE notification_id = $1 AND status IN {CANCELLABLE} RETURNING id),
             audit AS (
                INSERT INTO audit_events (tenant_id, notification_id, action, actor, detail)
                SELECT $2, $1, 'cancelled', $3, jsonb_build_object('deliveries', count(*))
                FROM cancelled HAVING count(*) > 0)
             SELECT count(*) FROM cancelled"
        ))
        .bind(id)
        .bind(tenant_id)
        .bind(actor)
        .fetch_one(&mut *tx)
        .await?;
        if count == 0 {
            return Ok(Cancelled::Nothing);
        }
        refresh_notification_statuses(&mut tx, &[id]).await?;
        tx.commit().await?;
        Ok(Cancelled::Some(count as u64))
    }

    /// Queues a `failed` delivery again as a new series of attempts: the retry policy
    /// starts over, attempt numbers go on. A delivery stranded for longer than
    /// `stranded_after` (see [`crate::recovery`]) is queued again as its lost message was.
    pub async fn retry_delivery(
        &self,
        tenant_id: Uuid,
        delivery_id: Uuid,
        origin: &Origin<'_>,
        stranded_after: std::time::Duration,
    ) -> Result<Retried> {
        let mut tx = self.pool.begin().await?;
        let current: Option<(Uuid, String, String)> = sqlx::query_as(
            "SELECT d.notification_id, d.status, n.priority FROM deliveries d JOIN notifications n ON n.id = d.notification_id
             WHERE d.tenant_id = $1 AND d.id = $2",
        )
        .bind(tenant_id)
        .bind(delivery_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((notification_id, status, priority)) = current else { return Ok(Retried::NotFound) };
        let unsettled = domain::DeliveryStatus::parse(&status).is_some_and(|s| !s.is_terminal());
        if unsettled {
            let requeued = self
                .retry_stranded(&mut tx, tenant_id, delivery_id, stranded_after, origin.actor, origin.traceparent)
                .await?;
            tx.commit().await?;
            return Ok(match requeued {
                Some(notification_id) => {
                    self.wake_relays();
                    Retried::Queued(notification_id)
                }
                None => Retried::InFlight(status),
            });
        }
        let rank = Priority::parse(&priority).ok_or_else(|| corrupt(format!("priority {priority}")))?.rank();
        let retried: Option<(i32,)> = sqlx::query_as(
            "WITH retried AS (
                UPDATE deliveries SET status = 'pending', retry_base = attempts, last_error_code = NULL,
                    last_error_message = NULL, next_attempt_at = NULL, updated_at = now()
                WHERE tenant_id = $1 AND id = $2 AND status = 'failed'
                RETURNING notification_id, channel, attempts),
             queued AS (
                INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, traceparent)
                SELECT $1, notification_id, $2, channel, attempts + 1, $3, $5 FROM retried),
             audit AS (
                INSERT INTO audit_events (tenant_id, notification_id, delivery_id, action, actor, detail)
                SELECT $1, notification_id, $2, 'retried', $4, jsonb_build_object('from_attempt', attempts + 1)
                FROM retried)
             SELECT attempts FROM retried",
        )
        .bind(tenant_id)
        .bind(delivery_id)
        .bind(rank)
        .bind(origin.actor)
        .bind(origin.traceparent)
        .fetch_optional(&mut *tx)
        .await?;
        if retried.is_none() {
            return Ok(Retried::NotFailed(status));
        }
        refresh_notification_statuses(&mut tx, &[notification_id]).await?;
        tx.commit().await?;
        self.wake_relays();
        Ok(Retried::Queued(notification_id))
    }
}
