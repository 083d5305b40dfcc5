//! `/v1/classifications`: the tenant's table of error classes (`domain::classification`).

use axum::{Json, extract::State};
use domain::classification::Classifications;

use crate::{AppState, auth::Authenticated, error::ApiError, error::Problem, json::JsonBody};

#[utoipa::path(put, path = "/v1/classifications", operation_id = "putClassifications", tag = "classifications",
    request_body(content = Classifications, example = json!({"classes": {
        "validation": {"audience": "customer", "priority": "normal"},
        "mapping": {"audience": "customer"},
        "auth": {"audience": "support", "priority": "high"},
        "system": {"audience": "support", "priority": "urgent"}}})),
    responses(
        (status = 200, description = "Replaced: the table as it now is", body = Classifications),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A class or its classification is invalid; `errors` names it", body = Problem,
            content_type = "application/problem+json"),
    ))]
/// `PUT /v1/classifications`: replaces the tenant's whole table.
pub async fn put(
    State(app): State<AppState>,
    auth: Authenticated,
    JsonBody(table): JsonBody<Classifications>,
) -> Result<Json<Classifications>, ApiError> {
    table.validate().map_err(ApiError::Validation)?;
    app.store.put_classifications(auth.0.tenant_id, &table).await?;
    Ok(Json(table))
}

#[utoipa::path(get, path = "/v1/classifications", operation_id = "getClassifications", tag = "classifications",
    responses((status = 200, description = "The tenant's table (no classes when never set)", body = Classifications)))]
/// `GET /v1/classifications`.
pub async fn get(State(app): State<AppState>, auth: Authenticated) -> Result<Json<Classifications>, ApiError> {
    Ok(Json(app.store.classifications(auth.0.tenant_id).await?))
}
