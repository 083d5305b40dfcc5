//! Sending webhook messages: the webhook-worker's claim, record and deferral (the SQL
//! functions of migrations/20261211000100_webhook_sending.sql; concurrent claims, and
//! concurrent records, share one statement and its commit, see [`crate::group`]), and
//! what the API reads and writes around them: an endpoint's attempts, a test event and a
//! replay.

use std::time::Duration;

use domain::WebhookMessage;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Lease, Result, Store, corrupt,
    group::{BoxFuture, Grouped},
    millis,
};

/// Groups of claims, and of records, in flight at once: one each, so the webhook-worker's
/// two held connections leave the rest of its pool to deferrals; a group takes all that
/// queued while the one before ran.
const WEBHOOK_GROUPS_IN_FLIGHT: usize = 1;
const WEBHOOK_GROUP_MAX: usize = 500;

/// Connections the webhook-worker's group slots hold for good (a claim slot and a record
/// slot): its pool needs more than this.
pub const WEBHOOK_SLOTS: u32 = 2 * WEBHOOK_GROUPS_IN_FLIGHT as u32;

/// What the webhook-worker may do with a message.
#[derive(Debug)]
pub enum WebhookClaim {
    /// The message is `sending` for this attempt: post it.
    Claimed(Box<WebhookPost>),
    /// Final already, another attempt's, or held by a live claim: drop the message.
    Stale,
    /// Its endpoint is disabled: the message was cancelled (its event stays for a replay).
    Disabled,
    /// No such message: deleted with its endpoint, or with its event when it aged out.
    Unknown,
}

/// A claimed message, with what its post needs.
#[derive(Debug)]
pub struct WebhookPost {
    pub endpoint_id: Uuid,
    pub url: String,
    /// The endpoint's signing secret, sealed (`crate::webhooks::purpose`).
    pub secret: String,
    /// The secret before the last rotation, sealed, while it still signs.
    pub previous_secret: Option<String>,
    pub event_id: Uuid,
    /// The body to send: the event's payload as stored (with the address where the
    /// endpoint takes addresses).
    pub body: String,
    /// When the message was written: with its event.
    pub created_at: OffsetDateTime,
}

/// How an attempt went, as the attempts log says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A 2xx.
    Sent,
    /// Another status, no answer or a timeout.
    Retryable,
    /// A 410: the endpoint is disabled.
    Gone,
    /// The URL resolved to an internal address: nothing was sent.
    Refused,
}

impl WebhookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Sent => "sent",
            WebhookOutcome::Retryable => "retryable",
            WebhookOutcome::Gone => "gone",
            WebhookOutcome::Refused => "refused",
        }
    }
}

/// One attempt of a message, as the worker records it.
#[derive(Debug, Clone)]
pub struct WebhookAttemptRecord {
    pub number: i32,
    pub status_code: Option<u16>,
    pub outcome: WebhookOutcome,
    /// What went wrong, for an attempt that was not sent.
    pub error: Option<String>,
    pub excerpt: Option<String>,
    pub latency_ms: i32,
    pub started_at: OffsetDateTime,
    /// When the message is tried again, from now; `None` when it is not (sent, or no
    /// attempt left).
    pub retry_in: Option<Duration>,
    /// How long an endpoint may fail before it is disabled.
    pub disable_after: Duration,
}

/// A message's state after a recorded attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookState {
    Sent,
    Retrying,
    Failed,
    /// The claim no longer held the message (its lease ran out and another took it over):
    /// only the attempt was logged.
    Taken,
}

/// An attempt as `GET /v1/webhooks/{id}/attempts` lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookAttempt {
    pub id: i64,
    pub message_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub number: i32,
    pub status_code: Option<i32>,
    pub outcome: String,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub latency_ms: i32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub started_at: OffsetDateTime,
    pub finished_at: OffsetDateTime,
}

type ClaimRow = (
    i64,
    String,
    Option<Uuid>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<OffsetDateTime>,
    Option<Uuid>,
    Option<String>,
    Option<OffsetDateTime>,
);

/// A record of an attempt, as a group takes it.
pub(crate) struct RecordRequest {
    id: Uuid,
    claim: Uuid,
    endpoint_id: Uuid,
    rec: WebhookAttemptRecord,
}

impl Store {
    /// Claims the message `msg` names for its attempt under `lease` (see [`WebhookClaim`]).
    pub async fn claim_webhook_message(&self, msg: &WebhookMessage, lease: Lease) -> Result<WebhookClaim> {
        let claims = self.groups.webhook_claims.get_or_init(|| {
            let closing = &self.groups.closing;
            Grouped::holding(self.pool.clone(), claim_group, WEBHOOK_GROUPS_IN_FLIGHT, WEBHOOK_GROUP_MAX, closing)
        });
        claims.call((msg.clone(), lease)).await?
    }

    /// Records `rec`, the attempt of message `id` (to endpoint `endpoint_id`) made under
    /// `claim`, with the message's new state and its endpoint's health; a retry's outbox
    /// row wakes the relays.
    pub async fn record_webhook_attempt(
        &self,
        id: Uuid,
        claim: Uuid,
        endpoint_id: Uuid,
        rec: &WebhookAttemptRecord,
    ) -> Result<WebhookState> {
        let records = self.groups.webhook_records.get_or_init(|| {
            let closing = &self.groups.closing;
            Grouped::holding(self.pool.clone(), record_group, WEBHOOK_GROUPS_IN_FLIGHT, WEBHOOK_GROUP_MAX, closing)
        });
        let state = records.call(RecordRequest { id, claim, endpoint_id, rec: rec.clone() }).await?;
        if state == WebhookState::Retrying {
            self.wake_relays();
        }
        Ok(state)
    }

    /// Gives the claimed message back for the same attempt after `delay`, without an
    /// attempt (its endpoint is at its cap); false when the claim no longer held it.
    pub async fn defer_webhook_message(&self, msg: &WebhookMessage, claim: Uuid, delay: Duration) -> Result<bool> {
        let deferred: bool = sqlx::query_scalar("SELECT defer_webhook_message($1, $2, $3, $4)")
            .bind(msg.message_id)
            .bind(claim)
            .bind(msg.attempt)
            .bind(millis(delay))
            .fetch_one(&self.pool)
            .await?;
        if deferred {
            self.wake_relays();
        }
        Ok(deferred)
    }

    /// Up to `limit` attempts of the tenant's endpoint, newest first, older than the
    /// attempt `before` when given (the page's cursor).
    pub async fn webhook_attempts(
        &self,
        tenant_id: Uuid,
        endpoint_id: Uuid,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<WebhookAttempt>> {
        Ok(sqlx::query_as(
            "SELECT a.id, a.message_id, m.event_id, e.type AS event_type, a.number, a.status_code, a.outcome,
                    a.error, a.response_excerpt, a.latency_ms, a.next_attempt_at, a.started_at, a.finished_at
             FROM webhook_attempts a
             JOIN webhook_messages m ON m.id = a.message_id
             JOIN webhook_events e ON e.id = m.event_id
             WHERE a.endpoint_id = $2 AND a.tenant_id = $1 AND ($3::bigint IS NULL OR a.id < $3)
             ORDER BY a.id DESC LIMIT $4",
        )
        .bind(tenant_id)
        .bind(endpoint_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Writes a `webhook.test` event for the tenant's endpoint and its message, whatever
    /// the endpoint's filters; the event's id, or `None` when the tenant has no such
    /// enabled endpoint.
    pub async fn send_webhook_test(&self, tenant_id: Uuid, endpoint_id: Uuid) -> Result<Option<Uuid>> {
        let event: Option<Uuid> = sqlx::query_scalar(
            "WITH e AS (
                 SELECT id FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 AND enabled),
             ev AS (
                 INSERT INTO webhook_events (id, tenant_id, type, payload)
                 SELECT gen_random_uuid(), $1, $3, jsonb_build_object(
                     'type', $3::text, 'timestamp', webhook_time(now()),
                     'data', jsonb_build_object('endpoint_id', e.id, 'sequence', nextval('webhook_event_sequence')))
                 FROM e
                 RETURNING id),
             m AS (
                 INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_id)
                 SELECT gen_random_uuid(), $1, $2, ev.id FROM ev
                 RETURNING id),
             o AS (
                 INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority)
                 SELECT $1, m.id, m.id, 'webhooks', 1, 1 FROM m)
             SELECT id FROM ev",
        )
        .bind(tenant_id)
        .bind(endpoint_id)
        .bind(domain::webhook::TEST_EVENT)
        .fetch_optional(&self.pool)
        .await?;
        if event.is_some() {
            self.wake_relays();
        }
        Ok(event)
    }

    /// Sends the endpoint the tenant's events of `[since, until)` that its filters take
    /// again, as new messages of the same events (the same `webhook-id`, so a receiver
    /// that has one already can tell). `None` when the tenant has no such enabled
    /// endpoint; else how many.
    pub async fn replay_webhook_events(
        &self,
        tenant_id: Uuid,
        endpoint_id: Uuid,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let endpoint: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 AND enabled FOR SHARE",
        )
        .bind(tenant_id)
        .bind(endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
        if endpoint.is_none() {
            return Ok(None);
        }
        let replayed: i64 = sqlx::query_scalar(
            "WITH m AS (
                 INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_id)
                 SELECT gen_random_uuid(), $1, w.id, ev.id
                 FROM webhook_endpoints w
                 JOIN webhook_events ev ON ev.tenant_id = w.tenant_id
                 WHERE w.id = $2 AND ev.created_at >= $3 AND ev.created_at < $4
                   AND ev.type <> $5
                   AND (w.events @> ARRAY[ev.type] OR w.events @> ARRAY['*'])
                   AND (w.types IS NULL OR ev.notification_type = ANY (w.types))
                 RETURNING id),
             o AS (
                 INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority)
                 SELECT $1, m.id, m.id, 'webhooks', 1, 0 FROM m)
             SELECT count(*) FROM m",
        )
        .bind(tenant_id)
        .bind(endpoint_id)
        .bind(since)
        .bind(until)
        .bind(domain::webhook::TEST_EVENT)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if replayed > 0 {
            self.wake_relays();
        }
        Ok(Some(replayed))
    }

    /// One sweep of webhook messages, by the recovery rule of deliveries
    /// (`crate::recovery`): up to `limit` messages not final and without an outbox row
    /// that are `sending` under a lease that ran out (their holder died), or, when
    /// `drained` (`notify.webhooks` held no ready message for `after`), have not changed
    /// for `after` (their broker message was lost). Each is queued again for the attempt
    /// its lost message carried, its claim cleared (a late outcome of the old holder only
    /// logs its attempt). Returns how many.
    pub async fn recover_stranded_webhooks(&self, after: Duration, drained: bool, limit: i64) -> Result<u64> {
        let requeued: i64 = sqlx::query_scalar(
            "WITH s AS (
                 SELECT m.id FROM webhook_messages m
                 WHERE m.status IN ('pending', 'sending', 'retrying')
                   AND ((m.status = 'sending' AND m.lease_until < now())
                        OR ($2 AND m.updated_at < now() - $1 * interval '1 millisecond'))
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.delivery_id = m.id)
                 ORDER BY m.updated_at LIMIT $3
                 FOR UPDATE OF m SKIP LOCKED),
             changed AS (
                 UPDATE webhook_messages m
                 SET status = CASE WHEN m.attempts = 0 THEN 'pending' ELSE 'retrying' END, claimed_by = NULL,
                     lease_until = NULL, updated_at = now()
                 FROM s WHERE m.id = s.id
                 RETURNING m.id, m.tenant_id, m.attempts),
             queued AS (
                 INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority)
                 SELECT c.tenant_id, c.id, c.id, 'webhooks', c.attempts + 1, 1 FROM changed c)
             SELECT count(*) FROM changed",
        )
        .persistent(false)
        .bind(millis(after))
        .bind(drained)
        .bind(limit)
        .fetch_one(&self.pool)
        .await?;
        if requeued > 0 {
            self.wake_relays();
        }
        Ok(u64::try_from(requeued).unwrap_or_default())
    }

    /// The state and attempts of a webhook message, for tests and operators.
    pub async fn webhook_message_state(&self, id: Uuid) -> Result<Option<(String, i32)>> {
        Ok(sqlx::query_as("SELECT status, attempts FROM webhook_messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// Claims a group's messages in one statement, committed on its own: each with
/// `claim_webhook_message`, in message order (as every writer locks messages), one answer
/// per request. Two copies of one message in a group: the first claims it, the second
/// finds it taken (stale).
fn claim_group<'a>(
    conn: &'a mut PgConnection,
    requests: &'a [(WebhookMessage, Lease)],
) -> BoxFuture<'a, Result<Vec<Result<WebhookClaim>>>> {
    Box::pin(async move {
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| requests[i].0.message_id);
        let mut rows: Vec<ClaimRow> = sqlx::query_as(
            "SELECT m.i, c.* FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::bigint[], $5::bigint[])
                 AS m(id, attempt, claim, lease_ms, i)
             CROSS JOIN LATERAL claim_webhook_message(m.id, m.attempt, m.claim, m.lease_ms) c",
        )
        .bind(order.iter().map(|&i| requests[i].0.message_id).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| requests[i].0.attempt).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| requests[i].1.claim).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| millis(requests[i].1.duration)).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| i as i64).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
        if rows.len() != requests.len() {
            return Err(corrupt(format!("{} claims answered for {} messages", rows.len(), requests.len())));
        }
        rows.sort_by_key(|row| row.0);
        Ok(requests.iter().zip(rows).map(|((msg, _), row)| webhook_claim(msg, row)).collect())
    })
}

/// What a claim's row says.
fn webhook_claim(msg: &WebhookMessage, row: ClaimRow) -> Result<WebhookClaim> {
    let (_, state, endpoint_id, url, secret, previous_secret, previous_until, event_id, body, created_at) = row;
    Ok(match state.as_str() {
        "claimed" => {
            let missing = || corrupt(format!("webhook message {} claimed without its endpoint", msg.message_id));
            let still_signs = previous_until.is_some_and(|until| until > OffsetDateTime::now_utc());
            WebhookClaim::Claimed(Box::new(WebhookPost {
                endpoint_id: endpoint_id.ok_or_else(missing)?,
                url: url.ok_or_else(missing)?,
                secret: secret.ok_or_else(missing)?,
                previous_secret: previous_secret.filter(|_| still_signs),
                event_id: event_id.ok_or_else(missing)?,
                body: body.ok_or_else(missing)?,
                created_at: created_at.ok_or_else(missing)?,
            }))
        }
        "stale" => WebhookClaim::Stale,
        "disabled" => WebhookClaim::Disabled,
        "unknown" => WebhookClaim::Unknown,
        other => return Err(corrupt(format!("claim_webhook_message answered {other}"))),
    })
}

/// Records a group's attempts in one statement, committed on its own: each with
/// `record_webhook_attempt`, in endpoint then message order (a failure locks its endpoint
/// to count the failing streak), one state per request.
fn record_group<'a>(
    conn: &'a mut PgConnection,
    requests: &'a [RecordRequest],
) -> BoxFuture<'a, Result<Vec<WebhookState>>> {
    Box::pin(async move {
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| (requests[i].endpoint_id, requests[i].id));
        let rec = |i: usize| &requests[i].rec;
        let mut rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT m.i, record_webhook_attempt(m.id, m.claim, m.number, m.status_code, m.outcome, m.error,
                                                m.excerpt, m.latency_ms, m.started_at, m.retry_ms, m.disable_ms)
             FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::int[], $5::text[], $6::text[], $7::text[],
                         $8::int[], $9::timestamptz[], $10::bigint[], $11::bigint[], $12::bigint[])
                 AS m(id, claim, number, status_code, outcome, error, excerpt, latency_ms, started_at, retry_ms,
                      disable_ms, i)",
        )
        .bind(order.iter().map(|&i| requests[i].id).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| requests[i].claim).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| rec(i).number).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| rec(i).status_code.map(i32::from)).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| rec(i).outcome.as_str()).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| rec(i).error.as_deref()).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| rec(i).excerpt.as_deref()).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| rec(i).latency_ms).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| rec(i).started_at).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| rec(i).retry_in.map(millis)).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| millis(rec(i).disable_after)).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| i as i64).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
        if rows.len() != requests.len() {
            return Err(corrupt(format!("{} records answered for {} attempts", rows.len(), requests.len())));
        }
        rows.sort_by_key(|row| row.0);
        rows.into_iter()
            .map(|(_, state)| match state.as_str() {
                "sent" => Ok(WebhookState::Sent),
                "retrying" => Ok(WebhookState::Retrying),
                "failed" => Ok(WebhookState::Failed),
                "taken" => Ok(WebhookState::Taken),
                other => Err(corrupt(format!("record_webhook_attempt answered {other}"))),
            })
            .collect()
    })
}
