use std::time::Duration;

use domain::{DeliveryMessage, OutboxMessage, Publishable, Route, WebhookMessage};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Result, Store, corrupt};

/// A row `claim_outbox` returns: tenant, notification, delivery, channel, attempt,
/// traceparent, priority.
type ClaimedRow = (Uuid, Uuid, Uuid, String, i32, Option<String>, i16);

/// The LISTEN/NOTIFY channel on which writers of due outbox rows wake the relays.
pub const OUTBOX_CHANNEL: &str = "notify_outbox";

/// Outbox rows claimed and already deleted inside an open transaction. Commit once the
/// broker has answered for every message (the refused ones [`ClaimedBatch::park`]ed);
/// dropping the batch rolls back and the rows are due again, for this relay or another.
pub struct ClaimedBatch {
    tx: Transaction<'static, Postgres>,
    /// The store's relaxed pool, for the `queued` mark.
    relaxed: PgPool,
    pub messages: Vec<OutboxMessage>,
    /// Each message's outbox priority, for writing back the rows it parks.
    priorities: Vec<i16>,
}

impl ClaimedBatch {
    /// Writes the rows of the messages at `refused` back, each due its delay from now, and takes
    /// those messages out of the batch: the broker would not take them (their queue is
    /// full or has no quorum), and the rest of the batch need not wait for them. Commit
    /// afterwards; a batch dropped instead rolls the write-back back with the claim.
    pub async fn park(&mut self, refused: &[(usize, Duration)]) -> Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        let parked: Vec<&OutboxMessage> = refused.iter().map(|&(i, _)| &self.messages[i]).collect();
        let column = |f: fn(&OutboxMessage) -> Uuid| parked.iter().map(|m| f(m)).collect::<Vec<Uuid>>();
        let channels: Vec<&str> = parked.iter().map(|m| m.route().as_str()).collect();
        let attempts: Vec<i32> = parked.iter().map(|m| m.attempt()).collect();
        let traceparents: Vec<Option<&str>> = parked.iter().map(|m| m.traceparent()).collect();
        let priorities: Vec<i16> = refused.iter().map(|&(i, _)| self.priorities[i]).collect();
        let delays_ms: Vec<i64> = refused.iter().map(|(_, delay)| delay.as_millis() as i64).collect();
        sqlx::query(
            "INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, traceparent,
                                 available_at)
             SELECT tenant_id, notification_id, delivery_id, channel, attempt, priority, traceparent,
                    now() + delay_ms * interval '1 millisecond'
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int[], $6::smallint[], $7::text[],
                         $8::bigint[])
                  AS p(tenant_id, notification_id, delivery_id, channel, attempt, priority, traceparent, delay_ms)",
        )
        .bind(column(OutboxMessage::tenant_id))
        .bind(column(outbox_notification_id))
        .bind(column(|m| m.id()))
        .bind(&channels)
        .bind(&attempts)
        .bind(&priorities)
        .bind(&traceparents)
        .bind(&delays_ms)
        .execute(&mut *self.tx)
        .await?;
        let kept = std::mem::take(&mut self.messages)
            .into_iter()
            .zip(std::mem::take(&mut self.priorities))
            .enumerate()
            .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i))
            .map(|(_, kept)| kept);
        (self.messages, self.priorities) = kept.unzip();
        Ok(())
    }

    /// Commits the claim, then marks the deliveries `queued`. Not in the claim's
    /// transaction: it would hold their rows locked until the broker confirmed, and the
    /// workers, which get the messages sooner, would wait on those locks to claim them.
    /// A delivery a worker holds or took meanwhile is skipped: the worker moves it on.
    /// The mark does not wait for the disk: lost in a crash, it leaves `pending`, which
    /// the workers claim all the same.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        let ids: Vec<Uuid> = self
            .messages
            .iter()
            .filter_map(|m| match m {
                OutboxMessage::Delivery(d) => Some(d.delivery_id),
                OutboxMessage::Webhook(_) => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        // The function's statement is planned once per connection
        // (migrations/20261206000014_generic_plans.sql).
        sqlx::query("SELECT mark_queued($1)").bind(&ids).execute(&self.relaxed).await?;
        Ok(())
    }
}

/// The outbox row's `notification_id`: a webhook message's row holds the message's own id
/// there (the column is the delivery's notification for a delivery).
fn outbox_notification_id(message: &OutboxMessage) -> Uuid {
    match message {
        OutboxMessage::Delivery(d) => d.notification_id,
        OutboxMessage::Webhook(w) => w.message_id,
    }
}

impl Store {
    /// Claims up to `limit` due rows, most urgent first, skipping rows another relay holds,
    /// of the routes in `room` and at most as many of each as its room says (what its
    /// queue may still take). The same statement deletes them; that takes effect only when
    /// the batch commits. The statement is the SQL function `claim_outbox`, planned once
    /// per connection (migrations/20261207000011_outbox_room.sql).
    pub async fn claim_outbox(&self, limit: i64, room: &[(Route, i64)]) -> Result<ClaimedBatch> {
        let mut tx = self.pool.begin().await?;
        let channels: Vec<&str> = room.iter().map(|(c, _)| c.as_str()).collect();
        let rooms: Vec<i64> = room.iter().map(|(_, n)| *n).collect();
        let rows: Vec<ClaimedRow> = sqlx::query_as("SELECT * FROM claim_outbox($1, $2, $3)")
            .bind(limit)
            .bind(&channels)
            .bind(&rooms)
            .fetch_all(&mut *tx)
            .await?;
        let priorities = rows.iter().map(|row| row.6).collect();
        let messages = rows
            .into_iter()
            .map(|(tenant_id, notification_id, id, route, attempt, traceparent, _)| {
                Ok(match Route::parse(&route) {
                    Some(Route::Channel(channel)) => {
                        let message = DeliveryMessage::new(id, notification_id, tenant_id, channel, attempt);
                        OutboxMessage::Delivery(DeliveryMessage { traceparent, ..message })
                    }
                    Some(Route::Webhooks) => OutboxMessage::Webhook(WebhookMessage {
                        traceparent,
                        ..WebhookMessage::new(id, tenant_id, attempt)
                    }),
                    None => return Err(corrupt(format!("outbox route {route}"))),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ClaimedBatch { tx, relaxed: self.relaxed.clone(), messages, priorities })
    }

    /// What the relay needs to know to sleep: whether rows are due now (locked by a relay
    /// or not; rows due now but locked by another relay are that relay's to publish), and
    /// when the earliest row not yet due becomes due. One round trip.
    pub async fn outbox_due(&self) -> Result<OutboxDue> {
        let (due_now, next): (bool, Option<OffsetDateTime>) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE available_at <= now()),
                    (SELECT min(available_at) FROM outbox WHERE available_at > now())",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxDue { due_now, next })
    }

    /// How long the oldest due row has waited, in seconds (0 when none is due): the
    /// outbox lag.
    pub async fn outbox_lag_seconds(&self) -> Result<f64> {
        let (lag,): (Option<f64>,) = sqlx::query_as(
            "SELECT extract(epoch FROM now() - min(available_at))::float8 FROM outbox WHERE available_at <= now()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(lag.unwrap_or(0.0).max(0.0))
    }

    /// Rows in the outbox, due or not. For tests and operators.
    pub async fn outbox_len(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(&self.pool).await?;
        Ok(n)
    }

    pub async fn listen_outbox(&self) -> Result<sqlx::postgres::PgListener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        Ok(listener)
    }
}

/// See [`Store::outbox_due`].
#[derive(Debug, Clone, Copy)]
pub struct OutboxDue {
    /// Some row is due now.
    pub due_now: bool,
    /// When the earliest row not yet due becomes due.
    pub next: Option<OffsetDateTime>,
}
