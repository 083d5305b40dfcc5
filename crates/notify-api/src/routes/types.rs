//! `/v1/types`: notification types, a tenant's defaults for the notifications of a type.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use domain::notification_type::{NotificationType, NotificationTypeInput, is_valid_key};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{AppState, auth::Authenticated, error::ApiError, error::Problem, json::JsonBody};

#[utoipa::path(put, path = "/v1/types/{key}", operation_id = "putType", tag = "types",
    params(("key" = String, Path, description = "The type: 1 to 200 letters, digits and . _ - : / (`/` percent-encoded)",
        example = "invoice.overdue")),
    request_body(content = NotificationTypeInput, example = json!({"channels": ["email", "sms"], "category": "billing",
        "retry": {"max_attempts": 6, "initial_delay": "30s"}, "preferences": {"sms": false}})),
    responses(
        (status = 201, description = "Created", body = NotificationType),
        (status = 200, description = "Replaced (its templates stay)", body = NotificationType),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field or the key is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
    ))]
/// `PUT /v1/types/{key}`: creates or replaces the type.
pub async fn put(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(key): Path<String>,
    JsonBody(input): JsonBody<NotificationTypeInput>,
) -> Result<(StatusCode, Json<NotificationType>), ApiError> {
    if !is_valid_key(&key) {
        return Err(ApiError::field("key", "must be 1 to 200 letters, digits and . _ - : /"));
    }
    let input = input.validate().map_err(ApiError::Validation)?;
    let (stored, created) = app.store.put_type(auth.0.tenant_id, &key, &input).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(stored)))
}

#[utoipa::path(get, path = "/v1/types/{key}", operation_id = "getType", tag = "types",
    params(("key" = String, Path, description = "The type", example = "invoice.overdue")),
    responses(
        (status = 200, description = "The type", body = NotificationType),
        (status = 404, description = "No such type for this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/types/{key}`.
pub async fn get(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(key): Path<String>,
) -> Result<Json<NotificationType>, ApiError> {
    app.store.get_type(auth.0.tenant_id, &key).await?.map(Json).ok_or(ApiError::NotFound)
}

#[derive(Serialize, ToSchema)]
pub struct TypeList {
    /// Every type of the tenant, by key.
    items: Vec<NotificationType>,
}

#[utoipa::path(get, path = "/v1/types", operation_id = "listTypes", tag = "types",
    responses((status = 200, description = "Every type of the tenant, by key", body = TypeList)))]
/// `GET /v1/types`.
pub async fn list(State(app): State<AppState>, auth: Authenticated) -> Result<Json<TypeList>, ApiError> {
    Ok(Json(TypeList { items: app.store.list_types(auth.0.tenant_id).await? }))
}
