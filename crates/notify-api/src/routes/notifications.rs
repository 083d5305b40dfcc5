use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use domain::{
    FieldError, NewNotification, NotificationStatus, Plan, ValidNotification,
    plan::{Budget, Directory, MAX_DELIVERIES, plan_all},
    request::{Recipient, is_valid_idempotency_key},
    view::{AcceptedNotification, NotificationSummary, NotificationView},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::{Cancelled, IdempotencyKey, Intake, IntakeResult, ListFilter, Single};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::Authenticated,
    error::{ApiError, Problem, rate_limit_headers},
    json::{self, JsonBody, JsonItems},
    rate_limit::Quota,
    routes::parse_id,
};

/// Items in one batch.
pub const MAX_BATCH: usize = 1_000;
/// Page size of the list: default and largest.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

#[utoipa::path(post, path = "/v1/notifications", tag = "notifications",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes a retried request safe: the same key and body answer the first request's result.")),
    request_body(content = NewNotification, example = json!({"type": "order.shipped",
            "to": [{"email": "ada@example.com", "phone": "+15551234567"}],
            "content": {"subject": "Your order shipped", "text": "It is on its way."},
            "data": {"order": "991"}, "priority": "high", "correlation_id": "order-991"})),
    responses(
        (status = 202, description = "Accepted: the notification, its deliveries and their outbox rows are committed.",
            body = AcceptedNotification,
            headers(("Idempotent-Replayed" = String, description = "`true` when this answers an earlier request with the same key"),
                    ("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The idempotency key was used with another request", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's intake rate is exhausted; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(app): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let quota = app.take_tokens(&auth, 1)?;
    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if is_valid_idempotency_key(k) => Some(k.to_owned()),
            _ => return Err(ApiError::field("Idempotency-Key", "must be 1 to 255 printable ASCII characters")),
        },
    };
    let (notification, idempotency) = intake_item(&app, body, header_key)?;
    let mut budget = Budget::default();
    let sizes = app.store.topic_sizes(auth.0.tenant_id, &topics_of([&notification]), MAX_DELIVERIES).await?;
    budget.take_members(&notification, &sizes).map_err(ApiError::Validation)?;
    let (directory, mut plans) = plan(&app, auth.0.tenant_id, &[&notification], &mut budget).await?;
    let plan = plans.pop().expect("one plan per item").map_err(ApiError::Validation)?;
    let scheduled = notification.send_at.is_some();
    let subscribers = store::planned_subscribers(&plan, &directory);
    // What a refusal for an erased subscriber names (the notification moves into the group).
    let to = if subscribers.is_empty() { vec![] } else { notification.to.clone() };
    let result = match idempotency {
        // Without a key, concurrent requests share their commit.
        None => {
            let origin = auth.origin();
            let single = Single {
                tenant_id: auth.0.tenant_id,
                actor: origin.actor.to_owned(),
                traceparent: origin.traceparent.map(str::to_owned),
                notification,
                plan,
                subscribers,
            };
            app.store.accept_notification(single).await?
        }
        Some(_) => {
            let item = Intake { notification: &notification, plan: &plan, idempotency, subscribers };
            app.store
                .accept_notifications(
                    auth.0.tenant_id,
                    &auth.origin(),
                    std::slice::from_ref(&item),
                    app.idempotency_retention,
                )
                .await?
                .pop()
                .expect("one result per item")
        }
    };
    let mut response = match result {
        IntakeResult::Accepted(accepted) => {
            app.inbox_hub.created(auth.0.tenant_id, inbox_items(&accepted));
            crate::metrics::METRICS.accepted.inc();
            tracing::info!(tenant_id = %auth.0.tenant_id, notification_id = %accepted.id,
                deliveries = accepted.deliveries.len(), scheduled, "accepted");
            (StatusCode::ACCEPTED, Json(accepted)).into_response()
        }
        IntakeResult::Replayed(original) => {
            let mut r = (StatusCode::ACCEPTED, Json(original)).into_response();
            r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            r
        }
        IntakeResult::KeyReused => return Err(key_reused()),
        IntakeResult::Erased(ids) => return Err(erased(&directory, &to, &ids)),
    };
    rate_limit_headers(response.headers_mut(), quota);
    Ok(response)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1,000 notifications; each may carry its own `idempotency_key`.
    #[schema(value_type = Vec<NewNotification>)]
    notifications: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    /// One per item, in the order of the request.
    results: Vec<BatchItem>,
}

/// One item of a batch answer: `status` is what a single request would have answered.
#[derive(Serialize, ToSchema)]
pub struct BatchItem {
    status: u16,
    /// The item's idempotency key had been used with the same request: this is that
    /// request's answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AcceptedNotification>)]
    notification: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Problem>,
}

#[utoipa::path(post, path = "/v1/notifications/batch", tag = "notifications",
    request_body(content = BatchRequest, example = json!({"notifications": [
            {"type": "order.shipped", "to": [{"email": "ada@example.com"}],
             "content": {"subject": "Shipped", "text": "It is on its way."}, "idempotency_key": "order-991-shipped"},
            {"type": "order.shipped", "to": [{"phone": "+15551234567"}], "content": {"text": "Order 992 shipped."}}]})),
    responses(
        (status = 200, description = "One result per item, in order: each accepted (202) or refused with its problem.",
            body = BatchResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No items, or more than 1,000", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's intake rate is exhausted", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/notifications/batch`: up to 1,000 notifications, each accepted or refused on
/// its own; the answer has one result per item, in order.
pub async fn batch(
    State(app): State<AppState>,
    auth: Authenticated,
    JsonItems(request): JsonItems<BatchRequest>,
) -> Result<Response, ApiError> {
    let count = request.notifications.len();
    if count == 0 || count > MAX_BATCH {
        return Err(ApiError::field("notifications", format!("must hold 1 to {MAX_BATCH} notifications")));
    }
    let quota = app.take_tokens(&auth, count as u32)?;
    let parsed: Vec<_> = request.notifications.into_iter().map(|item| intake_item(&app, item, None)).collect();
    // The items share one budget, in order: topics are counted before any member is
    // loaded, and an item past the budget is refused without being loaded or rendered.
    let mut budget = Budget::default();
    let topics = topics_of(parsed.iter().filter_map(|p| p.as_ref().ok()).map(|(n, _)| n));
    let sizes = app.store.topic_sizes(auth.0.tenant_id, &topics, MAX_DELIVERIES).await?;
    let parsed: Vec<Result<_, ApiError>> = parsed
        .into_iter()
        .map(|p| {
            let (notification, key) = p?;
            budget.take_members(&notification, &sizes).map_err(ApiError::Validation)?;
            Ok((notification, key))
        })
        .collect();
    let valid: Vec<&ValidNotification> = parsed.iter().filter_map(|p| p.as_ref().ok()).map(|(n, _)| n).collect();
    let (directory, plans) = plan(&app, auth.0.tenant_id, &valid, &mut budget).await?;
    let mut plans = plans.into_iter();
    let planned: Vec<Result<Planned, ApiError>> = parsed
        .iter()
        .map(|p| {
            let (notification, key) = p.as_ref().map_err(Clone::clone)?;
            let plan = plans.next().expect("one plan per valid item").map_err(ApiError::Validation)?;
            Ok((notification, key, plan))
        })
        .collect();
    let intakes: Vec<Intake> = planned
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .map(|(notification, key, plan)| Intake {
            notification,
            plan,
            idempotency: (*key).clone(),
            subscribers: store::planned_subscribers(plan, &directory),
        })
        .collect();
    let mut accepted = app
        .store
        .accept_notifications(auth.0.tenant_id, &auth.origin(), &intakes, app.idempotency_retention)
        .await?
        .into_iter();
    let mut inbox = Vec::new();
    let results: Vec<BatchItem> = planned
        .iter()
        .map(|p| match p {
            Err(e) => refused(e),
            Ok(_) => match accepted.next().expect("one result per valid item") {
                IntakeResult::Accepted(a) => {
                    inbox.extend(inbox_items(&a));
                    BatchItem {
                        status: 202,
                        replayed: false,
                        notification: Some(serde_json::to_value(a).expect("serializes")),
                        error: None,
                    }
                }
                IntakeResult::Replayed(original) => {
                    BatchItem { status: 202, replayed: true, notification: Some(original), error: None }
                }
                IntakeResult::KeyReused => refused(&key_reused()),
                IntakeResult::Erased(ids) => {
                    refused(&erased(&directory, &p.as_ref().expect("accepted items").0.to, &ids))
                }
            },
        })
        .collect();
    app.inbox_hub.created(auth.0.tenant_id, inbox);
    let taken = results.iter().filter(|r| r.status == 202 && !r.replayed).count();
    crate::metrics::METRICS.accepted.inc_by(taken as u64);
    tracing::info!(tenant_id = %auth.0.tenant_id, items = count, accepted = taken, "batch");
    let mut response = (StatusCode::OK, Json(BatchResponse { results })).into_response();
    rate_limit_headers(response.headers_mut(), quota);
    Ok(response)
}

/// The directory `items` refer to, and their plans in order within `budget`; the
/// subscribers' `data` is read a page of `limits.subscriber_data_page` at a time.
async fn plan(
    app: &AppState,
    tenant_id: Uuid,
    items: &[&ValidNotification],
    budget: &mut Budget,
) -> Result<(Directory, Vec<Result<Plan, Vec<FieldError>>>), ApiError> {
    let directory = app.store.directory(tenant_id, items).await?;
    let mut data = app.store.subscriber_data(tenant_id);
    let now = OffsetDateTime::now_utc();
    let plans = plan_all(items, &directory, now, budget, app.subscriber_data_page, &mut data).await?;
    Ok((directory, plans))
}

/// Every topic `items` name, once.
fn topics_of<'a>(items: impl IntoIterator<Item = &'a ValidNotification>) -> Vec<&'a str> {
    let mut topics: Vec<&str> = items.into_iter().flat_map(ValidNotification::topics).collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

/// A batch item ready to accept: the notification, its key, its deliveries.
type Planned<'a> = (&'a ValidNotification, &'a Option<IdempotencyKey>, Plan);

fn refused(e: &ApiError) -> BatchItem {
    let (status, problem) = e.problem();
    let problem = Some(problem);
    BatchItem { status: status.as_u16(), replayed: false, notification: None, error: problem }
}

/// The inbox items an accepted notification wrote, for the sockets: (subscriber, item id).
fn inbox_items(accepted: &AcceptedNotification) -> Vec<(String, Uuid)> {
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

/// Parses and validates one notification; with an idempotency key (the header's or the
/// body's), binds the key to the SHA-256 of the request without the key.
fn intake_item(
    app: &AppState,
    mut body: Value,
    header_key: Option<String>,
) -> Result<(ValidNotification, Option<IdempotencyKey>), ApiError> {
    let request: NewNotification = json::from_value(body.clone())?;
    let key = match (header_key, request.idempotency_key.clone()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::field("idempotency_key", "differs from the Idempotency-Key header"));
        }
        (h, b) => h.or(b),
    };
    let valid = request.validate(app.limits, OffsetDateTime::now_utc()).map_err(ApiError::Validation)?;
    let idempotency = key.map(|key| {
        if let Some(object) = body.as_object_mut() {
            object.remove("idempotency_key");
        }
        let request_hash = Sha256::digest(canonical_json(&body)).to_vec();
        IdempotencyKey { key, request_hash }
    });
    Ok((valid, idempotency))
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

#[utoipa::path(get, path = "/v1/notifications/{id}", tag = "notifications",
    params(("id" = Uuid, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "The notification, its deliveries with every attempt, and its audit events", body = NotificationView),
        (status = 404, description = "No such notification for this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/notifications/{id}`.
pub async fn get(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<NotificationView>, ApiError> {
    app.store.get_notification(auth.0.tenant_id, parse_id(&id)?).await?.map(Json).ok_or(ApiError::NotFound)
}

#[utoipa::path(post, path = "/v1/notifications/{id}/cancel", tag = "notifications",
    params(("id" = Uuid, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "Cancelled: the notification as it now is", body = NotificationView),
        (status = 404, description = "No such notification for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing left to cancel", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/notifications/{id}/cancel`: cancels every delivery not yet sent; answers
/// with the notification as it now is.
pub async fn cancel(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<NotificationView>, ApiError> {
    let (tenant, id) = (auth.0.tenant_id, parse_id(&id)?);
    match app.store.cancel_notification(tenant, id, auth.actor()).await? {
        Cancelled::Some(count) => {
            tracing::info!(tenant_id = %tenant, notification_id = %id, deliveries = count, "cancelled");
            app.store.get_notification(tenant, id).await?.map(Json).ok_or(ApiError::NotFound)
        }
        Cancelled::Nothing => Err(ApiError::Conflict {
            code: "nothing_to_cancel",
            detail: "every delivery has been sent, has failed, or is being sent".into(),
        }),
        Cancelled::NotFound => Err(ApiError::NotFound),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Page {
    items: Vec<NotificationSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/notifications", tag = "notifications",
    params(
        ("status" = Option<NotificationStatus>, Query, example = "pending"),
        ("type" = Option<String>, Query, example = "order.shipped"),
        ("correlation_id" = Option<String>, Query, example = "order-991"),
        ("created_after" = Option<String>, Query, format = DateTime, description = "RFC 3339, inclusive"),
        ("created_before" = Option<String>, Query, format = DateTime, description = "RFC 3339, exclusive"),
        ("limit" = Option<i64>, Query, description = "1 to 200, default 50", example = 20),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of notifications, newest first", body = Page),
        (status = 422, description = "A query parameter is invalid or unknown", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/notifications?status=&type=&correlation_id=&created_after=&created_before=&limit=&cursor=`:
/// newest first.
pub async fn list(
    State(app): State<AppState>,
    auth: Authenticated,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Page>, ApiError> {
    let mut filter = ListFilter { limit: DEFAULT_PAGE, ..Default::default() };
    let time = |field: &str, v: &str| {
        OffsetDateTime::parse(v, &Rfc3339).map_err(|_| ApiError::field(field, "must be an RFC 3339 time"))
    };
    for (name, value) in &params {
        if value.contains('\0') {
            // PostgreSQL's text cannot hold it: no stored value has one.
            return Err(ApiError::field(name, "must not contain a NUL character"));
        }
        match name.as_str() {
            "status" => {
                filter.status =
                    Some(NotificationStatus::parse(value).ok_or_else(|| ApiError::field("status", "unknown status"))?)
            }
            "type" => filter.kind = Some(value.clone()),
            "correlation_id" => filter.correlation_id = Some(value.clone()),
            "created_after" => filter.created_after = Some(time("created_after", value)?),
            "created_before" => filter.created_before = Some(time("created_before", value)?),
            "limit" => filter.limit = super::page_limit(value, MAX_PAGE)?,
            "cursor" => {
                filter.after = Some(
                    decode_cursor(value).ok_or_else(|| ApiError::field("cursor", "is not a cursor this API gave"))?,
                )
            }
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    let page_size = filter.limit;
    filter.limit += 1;
    let mut items = app.store.list_notifications(auth.0.tenant_id, &filter).await?;
    let next_cursor = if items.len() as i64 > page_size {
        items.truncate(page_size as usize);
        items.last().map(|last| encode_cursor(last.created_at, last.id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// The position after an item: its creation time in microseconds and its id, in hex.
fn encode_cursor(created_at: OffsetDateTime, id: Uuid) -> String {
    let micros = (created_at.unix_timestamp_nanos() / 1_000) as i64;
    let mut bytes = micros.to_be_bytes().to_vec();
    bytes.extend_from_slice(id.as_bytes());
    hex::encode(bytes)
}

fn decode_cursor(cursor: &str) -> Option<(OffsetDateTime, Uuid)> {
    let bytes = hex::decode(cursor).ok()?;
    let (micros, id) = bytes.split_at_checked(8)?;
    let micros = i64::from_be_bytes(micros.try_into().ok()?);
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()?;
    Some((at, Uuid::from_slice(id).ok()?))
}

impl AppState {
    /// Takes `count` notifications from the caller's tenant's intake rate.
    fn take_tokens(&self, auth: &Authenticated, count: u32) -> Result<Quota, ApiError> {
        let rate = auth
            .0
            .rate_limit
            .map(|(per_second, burst)| crate::rate_limit::Rate { per_second, burst })
            .unwrap_or(self.default_rate);
        match self.limiter.take(auth.0.tenant_id, rate, count) {
            crate::rate_limit::Decision::Allowed(quota) => Ok(quota),
            crate::rate_limit::Decision::Limited { quota, retry_after } => {
                Err(ApiError::RateLimited { quota, retry_after })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_000).unwrap();
        let id = uuid::Uuid::now_v7();
        assert_eq!(super::decode_cursor(&super::encode_cursor(at, id)), Some((at, id)));
        assert_eq!(super::decode_cursor("zz"), None);
        assert_eq!(super::decode_cursor("00"), None);
    }
}

#[cfg(test)]
mod hashing {
    #[test]
    fn canonical_json_ignores_field_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": {"y": 1, "x": [{"q": 1, "p": 2}]}, "a": 1}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a": 1, "b": {"x": [{"p": 2, "q": 1}], "y": 1}}"#).unwrap();
        assert_eq!(super::canonical_json(&a), super::canonical_json(&b));
    }
}
