use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::AppState;

#[utoipa::path(get, path = "/healthz", operation_id = "getHealth", tag = "operations", security(),
    responses((status = 200, description = "The process answers")))]
/// Alive: the process answers.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", operation_id = "getReadiness", tag = "operations", security(),
    responses((status = 200, description = "The database answers"), (status = 503, description = "The database is unreachable")))]
/// Ready: the database answers. The API uses the broker only for the inbox push between
/// replicas, which is best effort (it reconnects on its own, and meanwhile a replica's own
/// changes still reach its own sockets): the broker's health does not make it unready.
/// Nor does the cache's: `cache` says whether it serves (`listening`) or every request
/// reads the database until its LISTEN connection is back (`reading_through`).
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let cache = cache_state(&app.store);
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready", "database": "ok", "cache": cache}))),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unready", "database": "unreachable", "cache": cache})),
            )
        }
    }
}

pub fn cache_state(store: &store::Store) -> &'static str {
    if store.cache_listening() { "listening" } else { "reading_through" }
}
