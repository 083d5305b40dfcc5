//! `/v1/me/...`: what an end user manages of their own with their subscriber token (the
//! inbox is `inbox.rs`): their preferences, beside the tenant's types they apply to.

use axum::{Json, extract::State};
use domain::{Channel, subscriber::Preferences};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{AppState, error::ApiError, error::Problem, inbox::token::InboxCaller, json::JsonBody};

/// The caller's preferences and the tenant's types, for a settings page.
#[derive(Serialize, ToSchema)]
pub struct MyPreferences {
    preferences: Preferences,
    /// Every type of the tenant: a `critical` one is sent whatever the preferences say, so
    /// a page shows it without a switch.
    types: Vec<TypeChoice>,
}

/// A type as an end user chooses about it.
#[derive(Serialize, ToSchema)]
pub struct TypeChoice {
    key: String,
    category: Option<String>,
    channels: Vec<Channel>,
    critical: bool,
}

#[utoipa::path(get, path = "/v1/me/preferences", operation_id = "getMyPreferences", tag = "inbox",
    security(("subscriber_token" = [])),
    responses(
        (status = 200, description = "The caller's preferences (empty if never set) and the tenant's types", body = MyPreferences),
        (status = 401, description = "Missing, invalid or expired subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The subscriber's request rate (`admission.inbox_rate`) is exhausted: retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/me/preferences`.
pub async fn get_preferences(
    State(app): State<AppState>,
    InboxCaller(me): InboxCaller,
) -> Result<Json<MyPreferences>, ApiError> {
    // A valid token of an erased subscriber is refused when it is checked (`authorize`).
    let preferences = app.store.get_preferences(me.tenant_id, &me.subscriber_id).await?.unwrap_or_default();
    Ok(mine(preferences, app.store.list_types(me.tenant_id).await?))
}

#[utoipa::path(put, path = "/v1/me/preferences", operation_id = "putMyPreferences", tag = "inbox",
    security(("subscriber_token" = [])),
    request_body(content = Preferences, example = json!({"channels": {"sms": false},
        "categories": {"marketing": {"email": false}}, "quiet_hours": {"start": "22:00", "end": "07:00"}})),
    responses(
        (status = 200, description = "Replaced: the caller's preferences as stored, and the tenant's types", body = MyPreferences),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or expired subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The subscriber was erased meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid, or turns a critical type off; `errors` names it", body = Problem,
            content_type = "application/problem+json"),
        (status = 429, description = "The subscriber's request rate (`admission.inbox_rate`) is exhausted: retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json"),
    ))]
/// `PUT /v1/me/preferences`: replaces the caller's whole document. A critical type cannot
/// be turned off.
pub async fn put_preferences(
    State(app): State<AppState>,
    InboxCaller(me): InboxCaller,
    JsonBody(preferences): JsonBody<Preferences>,
) -> Result<Json<MyPreferences>, ApiError> {
    preferences.validate().map_err(ApiError::Validation)?;
    let types = app.store.list_types(me.tenant_id).await?;
    let refused: Vec<domain::FieldError> = preferences
        .types
        .iter()
        .filter(|(key, _)| types.iter().any(|t| t.critical && &t.key == *key))
        .flat_map(|(key, channels)| channels.iter().filter(|(_, on)| !**on).map(move |(channel, _)| (key, channel)))
        .map(|(key, channel)| {
            domain::FieldError::new(format!("types.{key}.{channel}"), "the type is critical: it cannot be turned off")
        })
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::Validation(refused));
    }
    if !app.store.put_preferences(me.tenant_id, &me.subscriber_id, &preferences).await? {
        return Err(ApiError::NotFound);
    }
    Ok(mine(preferences, types))
}

fn mine(preferences: Preferences, types: Vec<domain::notification_type::NotificationType>) -> Json<MyPreferences> {
    let types = types
        .into_iter()
        .map(|t| TypeChoice { key: t.key, category: t.category, channels: t.channels, critical: t.critical })
        .collect();
    Json(MyPreferences { preferences, types })
}
