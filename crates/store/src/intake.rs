//! Accepting notifications: one or many, with or without idempotency keys, always
//! set-based (a batch of 1,000 is a handful of statements, not thousands).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use domain::{
    Channel, DeliveryStatus, NotificationStatus, Plan, ValidNotification,
    plan::Directory,
    view::{AcceptedDelivery, AcceptedNotification},
};
use sqlx::{PgConnection, PgPool, types::Json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Result, Store,
    group::{BoxFuture, Grouped},
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

/// One notification to accept, with the deliveries [`domain::plan`] worked out for it.
pub struct Intake<'a> {
    pub notification: &'a ValidNotification,
    pub plan: &'a Plan,
    pub idempotency: Option<IdempotencyKey>,
    /// The stored subscribers the plan sends to ([`planned_subscribers`]).
    pub subscribers: Vec<PlannedSubscriber>,
}

/// A stored subscriber a plan sends to, as the directory read it. The directory is read
/// before the accept, so the accept statement locks each (`FOR KEY SHARE`, which the
/// erasure's `FOR UPDATE` waits for) and writes nothing for a notification one of whose
/// subscribers is gone, or was erased and created again (another `created_at`), since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSubscriber {
    pub id: String,
    pub created_at: OffsetDateTime,
}

/// The stored subscribers (named or topic members) that `plan`'s deliveries go to, each once.
pub fn planned_subscribers(plan: &Plan, directory: &Directory) -> Vec<PlannedSubscriber> {
    let mut seen = HashSet::new();
    plan.deliveries
        .iter()
        .filter_map(|d| directory.subscribers.get(d.subscriber_id.as_deref()?))
        .filter(|listed| seen.insert(listed.subscriber.id.as_str()))
        .map(|listed| PlannedSubscriber { id: listed.subscriber.id.clone(), created_at: listed.subscriber.created_at })
        .collect()
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

impl Store {
    /// Accepts `items` for `tenant_id` and answers for each, in order. Without keys this is
    /// one statement. With keys, the keys are inserted first in the same transaction: the
    /// primary key on (tenant, key) makes a concurrent request with the same key wait for
    /// this one's commit and then replay its answer, so a key never makes two
    /// notifications. A key older than `retention` counts as unused.
    ///
    /// A delivery the plan skips (preferences, no address) or to an address on the
    /// tenant's suppression list is written `suppressed`, without an outbox row, and the
    /// answer says so.
    pub async fn accept_notifications(
        &self,
        tenant_id: Uuid,
        origin: &Origin<'_>,
        items: &[Intake<'_>],
        retention: Duration,
    ) -> Result<Vec<IntakeResult>> {
        let now = now_micros();
        let mut planned: Vec<AcceptedNotification> = items.iter().map(|i| answer(i.plan, now)).collect();
        if items.iter().all(|i| i.idempotency.is_none()) {
            let all: Vec<usize> = (0..items.len()).collect();
            let inserted =
                insert(self.pool.acquire().await?.as_mut(), &rows(tenant_id, origin, items, &planned, &all)).await?;
            mark_suppressed(&mut planned, &all, &inserted.suppressed);
            self.wake_relays_for(planned.iter().filter(|p| inserted.written(p)));
            return Ok(planned.into_iter().map(|p| inserted.result(p)).collect());
        }

        // The first item with a key claims it for the batch; later ones with the same key
        // are answered like a concurrent request would be.
        let mut first_with_key: HashMap<&str, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(k) = &item.idempotency {
                first_with_key.entry(k.key.as_str()).or_insert(i);
            }
        }
        let claimants: Vec<usize> = first_with_key.values().copied().collect();
        let responses: Vec<serde_json::Value> =
            claimants.iter().map(|&i| serde_json::to_value(&planned[i]).expect("serializes")).collect();

        let mut tx = self.pool.begin().await?;
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
        .bind(sqlx::postgres::types::PgInterval::try_from(retention).unwrap_or_default())
        .fetch_all(&mut *tx)
        .await?;
        let won: std::collections::HashSet<String> = won.into_iter().map(|r| r.0).collect();

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
            let claimant_won = first_with_key[k.key.as_str()] == i && won.contains(&k.key);
            if claimant_won {
                to_insert.push(i);
                results.push(None);
                continue;
            }
            results.push(Some(match record.get(&k.key) {
                Some((hash, response)) if *hash == k.request_hash => IntakeResult::Replayed(response.clone()),
                Some(_) => IntakeResult::KeyReused,
                // The key's row vanished between the two statements (purged): refuse
                // rather than risk a second notification; a retry will succeed.
                None => IntakeResult::KeyReused,
            }));
        }
        let inserted = insert(&mut tx, &rows(tenant_id, origin, items, &planned, &to_insert)).await?;
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
        self.wake_relays_for(to_insert.iter().map(|&i| &planned[i]).filter(|p| inserted.written(p)));

        Ok(results
            .into_iter()
            .zip(planned)
            .map(|(result, planned)| result.unwrap_or_else(|| inserted.result(planned)))
            .collect())
    }

    /// Accepts one notification without an idempotency key. Concurrent calls share one
    /// statement and one commit (group commit, see [`crate::group`]): the commit rate of
    /// the database no longer bounds the rate of single requests. A notification refused
    /// as [`IntakeResult::Erased`] does not fail the others of its group.
    pub async fn accept_notification(&self, single: Single) -> Result<IntakeResult> {
        let accepts = self
            .groups
            .accepts
            .get_or_init(|| Grouped::start(self.pool.clone(), accept_group, ACCEPT_GROUPS_IN_FLIGHT, ACCEPT_GROUP_MAX));
        let result = accepts.call(single).await?;
        if let IntakeResult::Accepted(accepted) = &result {
            self.wake_relays_for([accepted]);
        }
        Ok(result)
    }

    /// Wakes the relays if any of `accepted` wrote outbox rows.
    fn wake_relays_for<'a>(&self, accepted: impl IntoIterator<Item = &'a AcceptedNotification>) {
        if accepted.into_iter().any(|a| a.deliveries.iter().any(|d| d.status == DeliveryStatus::Pending)) {
            self.wake_relays();
        }
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

/// The rows of the items `which`, all of `tenant_id` and `origin`.
fn rows<'a>(
    tenant_id: Uuid,
    origin: &Origin<'a>,
    items: &'a [Intake<'a>],
    planned: &'a [AcceptedNotification],
    which: &[usize],
) -> Vec<Row<'a>> {
    which.iter().map(|&i| Row { tenant_id, origin: *origin, intake: &items[i], answer: &planned[i] }).collect()
}

/// Groups of single accepts written at once: enough to keep both of a small database's
/// cores busy while one group commits, few enough to leave the pool to the reads.
const ACCEPT_GROUPS_IN_FLIGHT: usize = 4;
const ACCEPT_GROUP_MAX: usize = 1_000;

/// A notification without an idempotency key, for [`Store::accept_notification`].
pub struct Single {
    pub tenant_id: Uuid,
    pub actor: String,
    pub traceparent: Option<String>,
    pub notification: ValidNotification,
    pub plan: Plan,
    /// The stored subscribers the plan sends to ([`planned_subscribers`]).
    pub subscribers: Vec<PlannedSubscriber>,
}

fn accept_group<'a>(pool: &'a PgPool, requests: &'a [Single]) -> BoxFuture<'a, Result<Vec<IntakeResult>>> {
    Box::pin(async move {
        let now = now_micros();
        let intakes: Vec<Intake> = requests
            .iter()
            .map(|r| Intake {
                notification: &r.notification,
                plan: &r.plan,
                idempotency: None,
                subscribers: r.subscribers.clone(),
            })
            .collect();
        let mut planned: Vec<AcceptedNotification> = requests.iter().map(|r| answer(&r.plan, now)).collect();
        let rows: Vec<Row> = requests
            .iter()
            .zip(&intakes)
            .zip(&planned)
            .map(|((r, intake), answer)| Row {
                tenant_id: r.tenant_id,
                origin: Origin { actor: &r.actor, traceparent: r.traceparent.as_deref() },
                intake,
                answer,
            })
            .collect();
        let inserted = insert(pool.acquire().await?.as_mut(), &rows).await?;
        let all: Vec<usize> = (0..planned.len()).collect();
        mark_suppressed(&mut planned, &all, &inserted.suppressed);
        Ok(planned.into_iter().map(|p| inserted.result(p)).collect())
    })
}

fn key_of<'a>(item: &'a Intake<'_>) -> &'a IdempotencyKey {
    item.idempotency.as_ref().expect("only items with a key claim one")
}

/// PostgreSQL keeps microseconds: the answer must show what a later read will show.
fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).expect("a valid nanosecond")
}

/// The answer as planned, with new ids: skipped deliveries are `suppressed`, and a
/// notification with nothing to send is `sent`, as its aggregate status is computed.
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
    let waits = deliveries.iter().any(|d| d.status == DeliveryStatus::Pending);
    AcceptedNotification {
        id: Uuid::now_v7(),
        status: if waits { NotificationStatus::Pending } else { NotificationStatus::Sent },
        created_at,
        deliveries,
    }
}

/// Shows in the answers what the insert decided: a delivery to an address on the
/// suppression list is `suppressed`, and a notification with nothing left to send is
/// `sent`, as its aggregate status is computed. Returns the items (of `which`) whose answer changed.
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
            if !notification.deliveries.iter().any(|d| d.status == DeliveryStatus::Pending) {
                notification.status = NotificationStatus::Sent;
            }
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
    items: &[Intake<'_>],
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
    tenant_id: Uuid,
    origin: Origin<'a>,
    intake: &'a Intake<'a>,
    answer: &'a AcceptedNotification,
}

/// Inserts `rows` (of any tenants), their deliveries, outbox rows and `accepted` audit
/// events in one statement (the caller wakes the relays after commit). A delivery the
/// plan skips, or whose address the tenant suppressed on its channel, is written
/// `suppressed` with the reason in `last_error_code`, and gets no outbox row; a
/// notification left with nothing to send is written `sent`. A delivery deferred by quiet
/// hours waits in the outbox until then. An in-app delivery is written to the inbox here
/// and is `delivered` (a scheduled one with the item's time set to `send_at`). A
/// notification whose stored subscribers are not all still there, as the directory read
/// them, is not written at all (see [`PlannedSubscriber`]); the others are.
///
/// Prepared once per connection (planning it cost more than running it for a small
/// group): no part of its plan depends on how big the tables are, as the suppression
/// list is read by primary-key lookups (the LATERAL join), never scanned.
async fn insert(conn: &mut PgConnection, rows: &[Row<'_>]) -> Result<Inserted> {
    if rows.is_empty() {
        return Ok(Inserted { suppressed: HashSet::new(), erased: HashMap::new() });
    }
    let mut n = NotificationColumns::default();
    let mut d = DeliveryColumns::default();
    let mut held = HeldColumns::default();
    for row in rows {
        let (v, plan, p) = (row.intake.notification, row.intake.plan, row.answer);
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
        n.send_ats.push(v.send_at);
        n.keys.push(row.intake.idempotency.as_ref().map(|k| k.key.as_str()));
        n.workflows.push(plan.workflow.as_deref());
        n.retries.push(plan.retry.as_ref().map(Json));
        n.tags.push(Json(&v.tags));
        n.actors.push(row.origin.actor);
        n.traceparents.push(row.origin.traceparent);
        for (delivery, planned) in p.deliveries.iter().zip(&plan.deliveries) {
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
    let (suppressed, erased_notifications, erased_subscribers): (Vec<Uuid>, Vec<Uuid>, Vec<String>) = sqlx::query_as(
        "WITH given AS (
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[],
                                 $7::jsonb[], $8::text[], $9::timestamptz[], $10::text[], $11::text[], $12::jsonb[],
                                 $13::jsonb[], $14::text[], $15::text[])
                 AS u(id, tenant_id, created_at, type, priority, data, content, correlation_id, send_at, key,
                      workflow, retry, tags, actor, traceparent)),
         w AS (
            SELECT w.nid, w.subscriber_id, s.id IS NOT NULL AS held
            FROM unnest($29::uuid[], $30::text[], $31::timestamptz[]) AS w(nid, subscriber_id, created_at)
            JOIN given g ON g.id = w.nid
            LEFT JOIN LATERAL (
                SELECT s.id FROM subscribers s
                WHERE s.tenant_id = g.tenant_id AND s.id = w.subscriber_id AND s.created_at = w.created_at
                FOR KEY SHARE
            ) s ON true),
         u AS (
            SELECT g.* FROM given g
            WHERE g.id <> ALL (ARRAY(SELECT w.nid FROM w WHERE NOT w.held))),
         p AS (
            SELECT x.id, x.nid, u.tenant_id, u.created_at, u.traceparent, x.channel, x.recipient, x.rank, x.at,
                   x.subscriber_id, x.content, x.locale, x.deferred, x.skip, coalesce(x.skip, s.reason) AS reason,
                   CASE WHEN x.skip IS NOT NULL THEN x.skip_message
                        WHEN s.reason IS NOT NULL THEN 'the address is on the suppression list' END AS message
            FROM unnest($16::uuid[], $17::uuid[], $18::text[], $19::text[], $20::smallint[], $21::timestamptz[],
                        $22::text[], $23::text[], $24::jsonb[], $25::text[], $26::text[], $27::text[],
                        $28::timestamptz[])
                 AS x(id, nid, channel, recipient, rank, at, address, subscriber_id, content, locale, skip,
                      skip_message, deferred)
            JOIN u ON u.id = x.nid
            LEFT JOIN LATERAL (
                SELECT s.reason FROM suppressions s
                WHERE x.skip IS NULL AND s.tenant_id = u.tenant_id AND s.channel = x.channel AND s.address = x.address
            ) s ON true),
         n AS (
            INSERT INTO notifications (id, tenant_id, type, priority, data, content, correlation_id, send_at,
                                       idempotency_key, workflow, retry, status, created_at, updated_at)
            SELECT u.id, u.tenant_id, u.type, u.priority, u.data, coalesce(u.content, '{}'), u.correlation_id,
                   u.send_at, u.key, u.workflow, u.retry, CASE WHEN g.waits IS FALSE THEN 'sent' ELSE 'pending' END,
                   u.created_at, u.created_at
            FROM u LEFT JOIN (SELECT nid, bool_or(reason IS NULL AND channel <> 'in_app') AS waits FROM p GROUP BY nid) g
                   ON g.nid = u.id),
         d AS (
            INSERT INTO deliveries (id, tenant_id, notification_id, channel, recipient, subscriber_id, content,
                                    locale, status, last_error_code, last_error_message, next_attempt_at, sent_at,
                                    created_at, updated_at)
            SELECT p.id, p.tenant_id, p.nid, p.channel, p.recipient, p.subscriber_id, p.content, p.locale,
                   CASE WHEN p.reason IS NOT NULL THEN 'suppressed' WHEN p.channel = 'in_app' THEN 'delivered'
                        ELSE 'pending' END,
                   p.reason, p.message, CASE WHEN p.reason IS NULL THEN p.deferred END,
                   CASE WHEN p.reason IS NULL AND p.channel = 'in_app' THEN greatest(p.at, p.created_at) END,
                   p.created_at, p.created_at
            FROM p),
         i AS (
            INSERT INTO inbox_items (id, tenant_id, subscriber_id, notification_id, type, title, body, action_url,
                                     tags, created_at)
            SELECT p.id, p.tenant_id, p.subscriber_id, p.nid, u.type, c.content->>'title', c.content->>'body',
                   c.content->>'action_url', ARRAY(SELECT jsonb_array_elements_text(u.tags)),
                   greatest(p.at, p.created_at)
            FROM p JOIN u ON u.id = p.nid CROSS JOIN LATERAL (SELECT coalesce(p.content, u.content) AS content) c
            WHERE p.channel = 'in_app' AND p.reason IS NULL),
         o AS (
            INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, available_at,
                                traceparent)
            SELECT p.tenant_id, p.nid, p.id, p.channel, 1, p.rank, coalesce(p.at, now()), p.traceparent FROM p
            WHERE p.reason IS NULL AND p.channel <> 'in_app'),
         a AS (
            INSERT INTO audit_events (tenant_id, notification_id, action, actor, created_at)
            SELECT u.tenant_id, u.id, 'accepted', u.actor, u.created_at FROM u)
         SELECT array(SELECT p.id FROM p WHERE p.skip IS NULL AND p.reason IS NOT NULL),
                array(SELECT w.nid FROM w WHERE NOT w.held ORDER BY w.nid, w.subscriber_id),
                array(SELECT w.subscriber_id FROM w WHERE NOT w.held ORDER BY w.nid, w.subscriber_id)",
    )
    .bind(&n.ids)
    .bind(&n.tenants)
    .bind(&n.created_at)
    .bind(&n.kinds)
    .bind(&n.priorities)
    .bind(&n.data)
    .bind(&n.content)
    .bind(&n.correlation_ids)
    .bind(&n.send_ats)
    .bind(&n.keys)
    .bind(&n.workflows)
    .bind(&n.retries)
    .bind(&n.tags)
    .bind(&n.actors)
    .bind(&n.traceparents)
    .bind(&d.ids)
    .bind(&d.notification_ids)
    .bind(&d.channels)
    .bind(&d.recipients)
    .bind(&d.ranks)
    .bind(&d.available_at)
    .bind(&d.suppression_addresses)
    .bind(&d.subscriber_ids)
    .bind(&d.contents)
    .bind(&d.locales)
    .bind(&d.skips)
    .bind(&d.skip_messages)
    .bind(&d.deferred)
    .bind(&held.notification_ids)
    .bind(&held.ids)
    .bind(&held.created_at)
    .fetch_one(conn)
    .await?;
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

/// The subscribers each notification's plan sends to, as parallel columns.
#[derive(Default)]
struct HeldColumns<'a> {
    notification_ids: Vec<Uuid>,
    ids: Vec<&'a str>,
    created_at: Vec<OffsetDateTime>,
}

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
    send_ats: Vec<Option<OffsetDateTime>>,
    keys: Vec<Option<&'a str>>,
    workflows: Vec<Option<&'a str>>,
    retries: Vec<Option<Json<&'a domain::RetryPolicy>>>,
    /// The inbox items' tags (a JSON array each: PostgreSQL has no arrays of arrays).
    tags: Vec<Json<&'a Vec<String>>>,
    actors: Vec<&'a str>,
    traceparents: Vec<Option<&'a str>>,
}

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
}
