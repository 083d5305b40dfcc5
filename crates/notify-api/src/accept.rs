//! Accepting notifications, the one use case of `POST /v1/notifications` and of its batch
//! form (a single request is a batch of one): parse and validate each item, size the
//! fan-out, read the tenant's directory, plan the deliveries, write them
//! (`store::Store::accept`), hand the deliveries due now to the publisher (`handoff.rs`)
//! and push the new inbox items to the live sockets.

use std::sync::{Arc, LazyLock};

use domain::{
    FieldError, NewNotification, Plan, ValidNotification,
    plan::{Budget, Directory, MAX_DELIVERIES, plan_all},
    request::Recipient,
    view::AcceptedNotification,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::{Accept, IdempotencyKey, Intake, IntakeResult, StoreError};
use time::OffsetDateTime;
use tokio::{runtime::RuntimeFlavor, sync::Semaphore};

use crate::{AppState, auth::Authenticated, error::ApiError, json};

/// A request item, parsed and validated, with its idempotency key (if any) bound to the
/// request's hash.
pub struct Item {
    notification: ValidNotification,
    key: Option<IdempotencyKey>,
}

/// What became of one item.
pub enum Outcome {
    Accepted(AcceptedNotification),
    /// Its key was used before with the same request: that request's answer.
    Replayed(Value),
    Refused(ApiError),
}

/// Settles what the tenant's classification decides (`domain::classification`) for the
/// items that name no recipients or an error class: the audience of one without
/// recipients (its error class's, else its type's; with neither it is refused, naming
/// `to`), the priority of one that named none, and the error class itself (else the
/// type's). One statement for those items; none when no item needs it, which is every
/// request that names its recipients and no error class.
async fn classify(
    app: &AppState,
    tenant_id: uuid::Uuid,
    mut items: Vec<Result<Item, ApiError>>,
) -> Result<Vec<Result<Item, ApiError>>, ApiError> {
    let asking: Vec<(usize, String, Option<String>)> = items
        .iter()
        .enumerate()
        .filter_map(|(n, item)| Some((n, &item.as_ref().ok()?.notification)))
        .filter(|(_, v)| v.to.is_empty() || v.error_class.is_some())
        .map(|(n, v)| (n, v.kind.clone(), v.error_class.clone()))
        .collect();
    if asking.is_empty() {
        return Ok(items);
    }
    let kinds: Vec<&str> = asking.iter().map(|(_, kind, _)| kind.as_str()).collect();
    let classes: Vec<Option<&str>> = asking.iter().map(|(_, _, class)| class.as_deref()).collect();
    let answers = app.store.classify(tenant_id, &kinds, &classes).await?;
    for ((n, _, _), classified) in asking.iter().zip(answers) {
        let Ok(item) = &mut items[*n] else { continue };
        let v = &mut item.notification;
        v.error_class = classified.error_class;
        if let Some(priority) = classified.priority.filter(|_| !v.priority_given) {
            v.priority = priority;
        }
        if v.to.is_empty() {
            match classified.audience {
                Some(audience) => {
                    v.to.push(Recipient { topic: Some(audience.topic().to_owned()), ..Default::default() })
                }
                None => {
                    items[*n] = Err(ApiError::field(
                        "to",
                        "must name at least one recipient, or give `audience`, or the notification's error class \
                         (`PUT /v1/classifications`) or its type must have an audience",
                    ))
                }
            }
        }
    }
    Ok(items)
}

/// Parses and validates one notification; with an idempotency key (the header's or the
/// body's), binds the key to the SHA-256 of the request without the key.
pub fn parse(app: &AppState, mut body: Value, header_key: Option<String>) -> Result<Item, ApiError> {
    let request: NewNotification = json::from_value(body.clone())?;
    let key = match (header_key, request.idempotency_key.clone()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::field("idempotency_key", "differs from the Idempotency-Key header"));
        }
        (h, b) => h.or(b),
    };
    let notification = request.validate(app.limits, OffsetDateTime::now_utc()).map_err(ApiError::Validation)?;
    let key = key.map(|key| {
        if let Some(object) = body.as_object_mut() {
            object.remove("idempotency_key");
        }
        let request_hash = Sha256::digest(canonical_json(&body)).to_vec();
        IdempotencyKey { key, request_hash }
    });
    Ok(Item { notification, key })
}

/// Accepts `items` (each parsed, or refused already) for the caller's tenant and answers
/// for each, in order. The items share one fan-out budget, in order: topics are counted
/// before any member is loaded, and an item past the budget is refused without being
/// loaded or rendered.
pub async fn accept(
    app: &AppState,
    auth: &Authenticated,
    items: Vec<Result<Item, ApiError>>,
) -> Result<Vec<Outcome>, ApiError> {
    let tenant_id = auth.0.tenant_id;
    let items = classify(app, tenant_id, items).await?;
    let mut budget = Budget { render_fuel: app.limits.render_fuel, ..Budget::default() };
    let topics = topics_of(items.iter().filter_map(|i| i.as_ref().ok()).map(|i| &i.notification));
    let sizes = app.store.topic_sizes(tenant_id, &topics, MAX_DELIVERIES).await?;
    let items: Vec<Result<Item, ApiError>> = items
        .into_iter()
        .map(|item| {
            let mut item = item?;
            app.chat_addresses.seal_inline(tenant_id, &mut item.notification.to).map_err(ApiError::Validation)?;
            budget.take_members(&item.notification, &sizes).map_err(ApiError::Validation)?;
            Ok(item)
        })
        .collect();

    let valid: Vec<&ValidNotification> =
        items.iter().filter_map(|i| i.as_ref().ok()).map(|i| &i.notification).collect();
    let directory = app.store.directory(tenant_id, &valid).await?;
    let (items, directory, plans) = plan_off_runtime(app, tenant_id, items, directory, budget).await?;
    let mut plans = plans?.into_iter();
    // Each item planned, or why not; what an erased subscriber's refusal names (`to`) is
    // kept aside, as the notification moves into the store's request.
    let mut planned: Vec<Result<Vec<Recipient>, ApiError>> = Vec::with_capacity(items.len());
    let mut intakes = Vec::new();
    for item in items {
        let planned_item = item.and_then(|item| {
            let plan: Plan = plans.next().expect("one plan per valid item").map_err(ApiError::Validation)?;
            let subscribers = plan.subscribers(&directory);
            let to = if subscribers.is_empty() { vec![] } else { item.notification.to.clone() };
            let mut notification = item.notification;
            if notification.error_class.is_none() {
                notification.error_class = directory.types.get(&notification.kind).and_then(|t| t.error_class.clone());
            }
            intakes.push(Intake { notification, plan, idempotency: item.key, subscribers });
            Ok(to)
        });
        planned.push(planned_item);
    }

    let origin = auth.origin();
    let written = app
        .store
        .accept(Accept {
            tenant_id,
            actor: origin.actor.to_owned(),
            traceparent: origin.traceparent.map(str::to_owned),
            items: intakes,
            retention: app.idempotency_retention,
        })
        .await?;
    if let Some(hand_off) = &app.hand_off {
        hand_off.send(written.due);
    }

    let mut results = written.results.into_iter();
    let mut inbox = Vec::new();
    let outcomes: Vec<Outcome> = planned
        .into_iter()
        .map(|planned| {
            let to = match planned {
                Ok(to) => to,
                Err(e) => return Outcome::Refused(e),
            };
            match results.next().expect("one result per written item") {
                IntakeResult::Accepted(accepted) => {
                    inbox.extend(inbox_items(&accepted));
                    Outcome::Accepted(accepted)
                }
                IntakeResult::Replayed(original) => Outcome::Replayed(original),
                IntakeResult::KeyReused => Outcome::Refused(key_reused()),
                IntakeResult::Erased(ids) => Outcome::Refused(erased(&directory, &to, &ids)),
            }
        })
        .collect();
    app.inbox_hub.created(tenant_id, inbox);

    let taken = outcomes.iter().filter(|o| matches!(o, Outcome::Accepted(_))).count();
    crate::metrics::METRICS.accepted.inc_by(taken as u64);
    match &outcomes[..] {
        [Outcome::Accepted(a)] => tracing::info!(%tenant_id, notification_id = %a.id,
            deliveries = a.deliveries.len(), "accepted"),
        [_] => {}
        _ => tracing::info!(%tenant_id, items = outcomes.len(), accepted = taken, "batch"),
    }
    Ok(outcomes)
}

/// Requests planned (and rendered for) at once, each on a thread of the blocking pool.
static PLANNING: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))));

type Planned = (Vec<Result<Item, ApiError>>, Directory, Result<Vec<Result<Plan, Vec<FieldError>>>, StoreError>);

/// Plans `items` on the blocking pool rather than the async runtime when any renders a
/// template: up to 50,000 renders, bounded by the request's fuel, would otherwise hold a
/// runtime thread (and `/healthz` with it) for as long. At most one such request per core
/// plans at once; the others wait here. The subscribers' `data` pages are still read
/// through the runtime. Inline content renders nothing: planned in place.
///
/// On a current-thread runtime (tests' `#[tokio::test]`) everything is planned in place:
/// there `Handle::block_on` from another thread depends on the runtime's one thread to
/// drive its I/O, and can hang (tokio documents it; tokio-rs/tokio#7441). The binaries
/// run a multi-thread runtime.
async fn plan_off_runtime(
    app: &AppState,
    tenant_id: uuid::Uuid,
    items: Vec<Result<Item, ApiError>>,
    directory: Directory,
    mut budget: Budget,
) -> Result<Planned, ApiError> {
    let valid = || items.iter().filter_map(|i| i.as_ref().ok()).map(|i| &i.notification);
    let current_thread = tokio::runtime::Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread;
    if current_thread || valid().all(|n| n.content.is_some()) {
        let valid: Vec<&ValidNotification> = valid().collect();
        let mut data = app.store.subscriber_data(tenant_id);
        let now = OffsetDateTime::now_utc();
        let plans = plan_all(&valid, &directory, now, &mut budget, app.subscriber_data_page, &mut data).await;
        return Ok((items, directory, plans));
    }
    let slot = Arc::clone(&PLANNING).acquire_owned().await.expect("the planning semaphore is never closed");
    let (store, page, runtime) = (app.store.clone(), app.subscriber_data_page, tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        // Held by the thread, not the request: one whose client went away still holds its
        // slot until its renders end.
        let _slot = slot;
        let plans = {
            let valid: Vec<&ValidNotification> =
                items.iter().filter_map(|i| i.as_ref().ok()).map(|i| &i.notification).collect();
            let mut data = store.subscriber_data(tenant_id);
            let now = OffsetDateTime::now_utc();
            runtime.block_on(plan_all(&valid, &directory, now, &mut budget, page, &mut data))
        };
        (items, directory, plans)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("planning failed: {e}")))
}

/// Every topic `items` name, once.
fn topics_of<'a>(items: impl IntoIterator<Item = &'a ValidNotification>) -> Vec<&'a str> {
    let mut topics: Vec<&str> = items.into_iter().flat_map(ValidNotification::topics).collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

/// The inbox items an accepted notification wrote, for the sockets: (subscriber, item id).
fn inbox_items(accepted: &AcceptedNotification) -> Vec<(String, uuid::Uuid)> {
    accepted
        .deliveries
        .iter()
        .filter(|d| d.channel == domain::Channel::InApp && d.status == domain::DeliveryStatus::Delivered)
        .filter_map(|d| Some((d.subscriber_id.clone()?, d.id)))
        .collect()
}

/// A `422` for a notification whose subscribers `ids` were erased after its directory was
/// read: a named one is `to[i].subscriber_id`, as if the request had come after the
/// erasure; a topic's member is `to` (sent again, the topic no longer holds it).
fn erased(directory: &Directory, to: &[Recipient], ids: &[String]) -> ApiError {
    let errors = ids
        .iter()
        .map(|id| {
            let named = to.iter().position(|r| r.topic.is_none() && r.subscriber_id.as_ref() == Some(id));
            match named {
                Some(i) => FieldError::new(
                    format!("to[{i}].subscriber_id"),
                    "no subscriber with this id: it was erased while this request was being accepted",
                ),
                None => {
                    let topic = to
                        .iter()
                        .filter_map(|r| r.topic.as_deref())
                        .find(|t| directory.topics.get(*t).is_some_and(|members| members.contains(id)))
                        .unwrap_or_default();
                    FieldError::new(
                        "to",
                        format!(
                            "subscriber `{id}` of topic `{topic}` was erased while this request was being accepted; \
                             send it again"
                        ),
                    )
                }
            }
        })
        .collect();
    ApiError::Validation(errors)
}

fn key_reused() -> ApiError {
    ApiError::Conflict {
        code: "idempotency_key_reused",
        detail: "this idempotency key was used with a different request".into(),
    }
}

/// The value as JSON with every object's keys sorted, so the same request hashes the
/// same whatever the order of its fields.
fn canonical_json(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_json_ignores_field_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": {"y": 1, "x": [{"q": 1, "p": 2}]}, "a": 1}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a": 1, "b": {"x": [{"p": 2, "q": 1}], "y": 1}}"#).unwrap();
        assert_eq!(super::canonical_json(&a), super::canonical_json(&b));
    }
}
