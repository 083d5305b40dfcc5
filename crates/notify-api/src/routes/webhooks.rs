//! `/v1/webhooks`: a tenant's endpoints for outbound event webhooks (docs/webhooks.md).
//! Each has a URL, the event types and notification types it takes, and a signing secret
//! (`whsec_…`) generated here, shown when the endpoint is created and when it is rotated,
//! and stored sealed with the API's keyring like integration secrets. A rotated secret
//! keeps signing beside the new one for [`ROTATION_OVERLAP`].

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use bootstrap::seal::Keyring;
use domain::{
    FieldError,
    webhook::{self, UrlRules, WebhookSecret},
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use store::{NewWebhookEndpoint, WebhookEndpoint, WebhookEndpointChange, webhooks::ENDPOINTS_MAX};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::Authenticated,
    error::{ApiError, Problem},
    json::{self, JsonBody},
};

/// How long a replaced secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// The webhooks' settings (`webhooks.*`), which the webhook-worker reads too.
pub use providers::webhook_endpoint::WebhookSettings;

/// `POST /v1/webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Where events are posted: `https://` (`http://` only where the operator allows it).
    url: String,
    /// Event types to receive, or `["*"]` for all (the default).
    #[serde(default = "all_events")]
    events: Vec<String>,
    /// Notification types to receive events of; all when left out.
    #[serde(default)]
    types: Option<Vec<String>>,
    #[serde(default)]
    description: String,
    /// Whether events are sent to it.
    #[serde(default = "yes")]
    enabled: bool,
    /// Whether events carry the recipient's address (email, phone, device or chat address).
    #[serde(default)]
    include_addresses: bool,
}

fn all_events() -> Vec<String> {
    vec![webhook::ALL_EVENTS.to_owned()]
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/webhooks/{id}`: what is given changes, the rest stays.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    /// `null` takes every notification type again.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    types: Option<Option<Vec<String>>>,
    #[serde(default)]
    description: Option<String>,
    /// `true` also clears why it was disabled; events of the time it was disabled are
    /// sent only by a replay.
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    include_addresses: Option<bool>,
}

/// A field that is present, `null` or not: `Some(None)` for `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An endpoint as the API shows it. `secret` only in the answer that made it.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    id: Uuid,
    url: String,
    description: String,
    events: Vec<String>,
    types: Option<Vec<String>>,
    enabled: bool,
    /// Why it is disabled when it was not the tenant: `gone` (it answered 410) or
    /// `failing` (every attempt failed for too long).
    disabled_reason: Option<String>,
    include_addresses: bool,
    /// The signing secret: in the answers of the create and of a rotation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// Until when the secret before the last rotation signs beside the current one.
    #[serde(with = "time::serde::rfc3339::option")]
    previous_secret_until: Option<OffsetDateTime>,
    /// Since when every attempt has failed.
    #[serde(with = "time::serde::rfc3339::option")]
    failing_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

fn view(e: WebhookEndpoint, secret: Option<&WebhookSecret>) -> WebhookView {
    let rotating = e.previous_until.filter(|until| *until > OffsetDateTime::now_utc());
    WebhookView {
        id: e.id,
        url: e.url,
        description: e.description,
        events: e.events,
        types: e.types,
        enabled: e.enabled,
        disabled_reason: e.disabled_reason,
        include_addresses: e.include_addresses,
        secret: secret.map(|s| s.expose().to_owned()),
        previous_secret_until: rotating,
        failing_since: e.failing_since,
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

fn keyring(app: &AppState) -> Result<&Keyring, ApiError> {
    app.integrations.keyring()
}

fn seal(keyring: &Keyring, tenant: Uuid, endpoint: Uuid, secret: &WebhookSecret) -> String {
    keyring.seal(&tenant, &store::webhooks::purpose(endpoint), secret.expose().as_bytes())
}

/// The given URL, events, types and description, checked; every error at once.
fn check(
    rules: &UrlRules,
    url: Option<&str>,
    events: Option<&[String]>,
    types: Option<&[String]>,
    description: Option<&str>,
) -> Result<(), ApiError> {
    let errors: Vec<FieldError> = [
        url.map(|u| webhook::validate_url(u, rules).map(|_| ())),
        events.map(webhook::validate_events),
        types.map(webhook::validate_types),
        description.map(webhook::validate_description),
    ]
    .into_iter()
    .flatten()
    .filter_map(Result::err)
    .collect();
    if errors.is_empty() { Ok(()) } else { Err(ApiError::Validation(errors)) }
}

#[utoipa::path(post, path = "/v1/webhooks", operation_id = "createWebhook", tag = "webhooks",
    request_body(content = WebhookInput, description = "The endpoint; its signing secret is generated and shown in the answer",
        example = json!({"url": "https://hooks.example.com/notify", "events": ["delivery.sent", "delivery.failed", "notification.completed"], "description": "order service"})),
    responses(
        (status = 201, description = "Created; `secret` is shown this once (and after each rotation)", body = WebhookView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`secrets_not_configured`: the deployment has no key to seal the secret with; `too_many_endpoints`: the tenant has 50", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `errors` names it (`url`, `events[1]`)", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/webhooks`: adds an endpoint.
pub async fn create(
    State(app): State<AppState>,
    auth: Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    let tenant = auth.0.tenant_id;
    let input: WebhookInput = json::from_value(body)?;
    check(
        &app.webhooks.url_rules(),
        Some(&input.url),
        Some(&input.events),
        input.types.as_deref(),
        Some(&input.description),
    )?;
    let keyring = keyring(&app)?;
    let (id, secret) = (Uuid::new_v4(), WebhookSecret::generate());
    let sealed = seal(keyring, tenant, id, &secret);
    let new = NewWebhookEndpoint {
        id,
        url: &input.url,
        description: &input.description,
        events: &input.events,
        types: input.types.as_deref(),
        enabled: input.enabled,
        include_addresses: input.include_addresses,
        sealed_secret: &sealed,
    };
    let created = app.store.create_webhook_endpoint(tenant, &new).await?.ok_or_else(|| ApiError::Conflict {
        code: "too_many_endpoints",
        detail: format!("a tenant has at most {ENDPOINTS_MAX} webhook endpoints; delete one first"),
    })?;
    tracing::info!(tenant_id = %tenant, endpoint_id = %id, "webhook endpoint created");
    Ok((StatusCode::CREATED, Json(view(created, Some(&secret)))))
}

#[utoipa::path(get, path = "/v1/webhooks", operation_id = "listWebhooks", tag = "webhooks",
    responses((status = 200, description = "The tenant's endpoints, oldest first; never a secret", body = [WebhookView])))]
/// `GET /v1/webhooks`.
pub async fn list(State(app): State<AppState>, auth: Authenticated) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let endpoints = app.store.list_webhook_endpoints(auth.0.tenant_id).await?;
    Ok(Json(endpoints.into_iter().map(|e| view(e, None)).collect()))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", operation_id = "getWebhook", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint; never its secret", body = WebhookView),
        (status = 404, description = "The tenant has no such endpoint", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/webhooks/{id}`.
pub async fn get(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = super::parse_id(&id)?;
    let endpoint = app.store.get_webhook_endpoint(auth.0.tenant_id, id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(view(endpoint, None)))
}

#[utoipa::path(patch, path = "/v1/webhooks/{id}", operation_id = "updateWebhook", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    request_body(content = WebhookPatch, description = "The fields to change",
        example = json!({"enabled": true, "events": ["*"]})),
    responses(
        (status = 200, description = "Changed", body = WebhookView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The tenant has no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
    ))]
/// `PATCH /v1/webhooks/{id}`.
pub async fn patch(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = super::parse_id(&id)?;
    let patch: WebhookPatch = json::from_value(body)?;
    let types = patch.types.as_ref().map(Option::as_deref);
    check(
        &app.webhooks.url_rules(),
        patch.url.as_deref(),
        patch.events.as_deref(),
        types.flatten(),
        patch.description.as_deref(),
    )?;
    let change = WebhookEndpointChange {
        url: patch.url.as_deref(),
        description: patch.description.as_deref(),
        events: patch.events.as_deref(),
        types,
        enabled: patch.enabled,
        include_addresses: patch.include_addresses,
    };
    let changed = app.store.update_webhook_endpoint(auth.0.tenant_id, id, &change).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(view(changed, None)))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "deleteWebhook", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Deleted, with its messages and attempts; nothing more is sent to it"),
        (status = 404, description = "The tenant has no such endpoint", body = Problem, content_type = "application/problem+json"),
    ))]
/// `DELETE /v1/webhooks/{id}`.
pub async fn delete(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = super::parse_id(&id)?;
    if app.store.delete_webhook_endpoint(auth.0.tenant_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", operation_id = "rotateWebhookSecret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The new secret, shown this once; the one it replaces signs beside it for 24 hours (`previous_secret_until`)", body = WebhookView),
        (status = 404, description = "The tenant has no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`secrets_not_configured`: the deployment has no key to seal the secret with", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/webhooks/{id}/rotate-secret`.
pub async fn rotate_secret(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    let tenant = auth.0.tenant_id;
    let id = super::parse_id(&id)?;
    let keyring = keyring(&app)?;
    let secret = WebhookSecret::generate();
    let sealed = seal(keyring, tenant, id, &secret);
    let rotated =
        app.store.rotate_webhook_secret(tenant, id, &sealed, ROTATION_OVERLAP).await?.ok_or(ApiError::NotFound)?;
    tracing::info!(tenant_id = %tenant, endpoint_id = %id, "webhook secret rotated");
    Ok(Json(view(rotated, Some(&secret))))
}

/// Attempts per page at most, and by default.
const ATTEMPTS_PAGE_MAX: i64 = 100;
const ATTEMPTS_PAGE: i64 = 20;

/// One attempt to send an event to the endpoint.
#[derive(Serialize, ToSchema)]
pub struct WebhookAttemptView {
    id: i64,
    /// The event's message to this endpoint; a replay sends an event in a new message.
    message_id: Uuid,
    event_id: Uuid,
    /// `webhook-id` of the request: the same on every attempt and replay of the event.
    webhook_id: String,
    event_type: String,
    /// The message's attempt, from 1.
    attempt: i32,
    /// The endpoint's status code; absent when it did not answer.
    status_code: Option<i32>,
    /// `sent` (a 2xx), `retryable` (another status, no answer or a timeout), `gone` (a
    /// 410: the endpoint was disabled) or `refused` (its host is an internal address).
    outcome: String,
    error: Option<String>,
    /// The start of the answer's body.
    response_excerpt: Option<String>,
    latency_ms: i32,
    /// When the message is tried again, if this attempt failed and one is left.
    #[serde(with = "time::serde::rfc3339::option")]
    next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    finished_at: OffsetDateTime,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookAttemptPage {
    /// Newest first.
    attempts: Vec<WebhookAttemptView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/attempts", operation_id = "listWebhookAttempts", tag = "webhooks",
    params(
        ("id" = Uuid, Path, description = "The endpoint's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20", example = 20),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{1,18}$", description = "`next_cursor` of the previous page: the number of the last attempt it held"),
    ),
    responses(
        (status = 200, description = "A page of the endpoint's attempts, newest first", body = WebhookAttemptPage),
        (status = 404, description = "The tenant has no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A query parameter is invalid or unknown", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/webhooks/{id}/attempts?limit=&cursor=`.
pub async fn attempts(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    axum::extract::Query(params): axum::extract::Query<Vec<(String, String)>>,
) -> Result<Json<WebhookAttemptPage>, ApiError> {
    let tenant = auth.0.tenant_id;
    let id = super::parse_id(&id)?;
    let (mut limit, mut before) = (ATTEMPTS_PAGE, None);
    for (name, value) in &params {
        match name.as_str() {
            "limit" => limit = super::page_limit(value, ATTEMPTS_PAGE_MAX)?,
            "cursor" => {
                before = Some(value.parse().map_err(|_| ApiError::field("cursor", "is not a cursor this API gave"))?)
            }
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    app.store.get_webhook_endpoint(tenant, id).await?.ok_or(ApiError::NotFound)?;
    let mut rows = app.store.webhook_attempts(tenant, id, before, limit + 1).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|last| last.id.to_string())
    } else {
        None
    };
    let attempts = rows
        .into_iter()
        .map(|a| WebhookAttemptView {
            id: a.id,
            message_id: a.message_id,
            event_id: a.event_id,
            webhook_id: webhook::message_id(a.event_id),
            event_type: a.event_type,
            attempt: a.number,
            status_code: a.status_code,
            outcome: a.outcome,
            error: a.error,
            response_excerpt: a.response_excerpt,
            latency_ms: a.latency_ms,
            next_attempt_at: a.next_attempt_at,
            started_at: a.started_at,
            finished_at: a.finished_at,
        })
        .collect();
    Ok(Json(WebhookAttemptPage { attempts, next_cursor }))
}

/// An enabled endpoint of the tenant, or why not: 404, or 409 `endpoint_disabled`.
async fn enabled_endpoint(app: &AppState, tenant: Uuid, id: Uuid) -> Result<WebhookEndpoint, ApiError> {
    let endpoint = app.store.get_webhook_endpoint(tenant, id).await?.ok_or(ApiError::NotFound)?;
    if !endpoint.enabled {
        return Err(ApiError::Conflict {
            code: "endpoint_disabled",
            detail: "the endpoint is disabled: enable it with PATCH {\"enabled\": true} first".into(),
        });
    }
    Ok(endpoint)
}

#[derive(Serialize, ToSchema)]
pub struct TestSent {
    /// The `webhook.test` event written for the endpoint.
    event_id: Uuid,
    /// Its `webhook-id`.
    webhook_id: String,
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/test", operation_id = "testWebhook", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 202, description = "A `webhook.test` event is on its way to the endpoint, whatever its filters; its attempts show how it went", body = TestSent),
        (status = 404, description = "The tenant has no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`endpoint_disabled`: enable the endpoint first", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/webhooks/{id}/test`.
pub async fn test(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    let tenant = auth.0.tenant_id;
    let id = super::parse_id(&id)?;
    enabled_endpoint(&app, tenant, id).await?;
    // Disabled (or deleted) in between: as if it had been before.
    let event_id = app.store.send_webhook_test(tenant, id).await?.ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(TestSent { event_id, webhook_id: webhook::message_id(event_id) })))
}

/// The window of a replay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    /// The window's start: within the last 14 days (events are kept that long).
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
    /// The window's end (excluded); now when left out.
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<OffsetDateTime>,
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// Events of the window that the endpoint's filters take, each on its way again.
    replayed: i64,
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", operation_id = "replayWebhookEvents", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    request_body(content = ReplayInput,
        example = json!({"since": "2026-12-07T00:00:00Z", "until": "2026-12-07T12:00:00Z"})),
    responses(
        (status = 202, description = "The window's events that the endpoint takes are sent again, with their own `webhook-id`s (a receiver that has one can tell)", body = Replayed),
        (status = 404, description = "The tenant has no such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`endpoint_disabled`: enable the endpoint first", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`since` older than 14 days, or `until` not after it", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/webhooks/{id}/replay`.
pub async fn replay(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    let tenant = auth.0.tenant_id;
    let id = super::parse_id(&id)?;
    let input: ReplayInput = json::from_value(body)?;
    let now = OffsetDateTime::now_utc();
    if input.since < now - store::webhooks::EVENT_RETENTION {
        return Err(ApiError::field("since", "must be within the last 14 days: events are kept that long"));
    }
    let until = input.until.unwrap_or(now);
    if until <= input.since {
        return Err(ApiError::field("until", "must be after since"));
    }
    enabled_endpoint(&app, tenant, id).await?;
    let replayed = app.store.replay_webhook_events(tenant, id, input.since, until).await?.ok_or(ApiError::NotFound)?;
    tracing::info!(tenant_id = %tenant, endpoint_id = %id, replayed, "webhook events replayed");
    Ok((StatusCode::ACCEPTED, Json(Replayed { replayed })))
}
