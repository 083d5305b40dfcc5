//! Subscriber tokens a tenant mints itself, offline, with no call to the API: a JWT
//! (`alg` `EdDSA`) signed with the tenant's Ed25519 key, whose claims are `tid` (the
//! tenant's id), `sub` (the subscriber's id) and `exp` (at most 24 hours ahead), verified
//! with the public key the tenant registered (`PUT /v1/subscriber-token-key`). Any JWT
//! library mints one. It opens what an issued token opens, for as long as the subscriber
//! exists; the issued tokens (`inbox::token`) keep working beside it.

use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{AppState, config::MAX_TOKEN_TTL, error::ApiError};

/// Longer tokens are refused before any work (as issued ones are).
const MAX_TOKEN_LEN: usize = 2048;

#[derive(Deserialize)]
struct Claims {
    tid: Uuid,
    sub: String,
    exp: i64,
}

/// Whether `token` has a JWT's shape (a JSON header, base64url: `eyJ`), and is read as one.
pub fn is_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

/// The tenant, subscriber and expiry of a JWT the tenant it names signed with the key it
/// registered, unexpired and expiring at most 24 hours ahead.
pub async fn verify(state: &AppState, token: &str) -> Result<(Uuid, String, OffsetDateTime), ApiError> {
    let invalid = || ApiError::Unauthorized("the subscriber token is invalid or expired");
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid());
    }
    // Which tenant's key to verify with; nothing else is trusted before the signature is.
    let named: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| invalid())?;
    let key = state.store.subscriber_token_key(named.tid).await?.ok_or_else(invalid)?;
    let key = jsonwebtoken::DecodingKey::from_ed_components(&key).map_err(|_| invalid())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|_| invalid())?.claims;
    let now = OffsetDateTime::now_utc();
    let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| invalid())?;
    if expires_at > now + MAX_TOKEN_TTL {
        return Err(ApiError::Unauthorized("a subscriber token expires at most 24 hours after it is used"));
    }
    Ok((claims.tid, claims.sub, expires_at))
}

/// `x` of an Ed25519 public JWK: 32 bytes, base64url without padding.
pub fn is_ed25519_x(x: &str) -> bool {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.decode(x).is_ok_and(|key| key.len() == 32)
}
