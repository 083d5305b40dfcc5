use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use domain::NewNotification;
use serde_json::json;
use store::{AcceptedNotification, NotificationView};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{AppState, auth::TenantId, error::ApiError, json::JsonBody};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/notifications", post(create_notification))
        .route("/v1/notifications/{id}", get(get_notification))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

async fn create_notification(
    State(app): State<AppState>,
    TenantId(tenant): TenantId,
    JsonBody(request): JsonBody<NewNotification>,
) -> Result<(StatusCode, Json<AcceptedNotification>), ApiError> {
    let valid = request.validate(app.limits, OffsetDateTime::now_utc()).map_err(ApiError::Validation)?;
    let accepted = app.store.accept_notification(tenant, &valid).await?;
    tracing::info!(tenant_id = %tenant, notification_id = %accepted.id, deliveries = accepted.deliveries.len(),
        scheduled = valid.send_at.is_some(), "accepted");
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

async fn get_notification(
    State(app): State<AppState>,
    TenantId(tenant): TenantId,
    Path(id): Path<String>,
) -> Result<Json<NotificationView>, ApiError> {
    // An id that is not a UUID names nothing: the same 404 as another tenant's id.
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    app.store.get_notification(tenant, id).await?.map(Json).ok_or(ApiError::NotFound)
}

/// Alive: the process answers.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready: the database answers. The API does not use the broker, so the broker's
/// health does not make it unready.
async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready", "database": "ok"}))),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unready", "database": "unreachable"})))
        }
    }
}
