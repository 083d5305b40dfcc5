//! Subscriber tokens a tenant mints itself, offline, with no call to the API: a JWT
//! (`alg` `EdDSA`) signed with the tenant's Ed25519 key, whose claims are `tid` (the
//! tenant's id), `sub` (the subscriber's id), `iat` and `exp` (at most 24 hours after
//! `iat`), verified with the public key the tenant registered
//! (`PUT /v1/subscriber-token-key`). Any JWT library mints one; an `aud` is ignored. It
//! opens what an issued token opens until it expires, while the subscriber exists; the
//! issued tokens (`inbox::token`) keep working beside it.

use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::token::MAX_TOKEN_LEN;
use crate::{AppState, config::MAX_TOKEN_TTL, error::ApiError};

/// How far ahead of this API's clock a token's `iat` may be (the minting host's clock).
const CLOCK_SKEW: time::Duration = time::Duration::minutes(1);

#[derive(Deserialize)]
struct Claims {
    tid: Uuid,
    sub: String,
    iat: i64,
    exp: i64,
}

/// Whether `token` has a JWT's shape (a JSON header, base64url: `eyJ`), and is read as one.
pub(crate) fn is_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

/// The tenant, subscriber and expiry of a JWT the tenant it names signed with the key it
/// registered, issued (not in the future) for at most 24 hours, and not expired.
pub async fn verify(state: &AppState, token: &str) -> Result<(Uuid, String, OffsetDateTime), ApiError> {
    let invalid = || ApiError::Unauthorized("the subscriber token is invalid or expired");
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid());
    }
    // Which tenant's key to verify with; nothing else is trusted before the signature is.
    let named: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| invalid())?;
    let key = state.store.subscriber_token_key(named.tid).await?.ok_or_else(invalid)?;
    let key = jsonwebtoken::DecodingKey::from_ed_components(&key).map_err(|_| invalid())?;
    // Only EdDSA, with the tenant's key; the times are checked below, as issued tokens'.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|_| invalid())?.claims;
    let now = OffsetDateTime::now_utc();
    let issued_at = OffsetDateTime::from_unix_timestamp(claims.iat).map_err(|_| invalid())?;
    let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| invalid())?;
    if issued_at > now + CLOCK_SKEW || expires_at - issued_at > MAX_TOKEN_TTL {
        return Err(ApiError::Unauthorized("a subscriber token is issued (`iat`) for at most 24 hours (`exp`)"));
    }
    if now >= expires_at {
        return Err(invalid());
    }
    Ok((claims.tid, claims.sub, expires_at))
}

/// `x` of an Ed25519 public JWK: 32 bytes, base64url without padding.
pub fn is_ed25519_x(x: &str) -> bool {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.decode(x).is_ok_and(|key| key.len() == 32)
}
