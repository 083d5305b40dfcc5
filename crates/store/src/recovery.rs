//! Recovering stranded deliveries: not final, no outbox row to move them on, and no copy
//! of their message left to consume. A message that the broker dead-lettered at its
//! delivery limit, that a purge removed, or that was lost with a broker, and a worker that
//! died holding a claim, leave a delivery so. The relay's sweeper queues such deliveries
//! again (ARCHITECTURE.md, "the recovery rule"), and an operator may do so at once through
//! `POST /v1/deliveries/{id}/retry`; both write an audit event.
//!
//! Lock order as everywhere: the deliveries (the outbox rows written here are new), then
//! the notifications.

use std::time::Duration;

use domain::{Channel, Priority};
use uuid::Uuid;

use crate::{ERASED, Result, Store, corrupt, deliveries::refresh_notification_statuses, millis};

/// The recovery rule: a delivery is stranded when it is not final, has no outbox row, and
/// either
/// - it is `sending` under a lease that has run out: its holder died or lost its way. The
///   recovery clears the lease, so one claim is recovered once, however long the copy
///   queued for it waits; a new claim sets a lease again; or
/// - it has not changed for `$1` milliseconds and its channel's queue is one of `$2` (the
///   queues the sweeper found holding no message ready to deliver for as long): no copy
///   of its message is left to consume, so it was purged, dead-lettered or lost. A delivery whose message
///   waits in a deep queue, however long, is never queued twice, nor failed.
fn stranded(after: &str, drained: &str) -> String {
    format!(
        "d.status IN ('pending', 'queued', 'sending', 'retrying')
         AND ((d.status = 'sending' AND d.lease_until < now())
              OR (d.updated_at < now() - {after} * interval '1 millisecond' AND d.channel = ANY({drained})))
         AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.delivery_id = d.id)"
    )
}

fn channel_names(channels: &[Channel]) -> Vec<&'static str> {
    channels.iter().map(|c| c.as_str()).collect()
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Queued again (a new outbox row).
    pub requeued: u64,
    /// Failed with `stranded`: recovered too often without an outcome.
    pub failed: u64,
    /// Cancelled: the recipient was erased meanwhile.
    pub cancelled: u64,
}

impl Recovered {
    pub fn total(&self) -> u64 {
        self.requeued + self.failed + self.cancelled
    }
}

/// A stranded delivery as the sweep found it.
#[derive(sqlx::FromRow)]
struct Stranded {
    id: Uuid,
    notification_id: Uuid,
    status: String,
    attempts: i32,
    erased: bool,
    recoveries: i32,
    priority: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Requeue,
    Fail,
    Cancel,
}

impl Fate {
    fn as_str(self) -> &'static str {
        match self {
            Fate::Requeue => "requeued",
            Fate::Fail => "failed",
            Fate::Cancel => "cancelled",
        }
    }
}

/// Who recovers a delivery, for its audit event.
struct Recoverer<'a> {
    action: &'static str,
    actor: &'a str,
    traceparent: Option<&'a str>,
}

impl Store {
    /// One sweep: up to `limit` stranded deliveries (see [`stranded`]; `drained`: the
    /// channels whose queue has held no ready message for `after`) are queued again,
    /// each as the attempt its lost message carried (a `sending` one keeps its attempt:
    /// the new message takes the expired claim over). Since a delivery is recovered only
    /// once no copy of it is left (its last one was claimed, or is gone from its queue), a
    /// delivery recovered `max_recoveries` times without an outcome in between is in a
    /// crash loop (a message that crashes every worker): it is failed with `stranded`
    /// instead of going round for ever. One whose recipient was erased is cancelled. Rows
    /// another sweeper holds are skipped, so any number of relays may sweep at once.
    pub async fn recover_stranded(
        &self,
        after: Duration,
        max_recoveries: i32,
        limit: i64,
        drained: &[Channel],
    ) -> Result<Recovered> {
        let mut tx = self.pool.begin().await?;
        let stranded: Vec<Stranded> = sqlx::query_as(&format!(
            "SELECT d.id, d.notification_id, d.status, d.attempts, d.recipient = $3 AS erased, d.recoveries, n.priority
             FROM deliveries d JOIN notifications n ON n.id = d.notification_id
             WHERE {}
             ORDER BY d.updated_at LIMIT $4
             FOR UPDATE OF d SKIP LOCKED",
            stranded("$1", "$2")
        ))
        .persistent(false)
        .bind(millis(after))
        .bind(channel_names(drained))
        .bind(ERASED)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let fate = |s: &Stranded| match () {
            _ if s.erased => Fate::Cancel,
            _ if s.recoveries >= max_recoveries => Fate::Fail,
            _ => Fate::Requeue,
        };
        let recoverer = Recoverer { action: "recovered", actor: "sweeper", traceparent: None };
        let recovered = settle(&mut tx, &stranded, fate, &recoverer).await?;
        tx.commit().await?;
        if recovered.requeued > 0 {
            self.wake_relays();
        }
        Ok(recovered)
    }

    /// Queues one stranded delivery of the tenant again at once (an operator's retry),
    /// however often it was recovered before. `None` if it is not stranded for longer
    /// than `after` (in flight, or still waiting for its outbox row), or not found. The
    /// operator vouches that its message is gone: its queue counts as drained.
    pub(crate) async fn retry_stranded(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant_id: Uuid,
        delivery_id: Uuid,
        after: Duration,
        actor: &str,
        traceparent: Option<&str>,
    ) -> Result<Option<Uuid>> {
        let stranded: Option<Stranded> = sqlx::query_as(&format!(
            "SELECT d.id, d.notification_id, d.status, d.attempts, d.recipient = $3 AS erased, d.recoveries, n.priority
             FROM deliveries d JOIN notifications n ON n.id = d.notification_id
             WHERE d.tenant_id = $4 AND d.id = $5 AND {}
             FOR UPDATE OF d",
            stranded("$1", "$2")
        ))
        .bind(millis(after))
        .bind(channel_names(&Channel::QUEUED))
        .bind(ERASED)
        .bind(tenant_id)
        .bind(delivery_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(stranded) = stranded else { return Ok(None) };
        let fate = |s: &Stranded| if s.erased { Fate::Cancel } else { Fate::Requeue };
        let recoverer = Recoverer { action: "retried", actor, traceparent };
        let recovered = settle(tx, std::slice::from_ref(&stranded), fate, &recoverer).await?;
        Ok((recovered.requeued == 1).then_some(stranded.notification_id))
    }
}

/// Writes what becomes of each stranded delivery, its outbox row and its audit event, and
/// refreshes the notifications of those that became final.
async fn settle(
    tx: &mut sqlx::PgConnection,
    stranded: &[Stranded],
    fate: impl Fn(&Stranded) -> Fate,
    by: &Recoverer<'_>,
) -> Result<Recovered> {
    let mut recovered = Recovered::default();
    if stranded.is_empty() {
        return Ok(recovered);
    }
    let (mut ids, mut fates, mut was, mut attempts, mut ranks) = (vec![], vec![], vec![], vec![], vec![]);
    let mut settled_notifications = vec![];
    for s in stranded {
        let f = fate(s);
        match f {
            Fate::Requeue => recovered.requeued += 1,
            Fate::Fail => recovered.failed += 1,
            Fate::Cancel => recovered.cancelled += 1,
        }
        if f != Fate::Requeue {
            settled_notifications.push(s.notification_id);
        }
        let rank = Priority::parse(&s.priority).ok_or_else(|| corrupt(format!("priority {}", s.priority)))?.rank();
        ids.push(s.id);
        fates.push(f.as_str());
        was.push(s.status.as_str());
        // The attempt the lost message carried: a `sending` delivery had counted it.
        attempts.push(if s.status == "sending" { s.attempts } else { s.attempts + 1 });
        ranks.push(rank);
    }
    sqlx::query(
        "WITH s AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::smallint[])
                 AS s(id, fate, was, attempt, rank)),
         changed AS (
            UPDATE deliveries d SET
                status = CASE s.fate WHEN 'failed' THEN 'failed' WHEN 'cancelled' THEN 'cancelled' ELSE d.status END,
                last_error_code = CASE s.fate WHEN 'failed' THEN 'stranded' ELSE d.last_error_code END,
                last_error_message = CASE s.fate WHEN 'failed' THEN 'no outcome after ' || d.recoveries || ' recoveries'
                                     WHEN 'cancelled' THEN NULL ELSE d.last_error_message END,
                next_attempt_at = NULL,
                -- A recovered claim is recovered once: its holder keeps its claim id (a
                -- late outcome still applies), and the next claim sets a lease again.
                lease_until = NULL,
                recoveries = CASE WHEN $8 = 'recovered' THEN d.recoveries + 1 ELSE 0 END,
                updated_at = now()
            FROM s WHERE d.id = s.id
            RETURNING d.id, d.tenant_id, d.notification_id, d.channel),
         queued AS (
            INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, traceparent)
            SELECT c.tenant_id, c.notification_id, c.id, c.channel, s.attempt, s.rank, $7
            FROM changed c JOIN s ON s.id = c.id WHERE s.fate = 'requeued')
         INSERT INTO audit_events (tenant_id, notification_id, delivery_id, action, actor, detail)
         SELECT c.tenant_id, c.notification_id, c.id, $8, $6,
                jsonb_build_object('stranded', s.was, 'attempt', s.attempt, 'outcome', s.fate)
         FROM changed c JOIN s ON s.id = c.id",
    )
    .persistent(false)
    .bind(&ids)
    .bind(&fates)
    .bind(&was)
    .bind(&attempts)
    .bind(&ranks)
    .bind(by.actor)
    .bind(by.traceparent)
    .bind(by.action)
    .execute(&mut *tx)
    .await?;
    settled_notifications.sort_unstable();
    settled_notifications.dedup();
    refresh_notification_statuses(tx, &settled_notifications).await?;
    Ok(recovered)
}
