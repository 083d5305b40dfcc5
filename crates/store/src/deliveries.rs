use std::{borrow::Cow, collections::HashMap};

use domain::{Channel, Content, DeliveryJob, DeliveryMessage, DeliveryStatus, Priority, SendFailure};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Result, Store, corrupt,
    group::{BoxFuture, Grouped},
};

/// A worker's hold on the deliveries it claims: an id it draws once per message, so a
/// claim repeated after a lost reply finds its own row, and how long the hold lasts
/// before another message may take the delivery over.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub claim: Uuid,
    pub duration: std::time::Duration,
}

impl Lease {
    pub fn new(duration: std::time::Duration) -> Self {
        Self { claim: Uuid::new_v4(), duration }
    }
}

/// What a worker may do with a message.
#[derive(Debug)]
pub enum Claim {
    /// The delivery is now `sending` for this attempt: send it. The time is when its
    /// notification was accepted.
    Claimed(Box<DeliveryJob>, OffsetDateTime),
    /// Already terminal, an older attempt, or held by another live claim: drop the
    /// message (a delivery whose holder dies is recovered by the sweeper).
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
    /// Marks the delivery `sending` for `msg.attempt` under `lease` if the message is the
    /// one it waits for: status pending/queued/retrying with `attempt - 1` attempts so far.
    /// A `sending` row of the same attempt is taken only by its own claim (a claim
    /// repeated after its reply was lost) or once its lease has run out (its holder died
    /// or lost its way); while the lease holds, a redelivered copy is stale, so one
    /// delivery is never sent by two live workers at once. A delivery whose recipient
    /// was erased is never claimed. Concurrent claims share their statements (group
    /// commit, see [`crate::group`]).
    pub async fn claim_delivery(&self, msg: &DeliveryMessage, lease: Lease) -> Result<Claim> {
        let claims = self.groups.claims.get_or_init(|| {
            let closing = &self.groups.closing;
            Grouped::holding(self.relaxed.clone(), claim_group, WORKER_GROUPS_IN_FLIGHT, WORKER_GROUP_MAX, closing)
        });
        claims.call((msg.clone(), lease)).await?
    }

    /// Records the attempt and the delivery's new state, schedules the retry (an outbox
    /// row; the relays are woken after commit) and refreshes the notification's aggregate
    /// status, all in one transaction. The notification rows are locked first, in id
    /// order, so concurrent outcomes for one notification serialize and its aggregate
    /// sees all of them. Concurrent records share that transaction (group commit).
    ///
    /// The outcome applies to the delivery while `lease` still holds it, or when the claim
    /// was lost (the database crashed before the claim reached its disk: the delivery is
    /// back where the claim found it), so a send is never forgotten. It does not apply
    /// when another claim has taken the delivery over or it is final: then only the
    /// attempt is logged (a duplicate send shows there) and `false` is returned.
    pub async fn record_attempt(&self, job: &DeliveryJob, lease: Lease, rec: &AttemptRecord) -> Result<bool> {
        let records = self.groups.records.get_or_init(|| {
            let closing = &self.groups.closing;
            Grouped::holding(self.pool.clone(), record_group, WORKER_GROUPS_IN_FLIGHT, WORKER_GROUP_MAX, closing)
        });
        let outcome = Outcome {
            delivery_id: job.delivery_id,
            notification_id: job.notification_id,
            tenant_id: job.tenant_id,
            channel: job.channel,
            attempt: job.attempt,
            rank: job.priority.rank(),
            claim: lease.claim,
            record: rec.clone(),
        };
        let applied = records.call(outcome).await?;
        if applied && matches!(rec.result, AttemptResult::Retry { .. }) {
            self.wake_relays();
        }
        Ok(applied)
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

/// Claims and records of a worker written at once: a worker holds `prefetch` messages,
/// and a few groups in flight keep its database work overlapping its provider calls.
const WORKER_GROUPS_IN_FLIGHT: usize = 2;
const WORKER_GROUP_MAX: usize = 500;

type ClaimRow = (
    Uuid,
    Uuid,
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

/// The attempt a takeover logs for the claim it replaces: the holder may have sent it
/// before it died, so a duplicate send shows in the attempts log.
const ABANDONED: &str = "the worker sending this attempt stopped before recording its outcome; \
                         the provider may have sent it";

/// Claims a group of messages in one statement; the ones it could not claim are told
/// apart (stale or unknown) with a second. A claim that takes over an expired one logs
/// the replaced attempt as `ambiguous` (`worker_lost`).
fn claim_group<'a>(
    conn: &'a mut PgConnection,
    messages: &'a [(DeliveryMessage, Lease)],
) -> BoxFuture<'a, Result<Vec<Result<Claim>>>> {
    Box::pin(async move {
        let ids: Vec<Uuid> = messages.iter().map(|(m, _)| m.delivery_id).collect();
        let tenants: Vec<Uuid> = messages.iter().map(|(m, _)| m.tenant_id).collect();
        let channels: Vec<&str> = messages.iter().map(|(m, _)| m.channel.as_str()).collect();
        let attempts: Vec<i32> = messages.iter().map(|(m, _)| m.attempt).collect();
        let claims: Vec<Uuid> = messages.iter().map(|(_, l)| l.claim).collect();
        let lease_ms: Vec<i64> =
            messages.iter().map(|(_, l)| i64::try_from(l.duration.as_millis()).unwrap_or(i64::MAX)).collect();
        // The claim does not wait for its commit to reach the disk (the slot's connection
        // is from the relaxed pool): the outcome record that follows it waits for the log up to and
        // past it. If the database loses the claim in a crash, the outcome record finds
        // the delivery as the claim found it and applies all the same (see
        // `record_group`). One statement, committed on its own.
        // The notifications go `processing` in id order, as `record_group` locks them.
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "WITH m AS (
                SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::uuid[], $6::bigint[])
                     AS m(id, tenant_id, channel, attempt, claim, lease_ms)),
             held AS (
                SELECT d.id, d.tenant_id, d.attempts, d.claimed_by, d.updated_at FROM deliveries d
                WHERE d.id IN (SELECT id FROM m) AND d.status = 'sending'),
             claimed AS (
                UPDATE deliveries d SET status = 'sending', attempts = m.attempt, next_attempt_at = NULL,
                                        claimed_by = m.claim,
                                        lease_until = now() + m.lease_ms * interval '1 millisecond',
                                        updated_at = now()
                FROM m
                WHERE d.id = m.id AND d.tenant_id = m.tenant_id AND d.channel = m.channel AND d.recipient <> $7
                  AND ((d.status IN ('pending', 'queued', 'retrying') AND d.attempts = m.attempt - 1)
                       OR (d.status = 'sending' AND d.attempts = m.attempt
                           AND (d.claimed_by = m.claim OR d.lease_until IS NULL OR d.lease_until < now())))
                RETURNING d.id, d.claimed_by, d.notification_id, d.recipient, d.retry_base, d.content),
             abandoned AS (
                INSERT INTO delivery_attempts (tenant_id, delivery_id, number, provider, outcome, error_code,
                    error_message, latency_ms, started_at)
                SELECT h.tenant_id, h.id, h.attempts, 'unknown', 'ambiguous', 'worker_lost', $8,
                       (extract(epoch FROM now() - h.updated_at) * 1000)::int, h.updated_at
                FROM claimed c JOIN held h ON h.id = c.id
                WHERE h.claimed_by IS DISTINCT FROM c.claimed_by),
             waiting AS (
                SELECT n.id FROM notifications n
                WHERE n.id IN (SELECT notification_id FROM claimed) AND n.status = 'pending'
                ORDER BY n.id FOR NO KEY UPDATE),
             processing AS (
                UPDATE notifications n SET status = 'processing', updated_at = now()
                FROM waiting w WHERE n.id = w.id)
             SELECT c.id, c.claimed_by, c.notification_id, c.recipient, c.retry_base, n.type,
                    coalesce(c.content, n.content), n.data, n.priority, n.created_at, n.workflow, n.retry
             FROM claimed c JOIN notifications n ON n.id = c.notification_id",
        )
        .persistent(false)
        .bind(&ids)
        .bind(&tenants)
        .bind(&channels)
        .bind(&attempts)
        .bind(&claims)
        .bind(&lease_ms)
        .bind(crate::ERASED)
        .bind(ABANDONED)
        .fetch_all(&mut *conn)
        .await?;
        // Two copies of one message in a group both match the row; the update takes one
        // of them, and the one whose claim it recorded is the one that sends.
        let mut claimed: HashMap<(Uuid, Uuid), ClaimRow> = rows.into_iter().map(|r| ((r.0, r.1), r)).collect();
        let mut answers: Vec<Option<Result<Claim>>> =
            messages.iter().map(|(m, l)| claimed.remove(&(m.delivery_id, l.claim)).map(|row| job(m, row))).collect();

        let missed: Vec<usize> = (0..messages.len()).filter(|&i| answers[i].is_none()).collect();
        if !missed.is_empty() {
            let current: Vec<(Uuid, String, i32, String)> = sqlx::query_as(
                "SELECT d.id, d.status, d.attempts, d.recipient
                 FROM deliveries d JOIN unnest($1::uuid[], $2::uuid[], $3::text[]) AS m(id, tenant_id, channel)
                      ON d.id = m.id AND d.tenant_id = m.tenant_id AND d.channel = m.channel",
            )
            .persistent(false)
            .bind(missed.iter().map(|&i| ids[i]).collect::<Vec<_>>())
            .bind(missed.iter().map(|&i| tenants[i]).collect::<Vec<_>>())
            .bind(missed.iter().map(|&i| channels[i]).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
            let current: HashMap<Uuid, (String, i32, String)> =
                current.into_iter().map(|(id, s, a, r)| (id, (s, a, r))).collect();
            for i in missed {
                let (m, _) = &messages[i];
                answers[i] = Some(Ok(match current.get(&m.delivery_id) {
                    None => Claim::Unknown,
                    Some((status, _, _)) if DeliveryStatus::parse(status).is_some_and(|s| s.is_terminal()) => {
                        Claim::Stale("delivery is already final")
                    }
                    Some((_, _, recipient)) if recipient == crate::ERASED => Claim::Stale("recipient was erased"),
                    Some((status, attempts, _)) if status == "sending" && *attempts == m.attempt => {
                        Claim::Stale("attempt is held by another claim")
                    }
                    Some((_, attempts, _)) if *attempts >= m.attempt => Claim::Stale("attempt already taken"),
                    Some(_) => Claim::Stale("message is ahead of the delivery's attempts"),
                }));
            }
        }
        Ok(answers.into_iter().map(|a| a.expect("every message answered")).collect())
    })
}

/// The job of a claimed message, or `Corrupt` if its stored data cannot be read.
fn job(msg: &DeliveryMessage, row: ClaimRow) -> Result<Claim> {
    let (_, _, notification_id, recipient, retry_base, kind, content, data, priority, accepted_at, workflow, retry) =
        row;
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
    Ok(Claim::Claimed(
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
    ))
}

/// An attempt's outcome with what recording it needs of its job.
pub(crate) struct Outcome {
    delivery_id: Uuid,
    notification_id: Uuid,
    tenant_id: Uuid,
    channel: Channel,
    attempt: i32,
    rank: i16,
    claim: Uuid,
    record: AttemptRecord,
}

/// Records a group of outcomes in one call of `record_outcomes` (one round trip, its own
/// transaction); answers whether each applied to its delivery (see
/// [`Store::record_attempt`]).
fn record_group<'a>(conn: &'a mut PgConnection, outcomes: &'a [Outcome]) -> BoxFuture<'a, Result<Vec<bool>>> {
    Box::pin(async move {
        let mut c = OutcomeColumns::default();
        for o in outcomes {
            let (status, outcome, provider_message_id, excerpt, failure, retry_at) = match &o.record.result {
                AttemptResult::Sent { provider_message_id, response_excerpt } => {
                    ("sent", "sent", Some(provider_message_id.as_str()), response_excerpt.as_deref(), None, None)
                }
                AttemptResult::Retry { failure, at } => {
                    ("retrying", failure.kind.as_str(), None, None, Some(failure), Some(*at))
                }
                AttemptResult::Failed { failure } => ("failed", failure.kind.as_str(), None, None, Some(failure), None),
            };
            c.delivery_ids.push(o.delivery_id);
            c.attempts.push(o.attempt);
            c.statuses.push(status);
            c.providers.push(&o.record.provider);
            c.provider_message_ids.push(provider_message_id.map(|id| clean(id, 1000)));
            c.codes.push(failure.map(|f| clean(&f.code, 200)));
            c.messages.push(failure.map(|f| clean(&f.message, 1000)));
            c.retry_at.push(retry_at);
            c.tenants.push(o.tenant_id);
            c.outcomes.push(outcome);
            c.excerpts.push(excerpt.map(|e| clean(e, 1000)));
            c.latencies.push(o.record.latency_ms);
            c.started_at.push(o.record.started_at);
            c.notification_ids.push(o.notification_id);
            c.channels.push(o.channel.as_str());
            c.ranks.push(o.rank);
            c.traceparents.push(o.record.traceparent.as_deref());
            c.claims.push(o.claim);
        }
        // One call, committed on its own: the locks, the record and the aggregates are
        // statements of `record_outcomes` (migrations/20261203000013_record_outcomes.sql).
        let applied: Vec<(Uuid, Option<String>, Option<String>, bool)> = sqlx::query_as(
            "SELECT * FROM record_outcomes($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                                           $17, $18, $19)",
        )
        .bind(&c.delivery_ids)
        .bind(&c.attempts)
        .bind(&c.statuses)
        .bind(&c.providers)
        .bind(&c.provider_message_ids)
        .bind(&c.codes)
        .bind(&c.messages)
        .bind(&c.retry_at)
        .bind(&c.tenants)
        .bind(&c.outcomes)
        .bind(&c.excerpts)
        .bind(&c.latencies)
        .bind(&c.started_at)
        .bind(&c.notification_ids)
        .bind(&c.channels)
        .bind(&c.ranks)
        .bind(&c.traceparents)
        .bind(&c.claims)
        .bind(crate::ERASED)
        .fetch_all(&mut *conn)
        .await?;
        // Receipts that came before their send was recorded. Applied after the record
        // commits, so a failure here must not fail the record (the worker would record
        // it again): one left behind is applied by the API's purge (see
        // `Store::apply_claimable_receipts`).
        for (_, provider, id, pending) in &applied {
            if let (true, Some(provider), Some(id)) = (pending, provider, id)
                && let Err(e) = crate::receipts::apply_reports(&mut *conn, provider, id, None).await
            {
                tracing::warn!(error = %e, provider, "applying pending receipts failed; the API's purge will");
            }
        }
        let applied: std::collections::HashSet<Uuid> = applied.into_iter().map(|(id, ..)| id).collect();
        Ok(outcomes.iter().map(|o| applied.contains(&o.delivery_id)).collect())
    })
}

#[derive(Default)]
struct OutcomeColumns<'a> {
    delivery_ids: Vec<Uuid>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    providers: Vec<&'a str>,
    provider_message_ids: Vec<Option<Cow<'a, str>>>,
    codes: Vec<Option<Cow<'a, str>>>,
    messages: Vec<Option<Cow<'a, str>>>,
    retry_at: Vec<Option<OffsetDateTime>>,
    tenants: Vec<Uuid>,
    outcomes: Vec<&'static str>,
    excerpts: Vec<Option<Cow<'a, str>>>,
    latencies: Vec<i32>,
    started_at: Vec<OffsetDateTime>,
    notification_ids: Vec<Uuid>,
    channels: Vec<&'static str>,
    ranks: Vec<i16>,
    traceparents: Vec<Option<&'a str>>,
    claims: Vec<Uuid>,
}

/// Recomputes the status of the notifications `ids` from their deliveries (DESIGN.md §4),
/// in one statement: the SQL function `refresh_notification_statuses`
/// (migrations/20261203000013_record_outcomes.sql), which `record_outcomes` calls too.
pub(crate) async fn refresh_notification_statuses(tx: &mut sqlx::PgConnection, ids: &[Uuid]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT refresh_notification_statuses($1)").bind(ids).execute(tx).await?;
    Ok(())
}

/// What a provider said, fit to store: at most `max_chars` characters and no NUL, which
/// PostgreSQL's text refuses (a provider's reply must never make an outcome unrecordable).
fn clean(s: &str, max_chars: usize) -> Cow<'_, str> {
    let s = truncate(s, max_chars);
    if s.contains('\0') { Cow::Owned(s.replace('\0', "")) } else { Cow::Borrowed(s) }
}

pub(crate) fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
