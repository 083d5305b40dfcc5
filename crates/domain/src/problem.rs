//! The body of every error answer of the API, which its clients read back.

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// An RFC 9457 problem (`application/problem+json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `/problems/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable cause: `validation_failed`, `unauthorized`, `not_found`,
    /// `idempotency_key_reused`, `nothing_to_cancel`, `not_retryable`, `rate_limited`,
    /// `overloaded`, `timeout`, `invalid_signature`, ...
    pub code: String,
    /// For `validation_failed`: each rejected field, by its JSON path. Always present in
    /// the API's answers; read as empty when another server leaves it out.
    #[serde(default)]
    #[schema(required = true)]
    pub errors: Vec<FieldError>,
}
