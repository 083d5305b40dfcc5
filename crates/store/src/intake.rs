//! Accepting notifications: one or many, with or without idempotency keys, always
//! set-based (a batch of 1,000 is a handful of statements, not thousands). One entry,
//! [`Store::accept`], which decides how: requests without keys share a statement and a
//! commit with concurrent ones (group commit); a request with keys is a transaction of
//! its own that claims them first.

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
    time::Duration,
};

use domain::{
    Channel, DeliveryMessage, DeliveryStatus, NotificationStatus, Plan, PlannedSubscriber, ValidNotification,
    view::{AcceptedDelivery, AcceptedNotification},
};
use sqlx::{PgConnection, PgPool, postgres::PgArguments, types::Json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    HandOff, Result, Store,
    group::{BoxFuture, Grouped},
    named::{self, Columns, Named},
    receipts::suppression_address,
};

/// Who caused a change (for the audit trail) and the trace it belongs to (carried with
/// the outbox rows it writes).
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// `api_key:<id>` or `operator`.
    pub actor: &'a str,
    pub traceparent: Option<&'a str>,
}

/// What one request asks to accept: its notifications, all of one tenant, in order.
pub struct Accept {
    pub tenant_id: Uuid,
    /// How the audit trail names the caller (`api_key:<id>`).
    pub actor: String,
    /// The request's trace, carried by the outbox rows and the messages.
    pub traceparent: Option<String>,
    pub items: Vec<Intake>,
    /// How long an idempotency key is remembered: an older one counts as unused.
    pub retention: Duration,
}

/// One notification to accept, with the deliveries [`domain::plan`] worked out for it.
pub struct Intake {
    pub notification: ValidNotification,
    pub plan: Plan,
    pub idempotency: Option<IdempotencyKey>,
    /// The stored subscribers the plan sends to ([`Plan::subscribers`]).
    pub subscribers: Vec<PlannedSubscriber>,
}

#[derive(Clone, Debug)]
pub struct IdempotencyKey {
    pub key: String,
    /// SHA-256 of the request it came with; the same key with another hash is refused.
    pub request_hash: Vec<u8>,
}

#[derive(Debug)]
pub enum IntakeResult {
    Accepted(AcceptedNotification),
    /// The key was used before with the same request: its original answer.
    Replayed(serde_json::Value),
    /// The key was used before with a different request.
    KeyReused,
    /// These subscribers of the plan were erased after the directory was read: nothing
    /// was written (and a key given with it stays unused).
    Erased(Vec<String>),
}

/// What an accept did: an answer per item, in order, and, when the store hands off (see
/// [`Store::with_hand_off`]), the messages of the deliveries it wrote due now, for the
/// caller to publish.
#[derive(Debug, Default)]
pub struct Accepted {
    pub results: Vec<IntakeResult>,
    pub due: Vec<DeliveryMessage>,
    /// Deliveries due now were written for the relays to publish (woken by the store).
    left_to_relays: bool,
}

impl Store {
    /// Accepts `request`'s notifications and answers for each, in order. A single
    /// notification without a key joins the next group commit; a batch is one statement
    /// of its own. With keys, the keys are inserted first in the request's own transaction: the primary key on (tenant, key) makes a concurrent
    /// request with the same key wait for this one's commit and then replay its answer,
    /// so a key never makes two notifications.
    ///
    /// A delivery the plan skips (preferences, no address) or to an address on the
    /// tenant's suppression list is written `suppressed`, without an outbox row, and the
    /// answer says so. A notification one of whose subscribers was erased meanwhile is not
    /// written ([`IntakeResult::Erased`]) and fails nothing else.
    ///
    /// Every delivery that waits gets an outbox row. Without a hand-off, and for a batch,
    /// the rows due now are due at once and the relays are woken; for a single
    /// notification with one, up to its limit fall due a grace period later, and their
    /// messages are returned for the caller to publish at once (the rest are due at once,
    /// and the relays woken).
    pub async fn accept(&self, request: Accept) -> Result<Accepted> {
        if request.items.is_empty() {
            return Ok(Accepted::default());
        }
        // A batch is left to the relays, which publish a thousand rows per confirm: handed
        // off, a burst of batches outran the hand-off and waited out its grace.
        let hand_off = if request.items.len() == 1 { self.hand_off } else { None };
        // A batch is a statement of its own already, and grouping several would make one
        // statement of any size.
        let keyed = request.items.iter().any(|i| i.idempotency.is_some());
        let accepted = if keyed {
            accept_keyed(&self.indexed, request, hand_off).await?
        } else if request.items.len() == 1 {
            let accepts = self.groups.accepts.get_or_init(|| {
                let closing = &self.groups.closing;
                Grouped::holding(self.indexed.clone(), accept_group, ACCEPT_GROUPS_IN_FLIGHT, ACCEPT_GROUP_MAX, closing)
            });
            accepts.call((request, hand_off)).await?
        } else {
            // A batch without keys: a group of its own.
            let mut conn = self.indexed.acquire().await?;
            let mut alone = accept_group(&mut conn, std::slice::from_ref(&(request, hand_off))).await?;
            alone.pop().expect("one answer for one request")
        };
        if accepted.left_to_relays {
            self.wake_relays();
        }
        Ok(accepted)
    }

    /// Deletes the outbox rows of `messages` once the broker confirmed them: the relay
    /// would otherwise publish them again when they fall due (harmless, since workers drop
    /// duplicates, but work). The commit does not wait for the disk: a delete lost in a
    /// crash costs only that duplicate.
    pub async fn forget_published(&self, messages: &[DeliveryMessage]) -> Result<u64> {
        let tenants: Vec<Uuid> = messages.iter().map(|m| m.tenant_id).collect();
        let ids: Vec<Uuid> = messages.iter().map(|m| m.delivery_id).collect();
        let attempts: Vec<i32> = messages.iter().map(|m| m.attempt).collect();
        let done = sqlx::query(
            "DELETE FROM outbox o USING unnest($1::uuid[], $2::uuid[], $3::int[]) AS p(tenant_id, delivery_id, attempt)
             WHERE o.tenant_id = p.tenant_id AND o.delivery_id = p.delivery_id AND o.attempt = p.attempt",
        )
        .bind(&tenants)
        .bind(&ids)
        .bind(&attempts)
        .execute(&self.relaxed)
        .await?;
        Ok(done.rows_affected())
    }

    /// Makes the outbox rows of `messages` due now and wakes the relays: the hand-off leaves
    /// them to the relays rather than publishing them itself (their queue is full).
    pub async fn release_to_relays(&self, messages: &[DeliveryMessage]) -> Result<u64> {
        let tenants: Vec<Uuid> = messages.iter().map(|m| m.tenant_id).collect();
        let ids: Vec<Uuid> = messages.iter().map(|m| m.delivery_id).collect();
        let attempts: Vec<i32> = messages.iter().map(|m| m.attempt).collect();
        let done = sqlx::query(
            "UPDATE outbox o SET available_at = now()
             FROM unnest($1::uuid[], $2::uuid[], $3::int[]) AS p(tenant_id, delivery_id, attempt)
             WHERE o.tenant_id = p.tenant_id AND o.delivery_id = p.delivery_id AND o.attempt = p.attempt
               AND o.available_at > now()",
        )
        .bind(&tenants)
        .bind(&ids)
        .bind(&attempts)
        .execute(&self.pool)
        .await?;
        self.wake_relays();
        Ok(done.rows_affected())
    }

    /// Deletes idempotency keys older than `retention`; returns how many.
    pub async fn purge_idempotency_keys(&self, retention: Duration) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval")
            .bind(sqlx::postgres::types::PgInterval::try_from(retention).unwrap_or_default())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Groups of accepts written at once: enough to keep both of a small database's cores
/// busy while one group commits, few enough to leave the pool to the reads. Each holds a
/// connection of the indexed pool for good, so that pool needs more than this
/// ([`crate::ACCEPT_SLOTS`]).
const ACCEPT_GROUPS_IN_FLIGHT: usize = crate::ACCEPT_SLOTS as usize;
const ACCEPT_GROUP_MAX: usize = 1_000;

/// Writes the requests of a group (single notifications without keys, or one batch
/// without keys) in one statement, committed on its own. The grace is the same for all: a
/// store's groups serve only stores with its hand-off (see [`Store::with_hand_off`]).
fn accept_group<'a>(
    conn: &'a mut PgConnection,
    requests: &'a [(Accept, Option<HandOff>)],
) -> BoxFuture<'a, Result<Vec<Accepted>>> {
    Box::pin(async move {
        let grace = requests.iter().find_map(|(_, h)| h.map(|h| h.grace)).unwrap_or_default();
        let now = now_micros();
        let mut planned: Vec<Vec<AcceptedNotification>> =
            requests.iter().map(|(r, _)| r.items.iter().map(|i| answer(&i.plan, now)).collect()).collect();
        let rows: Vec<Row> = requests
            .iter()
            .zip(&planned)
            .flat_map(|((r, hand_off), answers)| {
                r.items.iter().zip(answers).map(move |(intake, answer)| row(r, intake, answer, *hand_off))
            })
            .collect();
        let inserted = insert(conn, &rows, grace).await?;
        Ok(requests
            .iter()
            .zip(planned.iter_mut())
            .map(|((request, hand_off), answers)| {
                let all: Vec<usize> = (0..answers.len()).collect();
                mark_suppressed(answers, &all, &inserted.suppressed);
                let (due, left_to_relays) = due_now(request, answers, &all, &inserted, *hand_off);
                let results = std::mem::take(answers).into_iter().map(|a| inserted.result(a)).collect();
                Accepted { results, due, left_to_relays }
            })
            .collect())
    })
}

/// Accepts a request with idempotency keys in a transaction of its own. The first item
/// with a key claims it for the request; later ones with the same key are answered as a
/// concurrent request would be. A key older than the request's retention counts as unused.
async fn accept_keyed(pool: &PgPool, request: Accept, hand_off: Option<HandOff>) -> Result<Accepted> {
    let items = &request.items;
    let tenant_id = request.tenant_id;
    let now = now_micros();
    let mut planned: Vec<AcceptedNotification> = items.iter().map(|i| answer(&i.plan, now)).collect();
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(k) = &item.idempotency {
            first_with_key.entry(k.key.as_str()).or_insert(i);
        }
    }
    // In key order: two requests claiming the same keys (a batch sent again while the first
    // copy is being accepted) lock them in the same order rather than deadlock.
    let mut claimants: Vec<usize> = first_with_key.values().copied().collect();
    claimants.sort_unstable_by(|&a, &b| key_of(&items[a]).key.cmp(&key_of(&items[b]).key));
    let responses: Vec<serde_json::Value> =
        claimants.iter().map(|&i| serde_json::to_value(&planned[i]).expect("serializes")).collect();

    let mut tx = pool.begin().await?;
    let won: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, notification_id, response)
         SELECT $1, u.key, u.hash, u.id, u.response
         FROM unnest($2::text[], $3::bytea[], $4::uuid[], $5::jsonb[]) AS u(key, hash, id, response)
         ON CONFLICT (tenant_id, key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, notification_id = EXCLUDED.notification_id,
                response = EXCLUDED.response, created_at = now()
            WHERE idempotency_keys.created_at < now() - $6::interval
         RETURNING key",
    )
    .bind(tenant_id)
    .bind(claimants.iter().map(|&i| key_of(&items[i]).key.clone()).collect::<Vec<_>>())
    .bind(claimants.iter().map(|&i| key_of(&items[i]).request_hash.clone()).collect::<Vec<_>>())
    .bind(claimants.iter().map(|&i| planned[i].id).collect::<Vec<_>>())
    .bind(&responses)
    .bind(sqlx::postgres::types::PgInterval::try_from(request.retention).unwrap_or_default())
    .fetch_all(&mut *tx)
    .await?;
    let won: HashSet<String> = won.into_iter().map(|r| r.0).collect();

    // Every key's record: ours where we won it, the stored one where we did not.
    let lost: Vec<String> = first_with_key.keys().filter(|k| !won.contains(**k)).map(|k| (*k).to_owned()).collect();
    let stored: Vec<(String, Vec<u8>, serde_json::Value)> = if lost.is_empty() {
        vec![]
    } else {
        sqlx::query_as(
            "SELECT key, request_hash, response FROM idempotency_keys WHERE tenant_id = $1 AND key = ANY($2)",
        )
        .bind(tenant_id)
        .bind(&lost)
        .fetch_all(&mut *tx)
        .await?
    };
    let mut record: HashMap<String, (Vec<u8>, serde_json::Value)> =
        stored.into_iter().map(|(key, hash, response)| (key, (hash, response))).collect();
    for (&i, response) in claimants.iter().zip(&responses) {
        let k = key_of(&items[i]);
        if won.contains(&k.key) {
            record.insert(k.key.clone(), (k.request_hash.clone(), response.clone()));
        }
    }

    let mut results = Vec::with_capacity(items.len());
    let mut to_insert = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(k) = &item.idempotency else {
            to_insert.push(i);
            results.push(None);
            continue;
        };
        if first_with_key[k.key.as_str()] == i && won.contains(&k.key) {
            to_insert.push(i);
            results.push(None);
            continue;
        }
        results.push(Some(match record.get(&k.key) {
            Some((hash, response)) if *hash == k.request_hash => IntakeResult::Replayed(response.clone()),
            Some(_) => IntakeResult::KeyReused,
            // The key's row vanished between the two statements (purged): refuse rather
            // than risk a second notification; a retry will succeed.
            None => IntakeResult::KeyReused,
        }));
    }
    let rows: Vec<Row> = to_insert.iter().map(|&i| row(&request, &items[i], &planned[i], hand_off)).collect();
    let grace = hand_off.map(|h| h.grace).unwrap_or_default();
    let inserted = insert(&mut tx, &rows, grace).await?;
    if !inserted.erased.is_empty() {
        // Nothing was written for these: their keys stay unused (a retry plans afresh),
        // and a later item with the same key gets the same answer.
        let refused: Vec<&str> = to_insert
            .iter()
            .filter(|&&i| !inserted.written(&planned[i]))
            .filter_map(|&i| items[i].idempotency.as_ref().map(|k| k.key.as_str()))
            .collect();
        sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = ANY($2)")
            .bind(tenant_id)
            .bind(&refused)
            .execute(&mut *tx)
            .await?;
        for (result, item) in results.iter_mut().zip(items) {
            if let (Some(result @ IntakeResult::Replayed(_)), Some(k)) = (result, &item.idempotency)
                && let Some(ids) = inserted.erased.get(&planned[first_with_key[k.key.as_str()]].id)
            {
                *result = IntakeResult::Erased(ids.clone());
            }
        }
    }
    let changed = mark_suppressed(&mut planned, &to_insert, &inserted.suppressed);
    if !changed.is_empty() {
        // The keys were stored with the answer planned before the insert: a replay must
        // give the answer this request gets, here and later.
        store_answers(&mut tx, tenant_id, items, &planned, &changed).await?;
        for (result, item) in results.iter_mut().zip(items) {
            if let (Some(IntakeResult::Replayed(answer)), Some(k)) = (result, &item.idempotency) {
                let first = first_with_key[k.key.as_str()];
                if changed.contains(&first) {
                    *answer = serde_json::to_value(&planned[first]).expect("serializes");
                }
            }
        }
    }
    tx.commit().await?;
    let (due, left_to_relays) = due_now(&request, &planned, &to_insert, &inserted, hand_off);
    let results = results
        .into_iter()
        .zip(planned)
        .map(|(result, planned)| result.unwrap_or_else(|| inserted.result(planned)))
        .collect();
    Ok(Accepted { results, due, left_to_relays })
}

/// The messages of the deliveries of items `which` that were written, wait for nothing
/// (not suppressed, not in the inbox, neither scheduled nor deferred by quiet hours) and
/// are handed off ([`handed_off`]); and whether any other such delivery was written due
/// now, for the relays.
fn due_now(
    request: &Accept,
    answers: &[AcceptedNotification],
    which: &[usize],
    inserted: &Inserted,
    hand_off: Option<HandOff>,
) -> (Vec<DeliveryMessage>, bool) {
    let (mut due, mut left) = (Vec::new(), false);
    for &i in which {
        let (intake, answer) = (&request.items[i], &answers[i]);
        if !inserted.written(answer) || intake.notification.send_at.is_some() {
            continue;
        }
        let handed = handed_off(intake, hand_off);
        for ((delivery, planned), handed) in answer.deliveries.iter().zip(&intake.plan.deliveries).zip(handed) {
            if delivery.status == DeliveryStatus::Pending && planned.not_before.is_none() {
                if handed {
                    let message = DeliveryMessage::new(delivery.id, answer.id, request.tenant_id, delivery.channel, 1);
                    due.push(DeliveryMessage { traceparent: request.traceparent.clone(), ..message });
                } else {
                    left = true;
                }
            }
        }
    }
    (due, left)
}

/// For each of a notification's planned deliveries, whether the accept hands it off: the
/// first [`HandOff::most`] the plan sends now (neither scheduled, deferred nor skipped).
/// The insert (which writes the others' outbox rows due at once) and [`due_now`] both
/// ask here, so they agree.
fn handed_off(intake: &Intake, hand_off: Option<HandOff>) -> impl Iterator<Item = bool> + '_ {
    let mut left = if intake.notification.send_at.is_none() { hand_off.map_or(0, |h| h.most) } else { 0 };
    intake.plan.deliveries.iter().map(move |planned| {
        let handed = left > 0 && planned.not_before.is_none() && planned.skip.is_none();
        left -= usize::from(handed);
        handed
    })
}

fn row<'a>(
    request: &'a Accept,
    intake: &'a Intake,
    answer: &'a AcceptedNotification,
    hand_off: Option<HandOff>,
) -> Row<'a> {
    Row {
        hand_off,
        tenant_id: request.tenant_id,
        actor: &request.actor,
        traceparent: request.traceparent.as_deref(),
        intake,
        answer,
    }
}

fn key_of(item: &Intake) -> &IdempotencyKey {
    item.idempotency.as_ref().expect("only items with a key claim one")
}

/// PostgreSQL keeps microseconds: the answer must show what a later read will show.
fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).expect("a valid nanosecond")
}

/// The answer as planned, with new ids: skipped deliveries are `suppressed`, and the
/// notification's status is what the statement writes (`NotificationStatus::initial`).
fn answer(plan: &Plan, created_at: OffsetDateTime) -> AcceptedNotification {
    let deliveries: Vec<AcceptedDelivery> = plan
        .deliveries
        .iter()
        .map(|d| AcceptedDelivery {
            id: Uuid::now_v7(),
            channel: d.channel,
            recipient: d.recipient.clone(),
            subscriber_id: d.subscriber_id.clone(),
            status: match (d.skip, d.channel) {
                (Some(_), _) => DeliveryStatus::Suppressed,
                // Written to the inbox in the accept transaction itself.
                (None, Channel::InApp) => DeliveryStatus::Delivered,
                (None, _) => DeliveryStatus::Pending,
            },
        })
        .collect();
    AcceptedNotification {
        id: Uuid::now_v7(),
        status: NotificationStatus::initial(deliveries.iter().map(|d| d.status)),
        created_at,
        deliveries,
    }
}

/// Shows in the answers what the insert decided: a delivery to an address on the
/// suppression list is `suppressed`, and the notification's status follows. Returns the
/// items (of `which`) whose answer changed.
fn mark_suppressed(planned: &mut [AcceptedNotification], which: &[usize], suppressed: &HashSet<Uuid>) -> Vec<usize> {
    if suppressed.is_empty() {
        return vec![];
    }
    let mut changed = Vec::new();
    for &i in which {
        let notification = &mut planned[i];
        let mut any = false;
        for delivery in notification.deliveries.iter_mut().filter(|d| suppressed.contains(&d.id)) {
            delivery.status = DeliveryStatus::Suppressed;
            any = true;
        }
        if any {
            notification.status = NotificationStatus::initial(notification.deliveries.iter().map(|d| d.status));
            changed.push(i);
        }
    }
    changed
}

/// Replaces the stored answer of the keys of items `which` (each won its key in this
/// transaction) with their answer as it now is.
async fn store_answers(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    items: &[Intake],
    planned: &[AcceptedNotification],
    which: &[usize],
) -> Result<()> {
    let keyed: Vec<usize> = which.iter().copied().filter(|&i| items[i].idempotency.is_some()).collect();
    if keyed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE idempotency_keys k SET response = u.response
         FROM unnest($2::text[], $3::jsonb[]) AS u(key, response)
         WHERE k.tenant_id = $1 AND k.key = u.key",
    )
    .bind(tenant_id)
    .bind(keyed.iter().map(|&i| key_of(&items[i]).key.as_str()).collect::<Vec<_>>())
    .bind(keyed.iter().map(|&i| serde_json::to_value(&planned[i]).expect("serializes")).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// One notification to write: whose, on whose behalf, as planned and as answered.
struct Row<'a> {
    /// Of the store, for a single notification: which deliveries [`handed_off`].
    hand_off: Option<HandOff>,
    tenant_id: Uuid,
    actor: &'a str,
    traceparent: Option<&'a str>,
    intake: &'a Intake,
    answer: &'a AcceptedNotification,
}

/// The accept statement (`sql/accept.sql`), prepared once per connection of the indexed pool.
static ACCEPT: LazyLock<Named> = LazyLock::new(|| Named::parse(include_str!("sql/accept.sql")));

/// Inserts `rows` (of any tenants), their deliveries, outbox rows and `accepted` audit
/// events in one statement (`sql/accept.sql` says what it decides). The outbox rows of
/// deliveries due now and handed off fall due `grace` from now; the others' at once.
async fn insert(conn: &mut PgConnection, rows: &[Row<'_>], grace: Duration) -> Result<Inserted> {
    if rows.is_empty() {
        return Ok(Inserted { suppressed: HashSet::new(), erased: HashMap::new() });
    }
    let mut n = NotificationColumns::default();
    let mut d = DeliveryColumns::default();
    let mut held = HeldColumns::default();
    for row in rows {
        let (v, plan, p) = (&row.intake.notification, &row.intake.plan, row.answer);
        for s in &row.intake.subscribers {
            held.notification_ids.push(p.id);
            held.ids.push(&s.id);
            held.created_at.push(s.created_at);
        }
        n.ids.push(p.id);
        n.tenants.push(row.tenant_id);
        n.created_at.push(p.created_at);
        n.kinds.push(v.kind.as_str());
        n.priorities.push(v.priority.as_str());
        n.data.push(Json(&v.data));
        n.content.push(v.content.as_ref().map(Json));
        n.correlation_ids.push(v.correlation_id.as_deref());
        n.severities.push(v.severity.map(domain::request::Severity::as_str));
        n.error_codes.push(v.error_code.as_deref());
        n.error_classes.push(v.error_class.as_deref());
        n.send_ats.push(v.send_at);
        n.keys.push(row.intake.idempotency.as_ref().map(|k| k.key.as_str()));
        n.workflows.push(plan.workflow.as_deref());
        n.retries.push(plan.retry.as_ref().map(Json));
        n.tags.push(Json(&v.tags));
        n.actors.push(row.actor);
        n.traceparents.push(row.traceparent);
        let handed = handed_off(row.intake, row.hand_off);
        for ((delivery, planned), handed) in p.deliveries.iter().zip(&plan.deliveries).zip(handed) {
            d.handed.push(handed);
            d.ids.push(delivery.id);
            d.notification_ids.push(p.id);
            d.channels.push(delivery.channel.as_str());
            d.recipients.push(delivery.recipient.as_str());
            d.suppression_addresses.push(suppression_address(delivery.channel, &delivery.recipient));
            d.ranks.push(v.priority.rank());
            d.available_at.push(planned.not_before.or(v.send_at));
            d.subscriber_ids.push(planned.subscriber_id.as_deref());
            d.contents.push(planned.content.as_ref().map(Json));
            d.locales.push(planned.locale.as_deref());
            d.skips.push(planned.skip.map(|s| s.code()));
            d.skip_messages.push(planned.skip.map(|s| s.message()));
            d.deferred.push(planned.not_before);
        }
    }
    // Whole microseconds, as an interval holds: a finer duration would not convert.
    let grace = Duration::from_micros(u64::try_from(grace.as_micros()).unwrap_or(u64::MAX));
    let grace = Grace(sqlx::postgres::types::PgInterval::try_from(grace).unwrap_or_default());
    let arguments = ACCEPT.arguments(&[&n, &d, &held, &grace])?;
    let (suppressed, erased_notifications, erased_subscribers): (Vec<Uuid>, Vec<Uuid>, Vec<String>) =
        sqlx::query_as_with(ACCEPT.sql(), arguments).fetch_one(conn).await?;
    let mut erased: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (notification, subscriber) in erased_notifications.into_iter().zip(erased_subscribers) {
        erased.entry(notification).or_default().push(subscriber);
    }
    Ok(Inserted { suppressed: suppressed.into_iter().collect(), erased })
}

/// What [`insert`] decided beyond the plan.
struct Inserted {
    /// Deliveries the suppression list stopped.
    suppressed: HashSet<Uuid>,
    /// Notifications not written, with their subscribers erased since the directory was read.
    erased: HashMap<Uuid, Vec<String>>,
}

impl Inserted {
    fn result(&self, accepted: AcceptedNotification) -> IntakeResult {
        match self.erased.get(&accepted.id) {
            Some(ids) => IntakeResult::Erased(ids.clone()),
            None => IntakeResult::Accepted(accepted),
        }
    }

    fn written(&self, accepted: &AcceptedNotification) -> bool {
        !self.erased.contains_key(&accepted.id)
    }
}

/// `:grace` of the accept statement.
struct Grace(sqlx::postgres::types::PgInterval);

impl Columns for Grace {
    fn bind(&self, name: &str, args: &mut PgArguments) -> Result<bool, sqlx::error::BoxDynError> {
        match name {
            "grace" => named::add(args, self.0),
            _ => Ok(false),
        }
    }
}

/// The subscribers each notification's plan sends to, as parallel columns (`:h_*`).
#[derive(Default)]
struct HeldColumns<'a> {
    notification_ids: Vec<Uuid>,
    ids: Vec<&'a str>,
    created_at: Vec<OffsetDateTime>,
}

impl Columns for HeldColumns<'_> {
    fn bind(&self, name: &str, args: &mut PgArguments) -> Result<bool, sqlx::error::BoxDynError> {
        match name {
            "h_notification_id" => named::add(args, &self.notification_ids),
            "h_subscriber_id" => named::add(args, &self.ids),
            "h_created_at" => named::add(args, &self.created_at),
            _ => Ok(false),
        }
    }
}

/// The notifications, as parallel columns (`:n_*`).
#[derive(Default)]
struct NotificationColumns<'a> {
    ids: Vec<Uuid>,
    tenants: Vec<Uuid>,
    created_at: Vec<OffsetDateTime>,
    kinds: Vec<&'a str>,
    priorities: Vec<&'a str>,
    data: Vec<Json<&'a serde_json::Map<String, serde_json::Value>>>,
    content: Vec<Option<Json<&'a domain::Content>>>,
    correlation_ids: Vec<Option<&'a str>>,
    severities: Vec<Option<&'static str>>,
    error_codes: Vec<Option<&'a str>>,
    error_classes: Vec<Option<&'a str>>,
    send_ats: Vec<Option<OffsetDateTime>>,
    keys: Vec<Option<&'a str>>,
    workflows: Vec<Option<&'a str>>,
    retries: Vec<Option<Json<&'a domain::RetryPolicy>>>,
    /// The inbox items' tags (a JSON array each: PostgreSQL has no arrays of arrays).
    tags: Vec<Json<&'a Vec<String>>>,
    actors: Vec<&'a str>,
    traceparents: Vec<Option<&'a str>>,
}

impl Columns for NotificationColumns<'_> {
    fn bind(&self, name: &str, args: &mut PgArguments) -> Result<bool, sqlx::error::BoxDynError> {
        match name {
            "n_id" => named::add(args, &self.ids),
            "n_tenant_id" => named::add(args, &self.tenants),
            "n_created_at" => named::add(args, &self.created_at),
            "n_type" => named::add(args, &self.kinds),
            "n_priority" => named::add(args, &self.priorities),
            "n_data" => named::add(args, &self.data),
            "n_content" => named::add(args, &self.content),
            "n_correlation_id" => named::add(args, &self.correlation_ids),
            "n_severity" => named::add(args, &self.severities),
            "n_error_code" => named::add(args, &self.error_codes),
            "n_error_class" => named::add(args, &self.error_classes),
            "n_send_at" => named::add(args, &self.send_ats),
            "n_key" => named::add(args, &self.keys),
            "n_workflow" => named::add(args, &self.workflows),
            "n_retry" => named::add(args, &self.retries),
            "n_tags" => named::add(args, &self.tags),
            "n_actor" => named::add(args, &self.actors),
            "n_traceparent" => named::add(args, &self.traceparents),
            _ => Ok(false),
        }
    }
}

/// The deliveries, as parallel columns (`:d_*`).
#[derive(Default)]
struct DeliveryColumns<'a> {
    ids: Vec<Uuid>,
    notification_ids: Vec<Uuid>,
    channels: Vec<&'a str>,
    recipients: Vec<&'a str>,
    /// The recipient as the suppression list holds it.
    suppression_addresses: Vec<String>,
    ranks: Vec<i16>,
    available_at: Vec<Option<OffsetDateTime>>,
    subscriber_ids: Vec<Option<&'a str>>,
    contents: Vec<Option<Json<&'a domain::Content>>>,
    locales: Vec<Option<&'a str>>,
    /// The plan's reason not to send, as [`domain::Skip::code`].
    skips: Vec<Option<&'static str>>,
    skip_messages: Vec<Option<&'static str>>,
    /// When quiet hours end, for a deferred delivery.
    deferred: Vec<Option<OffsetDateTime>>,
    /// Whether the caller publishes it ([`handed_off`]): its outbox row is due after the
    /// grace, not at once.
    handed: Vec<bool>,
}

impl Columns for DeliveryColumns<'_> {
    fn bind(&self, name: &str, args: &mut PgArguments) -> Result<bool, sqlx::error::BoxDynError> {
        match name {
            "d_id" => named::add(args, &self.ids),
            "d_notification_id" => named::add(args, &self.notification_ids),
            "d_channel" => named::add(args, &self.channels),
            "d_recipient" => named::add(args, &self.recipients),
            "d_rank" => named::add(args, &self.ranks),
            "d_at" => named::add(args, &self.available_at),
            "d_address" => named::add(args, &self.suppression_addresses),
            "d_subscriber_id" => named::add(args, &self.subscriber_ids),
            "d_content" => named::add(args, &self.contents),
            "d_locale" => named::add(args, &self.locales),
            "d_skip" => named::add(args, &self.skips),
            "d_skip_message" => named::add(args, &self.skip_messages),
            "d_deferred" => named::add(args, &self.deferred),
            "d_handed" => named::add(args, &self.handed),
            _ => Ok(false),
        }
    }
}
