//! `/v1/subscribers/{id}/devices`: a subscriber's push devices (docs/contract.md §3.4),
//! registered by the tenant's backend with its API key or by the subscriber's own app
//! with its subscriber token (`POST /v1/subscribers/{id}/token`), which opens that
//! subscriber's devices and no other's.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
};
use domain::push::{Device, DeviceInput, is_valid_device_id};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::Authenticated,
    error::{ApiError, Problem},
    inbox::token::{SubscriberClaims, authorize, is_subscriber_token},
    json::JsonBody,
};

/// Who calls a device endpoint: the tenant (API key) or one subscriber (its token).
pub enum DeviceCaller {
    Tenant(Authenticated),
    Subscriber(SubscriberClaims),
}

impl FromRequestParts<AppState> for DeviceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        match bearer {
            Some(token) if is_subscriber_token(token) => authorize(state, token).await.map(DeviceCaller::Subscriber),
            _ => Authenticated::from_request_parts(parts, state).await.map(DeviceCaller::Tenant),
        }
    }
}

impl DeviceCaller {
    /// The tenant and the actor of audit events, if this caller may use `subscriber_id`'s
    /// devices: the tenant always, a subscriber only its own (else `403`).
    fn open(&self, subscriber_id: &str) -> Result<(Uuid, String), ApiError> {
        match self {
            DeviceCaller::Tenant(auth) => Ok((auth.0.tenant_id, auth.actor().to_owned())),
            DeviceCaller::Subscriber(me) if me.subscriber_id == subscriber_id => {
                Ok((me.tenant_id, format!("subscriber:{}", me.subscriber_id)))
            }
            DeviceCaller::Subscriber(_) => {
                Err(ApiError::Forbidden("a subscriber token opens only its own subscriber's devices"))
            }
        }
    }
}

/// The subscriber's devices.
#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    /// Most recently registered or updated first.
    devices: Vec<Device>,
}

fn check_device_id(device_id: &str) -> Result<(), ApiError> {
    if is_valid_device_id(device_id) {
        Ok(())
    } else {
        Err(ApiError::field("device_id", "must be 1 to 200 characters, without control characters or `/`"))
    }
}

#[utoipa::path(put, path = "/v1/subscribers/{id}/devices/{device_id}", operation_id = "putDevice", tag = "devices",
    security(("api_key" = []), ("subscriber_token" = [])),
    params(
        ("id" = String, Path, description = "Your id for the subscriber", example = "u-42"),
        ("device_id" = String, Path, description = "The app's id for the device: 1 to 200 characters, no `/`; \
            a push delivery's recipient", example = "iphone-7f3a"),
    ),
    request_body(content = DeviceInput, example = json!({"platform": "apns",
        "token": "7c9e2f0a1b3d5e7f9a1c3e5f7a9b1d3f5e7a9c1e3f5a7b9d1f3e5a7c9b1d3f5e",
        "app": "com.example.app", "locale": "de", "timezone": "Europe/Berlin"})),
    responses(
        (status = 201, description = "Registered", body = Device),
        (status = 200, description = "Replaced (fields left out are cleared)", body = Device),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key or subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A subscriber token of another subscriber", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscriber for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The token does not have its platform's shape, or another field is invalid; \
            `errors` names it (`token`, `token.endpoint`, `token.keys.p256dh`, ...)", body = Problem, content_type = "application/problem+json"),
    ))]
/// `PUT /v1/subscribers/{id}/devices/{device_id}`: registers or replaces the device. Its
/// token leaves any other device that had it (of any subscriber); past
/// `limits.max_devices_per_subscriber` the subscriber's device updated least recently is
/// removed.
pub async fn put(
    State(app): State<AppState>,
    caller: DeviceCaller,
    Path((id, device_id)): Path<(String, String)>,
    JsonBody(input): JsonBody<DeviceInput>,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    let (tenant_id, actor) = caller.open(&id)?;
    check_device_id(&device_id)?;
    let device = input.validate(app.limits.allow_private_hosts).map_err(ApiError::Validation)?;
    let (device, created) = app
        .store
        .register_device(tenant_id, &id, &device_id, &device, app.max_devices_per_subscriber, &actor)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::debug!(%tenant_id, platform = device.platform.as_str(), created, "device registered");
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(device)))
}

#[utoipa::path(get, path = "/v1/subscribers/{id}/devices", operation_id = "listDevices", tag = "devices",
    security(("api_key" = []), ("subscriber_token" = [])),
    params(("id" = String, Path, description = "Your id for the subscriber", example = "u-42")),
    responses(
        (status = 200, description = "The subscriber's devices (tokens are not returned, only a hint)", body = DeviceList),
        (status = 401, description = "Missing or invalid API key or subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A subscriber token of another subscriber", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscriber for this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/subscribers/{id}/devices`.
pub async fn list(
    State(app): State<AppState>,
    caller: DeviceCaller,
    Path(id): Path<String>,
) -> Result<Json<DeviceList>, ApiError> {
    let (tenant_id, _) = caller.open(&id)?;
    let devices = app.store.list_devices(tenant_id, &id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(DeviceList { devices }))
}

#[utoipa::path(get, path = "/v1/subscribers/{id}/devices/{device_id}", operation_id = "getDevice", tag = "devices",
    security(("api_key" = []), ("subscriber_token" = [])),
    params(
        ("id" = String, Path, description = "Your id for the subscriber", example = "u-42"),
        ("device_id" = String, Path, description = "The app's id for the device", example = "iphone-7f3a"),
    ),
    responses(
        (status = 200, description = "The device (its token is not returned, only a hint)", body = Device),
        (status = 401, description = "Missing or invalid API key or subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A subscriber token of another subscriber", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscriber or device", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/subscribers/{id}/devices/{device_id}`.
pub async fn get(
    State(app): State<AppState>,
    caller: DeviceCaller,
    Path((id, device_id)): Path<(String, String)>,
) -> Result<Json<Device>, ApiError> {
    let (tenant_id, _) = caller.open(&id)?;
    app.store.get_device(tenant_id, &id, &device_id).await?.map(Json).ok_or(ApiError::NotFound)
}

#[utoipa::path(delete, path = "/v1/subscribers/{id}/devices/{device_id}", operation_id = "deleteDevice", tag = "devices",
    security(("api_key" = []), ("subscriber_token" = [])),
    params(
        ("id" = String, Path, description = "Your id for the subscriber", example = "u-42"),
        ("device_id" = String, Path, description = "The app's id for the device", example = "iphone-7f3a"),
    ),
    responses(
        (status = 204, description = "Removed (audited); its deliveries not yet sent fail with `device_removed`"),
        (status = 401, description = "Missing or invalid API key or subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A subscriber token of another subscriber", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscriber or device", body = Problem, content_type = "application/problem+json"),
    ))]
/// `DELETE /v1/subscribers/{id}/devices/{device_id}`.
pub async fn delete(
    State(app): State<AppState>,
    caller: DeviceCaller,
    Path((id, device_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (tenant_id, actor) = caller.open(&id)?;
    if !app.store.delete_device(tenant_id, &id, &device_id, &actor).await? {
        return Err(ApiError::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}
