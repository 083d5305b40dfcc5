use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use domain::{
    NewNotification, NotificationStatus,
    request::{Severity, is_valid_idempotency_key},
    view::{AcceptedNotification, DeliveryPage, NotificationSummary, NotificationView},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{Cancelled, ListFilter};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    accept::{self, Outcome},
    auth::Authenticated,
    error::{ApiError, Problem, rate_limit_headers},
    json::{JsonBody, JsonItems},
    routes::parse_id,
};

/// Items in one batch.
pub const MAX_BATCH: usize = 1_000;
/// Page size of the list: default and largest.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;
/// Page size of a notification's deliveries: default and largest.
const DEFAULT_DELIVERIES: i64 = 100;
const MAX_DELIVERIES: i64 = 500;

#[utoipa::path(post, path = "/v1/notifications", operation_id = "createNotification", tag = "notifications",
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
        description = "Makes a retried request safe: the same key and body answer the first request's result. \
            1 to 255 printable ASCII characters, no space.")),
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
    let quota = app.limiter.take_for(&auth, app.default_rate, 1)?;
    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if is_valid_idempotency_key(k) => Some(k.to_owned()),
            _ => return Err(ApiError::field("Idempotency-Key", "must be 1 to 255 printable ASCII characters")),
        },
    };
    let item = accept::parse(&app, body, header_key)?;
    let outcome = accept::accept(&app, &auth, vec![Ok(item)]).await?.pop().expect("one outcome per item");
    let mut response = match outcome {
        Outcome::Accepted(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Outcome::Replayed(original) => {
            let mut r = (StatusCode::ACCEPTED, Json(original)).into_response();
            r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            r
        }
        Outcome::Refused(e) => return Err(e),
    };
    rate_limit_headers(response.headers_mut(), quota);
    Ok(response)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1,000 notifications; each may carry its own `idempotency_key`.
    #[schema(value_type = Vec<NewNotification>, min_items = 1, max_items = 1000)]
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

#[utoipa::path(post, path = "/v1/notifications/batch", operation_id = "createNotificationBatch", tag = "notifications",
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
        (status = 422, description = "No items, or more than 1,000, or an `Idempotency-Key` header", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's intake rate is exhausted", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/notifications/batch`: up to 1,000 notifications, each accepted or refused on
/// its own; the answer has one result per item, in order.
pub async fn batch(
    State(app): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    JsonItems(request): JsonItems<BatchRequest>,
) -> Result<Response, ApiError> {
    // A key names one notification (its answer is replayed): a whole batch has no such
    // answer, and taking the header silently would leave the batch unprotected.
    if headers.contains_key("idempotency-key") {
        return Err(ApiError::field(
            "Idempotency-Key",
            "is not taken by a batch: give each item its own `idempotency_key`",
        ));
    }
    let count = request.notifications.len();
    if count == 0 || count > MAX_BATCH {
        return Err(ApiError::field("notifications", format!("must hold 1 to {MAX_BATCH} notifications")));
    }
    let quota = app.limiter.take_for(&auth, app.default_rate, count as u32)?;
    let items = request.notifications.into_iter().map(|item| accept::parse(&app, item, None)).collect();
    let results = accept::accept(&app, &auth, items)
        .await?
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Accepted(a) => BatchItem {
                status: 202,
                replayed: false,
                notification: Some(serde_json::to_value(a).expect("serializes")),
                error: None,
            },
            Outcome::Replayed(original) => {
                BatchItem { status: 202, replayed: true, notification: Some(original), error: None }
            }
            Outcome::Refused(e) => {
                let (status, problem) = e.problem();
                BatchItem { status: status.as_u16(), replayed: false, notification: None, error: Some(problem) }
            }
        })
        .collect();
    let mut response = (StatusCode::OK, Json(BatchResponse { results })).into_response();
    rate_limit_headers(response.headers_mut(), quota);
    Ok(response)
}

#[utoipa::path(get, path = "/v1/notifications/{id}", operation_id = "getNotification", tag = "notifications",
    params(("id" = Uuid, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "The notification, its delivery counts by channel and status, its first 100 deliveries \
            (without rendered content) with their attempts, and its first 100 audit events; `deliveries_cursor` pages the rest \
            from `GET /v1/notifications/{id}/deliveries`", body = NotificationView),
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

#[utoipa::path(get, path = "/v1/notifications/{id}/deliveries", operation_id = "listNotificationDeliveries", tag = "notifications",
    params(
        ("id" = Uuid, Path, description = "The notification's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 100", example = 100),
        ("cursor" = Option<Uuid>, Query, description = "`next_cursor` of the previous page, or the notification's `deliveries_cursor`: the id of the last delivery it held"),
        ("include" = Option<String>, Query, pattern = "^content$", description = "`content`: each delivery's rendered content too (left out by default)", example = "content"),
    ),
    responses(
        (status = 200, description = "A page of the notification's deliveries by id, each with its attempts and audit events", body = DeliveryPage),
        (status = 404, description = "No such notification for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A query parameter is invalid or unknown", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/notifications/{id}/deliveries?limit=&cursor=&include=content`: by id.
pub async fn deliveries(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let id = parse_id(&id)?;
    let (mut limit, mut after, mut content) = (DEFAULT_DELIVERIES, None, false);
    for (name, value) in &params {
        match name.as_str() {
            "limit" => limit = super::page_limit(value, MAX_DELIVERIES)?,
            "cursor" => {
                after = Some(value.parse().map_err(|_| ApiError::field("cursor", "is not a cursor this API gave"))?)
            }
            "include" if value == "content" => content = true,
            "include" => return Err(ApiError::field("include", "the one value is `content`")),
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    let page = limit as usize;
    let Some(mut items) = app.store.list_deliveries(auth.0.tenant_id, id, after, page + 1, content).await? else {
        return Err(ApiError::NotFound);
    };
    let next_cursor = if items.len() > page {
        items.truncate(page);
        items.last().map(|last| last.id.to_string())
    } else {
        None
    };
    Ok(Json(DeliveryPage { items, next_cursor }))
}

#[utoipa::path(post, path = "/v1/notifications/{id}/cancel", operation_id = "cancelNotification", tag = "notifications",
    params(("id" = Uuid, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "Cancelled: the notification as it now is (bounded as `GET /v1/notifications/{id}` answers it)", body = NotificationView),
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

#[utoipa::path(get, path = "/v1/notifications", operation_id = "listNotifications", tag = "notifications",
    params(
        ("status" = Option<NotificationStatus>, Query, example = "pending"),
        ("type" = Option<String>, Query, example = "order.shipped"),
        ("correlation_id" = Option<String>, Query, example = "order-991"),
        ("severity" = Option<Severity>, Query, example = "high"),
        ("error_code" = Option<String>, Query, example = "VENDOR_NAME_MISSING"),
        ("error_class" = Option<String>, Query, example = "mapping"),
        ("created_after" = Option<String>, Query, format = DateTime, description = "RFC 3339, inclusive"),
        ("created_before" = Option<String>, Query, format = DateTime, description = "RFC 3339, exclusive"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "1 to 200, default 50", example = 20),
        ("cursor" = Option<String>, Query, pattern = "^[0-9a-fA-F]{48}$",
            description = "`next_cursor` of the previous page: a position (creation time and id of the last item it held), in hex"),
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
        match name.as_str() {
            "status" => {
                filter.status =
                    Some(NotificationStatus::parse(value).ok_or_else(|| ApiError::field("status", "unknown status"))?)
            }
            "type" => filter.kind = Some(value.clone()),
            "correlation_id" => filter.correlation_id = Some(value.clone()),
            "severity" => {
                filter.severity =
                    Some(Severity::parse(value).ok_or_else(|| ApiError::field("severity", "unknown severity"))?)
            }
            "error_code" => filter.error_code = Some(value.clone()),
            "error_class" => filter.error_class = Some(value.clone()),
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

/// 9999-12-31T23:59:59.999999Z, in microseconds since 1970.
const LAST_MICROS: i64 = 253_402_300_799_999_999;

fn decode_cursor(cursor: &str) -> Option<(OffsetDateTime, Uuid)> {
    let bytes = hex::decode(cursor).ok()?;
    let (micros, id) = bytes.split_at_checked(8)?;
    // Any time is a position; those before 1970 or after 9999 are the ends of the list.
    let micros = i64::from_be_bytes(micros.try_into().ok()?).clamp(0, LAST_MICROS);
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()?;
    Some((at, Uuid::from_slice(id).ok()?))
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
