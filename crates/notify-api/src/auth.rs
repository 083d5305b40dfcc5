use axum::{extract::FromRequestParts, http::request::Parts};
use uuid::Uuid;

use crate::{AppState, error::ApiError};

/// The tenant of the request's API key (`Authorization: Bearer <key>`).
pub struct TenantId(pub Uuid);

impl FromRequestParts<AppState> for TenantId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("send an API key as `Authorization: Bearer <key>`"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized("the Authorization header must be `Bearer <key>`"))?;
        match state.store.authenticate(key).await? {
            Some(tenant) => Ok(TenantId(tenant)),
            None => Err(ApiError::Unauthorized("the API key is unknown or revoked")),
        }
    }
}
