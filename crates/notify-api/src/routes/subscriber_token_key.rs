//! `/v1/subscriber-token-key`: the public key that verifies the subscriber tokens a tenant
//! mints itself (`inbox::offline`).

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AppState, auth::Authenticated, error::ApiError, error::Problem, inbox::offline, json::JsonBody};

/// An Ed25519 public key as a JWK (RFC 8037).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicJwk {
    #[schema(pattern = "^OKP$")]
    kty: String,
    #[schema(pattern = "^Ed25519$")]
    crv: String,
    /// The public key: 32 bytes, base64url without padding.
    #[schema(pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
    x: String,
}

#[utoipa::path(put, path = "/v1/subscriber-token-key", operation_id = "putSubscriberTokenKey", tag = "subscribers",
    request_body(content = PublicJwk, example = json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})),
    responses(
        (status = 200, description = "Registered (replacing the one before): JWTs this key's private half signs \
            (`alg` `EdDSA`; claims `tid` your tenant id, `sub` the subscriber id, `exp` at most 24 hours ahead) \
            are subscriber tokens", body = PublicJwk),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an Ed25519 public JWK; `errors` names the field", body = Problem,
            content_type = "application/problem+json"),
    ))]
/// `PUT /v1/subscriber-token-key`.
pub async fn put(
    State(app): State<AppState>,
    auth: Authenticated,
    JsonBody(jwk): JsonBody<PublicJwk>,
) -> Result<Json<PublicJwk>, ApiError> {
    let mut errors = Vec::new();
    if jwk.kty != "OKP" {
        errors.push(domain::FieldError::new("kty", "must be `OKP`"));
    }
    if jwk.crv != "Ed25519" {
        errors.push(domain::FieldError::new("crv", "must be `Ed25519`"));
    }
    if !offline::is_ed25519_x(&jwk.x) {
        errors.push(domain::FieldError::new("x", "must be 32 bytes, base64url without padding"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    app.store.set_subscriber_token_key(auth.0.tenant_id, Some(&jwk.x)).await?;
    Ok(Json(jwk))
}

#[utoipa::path(get, path = "/v1/subscriber-token-key", operation_id = "getSubscriberTokenKey", tag = "subscribers",
    responses(
        (status = 200, description = "The registered key", body = PublicJwk),
        (status = 404, description = "None is registered", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/subscriber-token-key`.
pub async fn get(State(app): State<AppState>, auth: Authenticated) -> Result<Json<PublicJwk>, ApiError> {
    let x = app.store.subscriber_token_key(auth.0.tenant_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(PublicJwk { kty: "OKP".into(), crv: "Ed25519".into(), x }))
}

#[utoipa::path(delete, path = "/v1/subscriber-token-key", operation_id = "deleteSubscriberTokenKey", tag = "subscribers",
    responses((status = 204, description = "Removed: the tokens it signed are refused from now on")))]
/// `DELETE /v1/subscriber-token-key`.
pub async fn delete(State(app): State<AppState>, auth: Authenticated) -> Result<StatusCode, ApiError> {
    app.store.set_subscriber_token_key(auth.0.tenant_id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
