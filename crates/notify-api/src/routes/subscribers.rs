//! `/v1/subscribers/{id}`: the tenant's subscribers by its own ids, their preferences, and
//! erasure.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use domain::subscriber::{Preferences, Subscriber, SubscriberInput, is_valid_subscriber_id};

use crate::{AppState, auth::Authenticated, error::ApiError, error::Problem, json::JsonBody};

#[utoipa::path(put, path = "/v1/subscribers/{id}", operation_id = "putSubscriber", tag = "subscribers",
    params(("id" = String, Path, description = "Your id for the subscriber: 1 to 200 characters, no `/`", example = "u-42")),
    request_body(content = SubscriberInput, example = json!({"email": "ada@example.com", "phone": "+15551234567",
        "chat": {"slack": "U024BE7LH"}, "locale": "de", "timezone": "Europe/Berlin", "data": {"first_name": "Ada"}})),
    responses(
        (status = 201, description = "Created", body = Subscriber),
        (status = 200, description = "Replaced (fields left out are cleared; preferences and topics stay)", body = Subscriber),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field or the id is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
    ))]
/// `PUT /v1/subscribers/{id}`: creates or replaces the subscriber.
pub async fn put(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<SubscriberInput>,
) -> Result<(StatusCode, Json<Subscriber>), ApiError> {
    if !is_valid_subscriber_id(&id) {
        return Err(ApiError::field("id", "must be 1 to 200 characters, without control characters or `/`"));
    }
    let (input, chat) = input.validate(app.chat_addresses.allow_private_hosts).map_err(ApiError::Validation)?;
    let chat = app.chat_addresses.seal(auth.0.tenant_id, &chat).map_err(ApiError::Validation)?;
    let (subscriber, created) = app.store.put_subscriber(auth.0.tenant_id, &id, &input, &chat).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(subscriber)))
}

#[utoipa::path(get, path = "/v1/subscribers/{id}", operation_id = "getSubscriber", tag = "subscribers",
    params(("id" = String, Path, description = "Your id for the subscriber", example = "u-42")),
    responses(
        (status = 200, description = "The subscriber", body = Subscriber),
        (status = 404, description = "No such subscriber for this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/subscribers/{id}`.
pub async fn get(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Subscriber>, ApiError> {
    app.store.get_subscriber(auth.0.tenant_id, &id).await?.map(Json).ok_or(ApiError::NotFound)
}

#[utoipa::path(delete, path = "/v1/subscribers/{id}", operation_id = "eraseSubscriber", tag = "subscribers",
    params(("id" = String, Path, description = "Your id for the subscriber", example = "u-42")),
    responses(
        (status = 204, description = "Erased: the subscriber, its preferences and topic memberships are deleted; \
            its deliveries keep their ids and statuses but lose recipient, content and error texts; \
            deliveries not yet sent are cancelled"),
        (status = 404, description = "No such subscriber for this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
/// `DELETE /v1/subscribers/{id}`: erases the subscriber and redacts it from history.
pub async fn erase(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app.store.erase_subscriber(auth.0.tenant_id, &id, auth.actor()).await? {
        return Err(ApiError::NotFound);
    }
    // Its open inbox sockets close: their tokens would not open them again.
    app.inbox_hub.erased(auth.0.tenant_id, &id);
    tracing::info!(tenant_id = %auth.0.tenant_id, "subscriber erased");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/subscribers/{id}/preferences", operation_id = "getPreferences", tag = "subscribers",
    params(("id" = String, Path, description = "Your id for the subscriber", example = "u-42")),
    responses(
        (status = 200, description = "The subscriber's preferences (empty if never set)", body = Preferences),
        (status = 404, description = "No such subscriber for this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/subscribers/{id}/preferences`.
pub async fn get_preferences(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Preferences>, ApiError> {
    app.store.get_preferences(auth.0.tenant_id, &id).await?.map(Json).ok_or(ApiError::NotFound)
}

#[utoipa::path(put, path = "/v1/subscribers/{id}/preferences", operation_id = "putPreferences", tag = "subscribers",
    params(("id" = String, Path, description = "Your id for the subscriber", example = "u-42")),
    request_body(content = Preferences, example = json!({"channels": {"sms": false},
        "types": {"invoice.overdue": {"sms": true}}, "categories": {"marketing": {"email": false}},
        "quiet_hours": {"start": "22:00", "end": "07:00"}})),
    responses(
        (status = 200, description = "Replaced: the preferences as stored", body = Preferences),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscriber for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
    ))]
/// `PUT /v1/subscribers/{id}/preferences`: replaces the whole document.
pub async fn put_preferences(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    JsonBody(preferences): JsonBody<Preferences>,
) -> Result<Json<Preferences>, ApiError> {
    preferences.validate().map_err(ApiError::Validation)?;
    if !app.store.put_preferences(auth.0.tenant_id, &id, &preferences).await? {
        return Err(ApiError::NotFound);
    }
    Ok(Json(preferences))
}
