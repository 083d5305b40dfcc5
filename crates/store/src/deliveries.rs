use std::{borrow::Cow, collections::HashMap};

use domain::{
    Channel, Content, DeliveryJob, DeliveryMessage, DeliveryStatus, Priority, SendFailure,
    push::{Platform, PushDevice},
};
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
    /// The provider unit's name (`twilio`), as receipts match it.
    pub provider: String,
    /// Sent through the tenant's own integration of that provider, not the operator's.
    pub integration: bool,
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
    /// A retryable failure with attempts left: `retrying`, due again `after` this, by the
    /// database's clock (the record stamps it, so a worker's clock does not matter).
    Retry {
        failure: SendFailure,
        after: std::time::Duration,
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
    /// row; the relays are woken after commit) and updates the notification's status, all
    /// in one transaction: from the delivery's new status alone when it is the
    /// notification's only delivery, else the aggregate of all of them. The notification
    /// rows are locked first, in id order, so concurrent outcomes for one notification
    /// serialize and its aggregate sees all of them. Concurrent records share that
    /// transaction (group commit).
    ///
    /// The outcome applies to the delivery while `lease` still holds it, or when the claim
    /// was lost (the database crashed before the claim reached its disk: the delivery is
    /// back where the claim found it), so a send is never forgotten. It does not apply
    /// when another claim has taken the delivery over or it is final: then only the
    /// attempt is logged (a duplicate send shows there) and `false` is returned.
    ///
    /// A push attempt whose provider reported its device gone ([`SendFailure::address_gone`])
    /// removes that device in the same transaction, if it still has the token the attempt
    /// used (a token registered again meanwhile is kept), with a `device_removed` audit
    /// event (`reason: gone`, the provider's code): later notifications do not target it.
    /// It is removed whether or not the outcome applied: the provider said that token is dead.
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
            gone: gone_device(job, rec),
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
const WORKER_GROUPS_IN_FLIGHT: usize = crate::RECORD_SLOTS as usize;
const WORKER_GROUP_MAX: usize = 500;

/// A row of `claim_deliveries`: a claimed message's delivery with what sending it needs,
/// or the state of a delivery a message could not claim (the rest `None`).
#[derive(sqlx::FromRow)]
struct ClaimRow {
    delivery_id: Uuid,
    claim: Uuid,
    claimed: bool,
    status: String,
    attempts: i32,
    recipient: String,
    notification_id: Option<Uuid>,
    retry_base: Option<i32>,
    #[sqlx(rename = "type")]
    kind: Option<String>,
    content: Option<serde_json::Value>,
    data: Option<serde_json::Value>,
    priority: Option<String>,
    accepted_at: Option<OffsetDateTime>,
    workflow: Option<String>,
    retry: Option<serde_json::Value>,
    /// A push delivery's device, as registered now (`None`: removed since the accept).
    device_platform: Option<String>,
    device_token: Option<String>,
    device_app: Option<String>,
}

/// The attempt a takeover logs for the claim it replaces: the holder may have sent it
/// before it died, so a duplicate send shows in the attempts log.
const ABANDONED: &str = "the worker sending this attempt stopped before recording its outcome; \
                         the provider may have sent it";

/// Claims a group of messages in one call of `claim_deliveries`
/// (migrations/20261206000014_generic_plans.sql; a push delivery's device,
/// 20261209000400_push_claim.sql), which also returns the state of the deliveries it could
/// not claim, to tell stale messages from unknown ones. A claim that takes over an expired
/// one logs the replaced attempt as `ambiguous` (`worker_lost`).
fn claim_group<'a>(
    conn: &'a mut PgConnection,
    messages: &'a [(DeliveryMessage, Lease)],
) -> BoxFuture<'a, Result<Vec<Result<Claim>>>> {
    Box::pin(async move {
        let lease_ms: Vec<i64> = messages.iter().map(|(_, l)| crate::millis(l.duration)).collect();
        // The claim does not wait for its commit to reach the disk (the slot's connection
        // is from the relaxed pool): the outcome record that follows it waits for the log
        // up to and past it. If the database loses the claim in a crash, the outcome
        // record finds the delivery as the claim found it and applies all the same (see
        // `record_group`). One call, committed on its own.
        let rows: Vec<ClaimRow> = sqlx::query_as("SELECT * FROM claim_deliveries($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(messages.iter().map(|(m, _)| m.delivery_id).collect::<Vec<_>>())
            .bind(messages.iter().map(|(m, _)| m.tenant_id).collect::<Vec<_>>())
            .bind(messages.iter().map(|(m, _)| m.channel.as_str()).collect::<Vec<_>>())
            .bind(messages.iter().map(|(m, _)| m.attempt).collect::<Vec<_>>())
            .bind(messages.iter().map(|(_, l)| l.claim).collect::<Vec<_>>())
            .bind(&lease_ms)
            .bind(crate::ERASED)
            .bind(ABANDONED)
            .fetch_all(conn)
            .await?;
        // Two copies of one message in a group both match the row; the update takes one
        // of them, and the one whose claim it recorded is the one that sends.
        let (claimed, current): (Vec<ClaimRow>, Vec<ClaimRow>) = rows.into_iter().partition(|r| r.claimed);
        let mut claimed: HashMap<(Uuid, Uuid), ClaimRow> =
            claimed.into_iter().map(|r| ((r.delivery_id, r.claim), r)).collect();
        let current: HashMap<Uuid, ClaimRow> = current.into_iter().map(|r| (r.delivery_id, r)).collect();
        Ok(messages
            .iter()
            .map(|(m, l)| match claimed.remove(&(m.delivery_id, l.claim)) {
                Some(row) => job(m, row),
                None => Ok(stale(m, current.get(&m.delivery_id))),
            })
            .collect())
    })
}

/// Why a message claimed nothing, from its delivery as it is after the claim.
fn stale(msg: &DeliveryMessage, current: Option<&ClaimRow>) -> Claim {
    let Some(row) = current else { return Claim::Unknown };
    match DeliveryStatus::parse(&row.status) {
        Some(status) if status.is_terminal() => Claim::Stale("delivery is already final"),
        _ if row.recipient == crate::ERASED => Claim::Stale("recipient was erased"),
        Some(DeliveryStatus::Sending) if row.attempts == msg.attempt => {
            Claim::Stale("attempt is held by another claim")
        }
        _ if row.attempts >= msg.attempt => Claim::Stale("attempt already taken"),
        _ => Claim::Stale("message is ahead of the delivery's attempts"),
    }
}

/// The job of a claimed message, or `Corrupt` if its stored data cannot be read.
fn job(msg: &DeliveryMessage, row: ClaimRow) -> Result<Claim> {
    let missing = |column: &str| corrupt(format!("claimed delivery without {column}"));
    let content: Content = serde_json::from_value(row.content.ok_or_else(|| missing("content"))?)
        .map_err(|e| corrupt(format!("notification content: {e}")))?;
    let data = match row.data.ok_or_else(|| missing("data"))? {
        serde_json::Value::Object(map) => map,
        other => return Err(corrupt(format!("notification data is not an object: {other}"))),
    };
    let retry = row
        .retry
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| corrupt(format!("notification retry policy: {e}")))?;
    let priority = row.priority.ok_or_else(|| missing("priority"))?;
    let device = match (msg.channel, row.device_platform) {
        (Channel::Push, Some(platform)) => Some(PushDevice {
            id: row.recipient.clone(),
            platform: Platform::parse(&platform).ok_or_else(|| corrupt(format!("device platform {platform}")))?,
            token: row.device_token.ok_or_else(|| missing("device token"))?,
            app: row.device_app,
        }),
        _ => None,
    };
    Ok(Claim::Claimed(
        Box::new(DeliveryJob {
            delivery_id: msg.delivery_id,
            notification_id: row.notification_id.ok_or_else(|| missing("notification_id"))?,
            tenant_id: msg.tenant_id,
            channel: msg.channel,
            attempt: msg.attempt,
            retry_base: row.retry_base.ok_or_else(|| missing("retry_base"))?,
            recipient: row.recipient,
            kind: row.kind.ok_or_else(|| missing("type"))?,
            priority: Priority::parse(&priority).ok_or_else(|| corrupt(format!("priority {priority}")))?,
            content,
            data,
            workflow: row.workflow,
            retry,
            device,
        }),
        row.accepted_at.ok_or_else(|| missing("accepted_at"))?,
    ))
}

/// The device (id, token) a push attempt found gone, to remove with the record.
fn gone_device(job: &DeliveryJob, rec: &AttemptRecord) -> Option<(String, String)> {
    let failure = match &rec.result {
        AttemptResult::Failed { failure } | AttemptResult::Retry { failure, .. } => failure,
        AttemptResult::Sent { .. } => return None,
    };
    let device = job.device.as_ref().filter(|_| job.channel == Channel::Push && failure.address_gone)?;
    Some((device.id.clone(), device.token.clone()))
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
    /// The push device to remove: (device id, the token the attempt used).
    gone: Option<(String, String)>,
    record: AttemptRecord,
}

/// Records a group of outcomes in one call of `record_outcomes` (one round trip, its own
/// transaction); answers whether each applied to its delivery (see
/// [`Store::record_attempt`]).
fn record_group<'a>(conn: &'a mut PgConnection, outcomes: &'a [Outcome]) -> BoxFuture<'a, Result<Vec<bool>>> {
    Box::pin(async move {
        let mut c = OutcomeColumns::default();
        for o in outcomes {
            let (status, outcome, provider_message_id, excerpt, failure, retry_delay_ms) = match &o.record.result {
                AttemptResult::Sent { provider_message_id, response_excerpt } => {
                    ("sent", "sent", Some(provider_message_id.as_str()), response_excerpt.as_deref(), None, None)
                }
                AttemptResult::Retry { failure, after } => {
                    let ms = crate::millis(*after);
                    ("retrying", failure.kind.as_str(), None, None, Some(failure), Some(ms))
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
            c.retry_delay_ms.push(retry_delay_ms);
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
            c.integrations.push(o.record.integration);
            c.gone_devices.push(o.gone.as_ref().map(|(id, _)| id.as_str()));
            c.gone_tokens.push(o.gone.as_ref().map(|(_, token)| token.as_str()));
        }
        // One call, committed on its own: the locks, the record and the aggregates are
        // statements of `record_outcomes` (migrations/20261206000014_generic_plans.sql;
        // a retry's delay made a time by the database, 20261207000001; the integration
        // that sent, 20261208000300; gone push devices removed, 20261209000400).
        let applied: Vec<(Uuid, Option<String>, Option<String>, bool)> = sqlx::query_as(
            "SELECT * FROM record_outcomes($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                                           $17, $18, $19, $20, $21, $22)",
        )
        .bind(&c.delivery_ids)
        .bind(&c.attempts)
        .bind(&c.statuses)
        .bind(&c.providers)
        .bind(&c.provider_message_ids)
        .bind(&c.codes)
        .bind(&c.messages)
        .bind(&c.retry_delay_ms)
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
        .bind(&c.integrations)
        .bind(&c.gone_devices)
        .bind(&c.gone_tokens)
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
    retry_delay_ms: Vec<Option<i64>>,
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
    integrations: Vec<bool>,
    gone_devices: Vec<Option<&'a str>>,
    gone_tokens: Vec<Option<&'a str>>,
}

/// Recomputes the status of the notifications `ids` from their deliveries (docs/contract.md §4.2),
/// in one statement: the SQL function `refresh_notification_statuses`
/// (migrations/20261206000014_generic_plans.sql), which `record_outcomes` calls too.
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
