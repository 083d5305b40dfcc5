use axum::{extract::FromRequestParts, http::request::Parts};
use store::Caller;

use crate::{AppState, error::ApiError};

/// The caller behind the request's API key (`Authorization: Bearer <key>`).
pub struct Authenticated(pub Caller);

impl Authenticated {
    /// How audit events name this caller.
    pub fn actor(&self) -> String {
        format!("api_key:{}", self.0.key_id)
    }
}

impl FromRequestParts<AppState> for Authenticated {
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
            Some(caller) => Ok(Authenticated(caller)),
            None => Err(ApiError::Unauthorized("the API key is unknown or revoked")),
        }
    }
}
