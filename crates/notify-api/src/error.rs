//! Every error answer is RFC 9457 `application/problem+json`:
//! `{type, title, status, detail, code, errors: [{field, message}]}`. Internal causes are
//! logged, never returned.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use domain::FieldError;

use crate::rate_limit::Quota;

pub use domain::problem::Problem;

#[derive(Clone, Debug)]
pub enum ApiError {
    MalformedJson(String),
    Validation(Vec<FieldError>),
    UnsupportedMediaType,
    PayloadTooLarge,
    Unauthorized(&'static str),
    /// A valid credential that does not open this resource (another subscriber's token).
    Forbidden(&'static str),
    /// A provider's request without a valid signature, or from a source not allowed.
    InvalidSignature(&'static str),
    NotFound,
    MethodNotAllowed,
    /// The request conflicts with the resource's state: `code` says how.
    Conflict {
        code: &'static str,
        detail: String,
    },
    RateLimited {
        quota: Quota,
        retry_after: u64,
    },
    /// The database is unreachable: worth retrying soon.
    Unavailable(String),
    /// A server we need to check a provider's request (its signing certificate) could not
    /// be reached: the provider should send it again.
    UpstreamUnavailable(String),
    Internal(String),
    /// Past an admission limit of this replica (requests in flight, key lookups): retry
    /// shortly.
    Overloaded(&'static str),
    /// The request took longer than `admission.request_timeout`.
    TimedOut(std::time::Duration),
    /// The subscriber's request rate on the inbox is exhausted.
    SubscriberRateLimited {
        quota: Quota,
        retry_after: u64,
    },
    /// The tenant's rate of integration checks is exhausted.
    CheckRateLimited {
        quota: Quota,
        retry_after: u64,
    },
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        use ApiError::*;
        match self {
            MalformedJson(why) => (StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON", why.clone()),
            Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Validation failed",
                errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                format!("the body may be at most {} KiB", crate::MAX_BODY_BYTES / 1024),
            ),
            Unauthorized(why) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", (*why).into()),
            Forbidden(why) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden", (*why).into()),
            InvalidSignature(why) => (StatusCode::FORBIDDEN, "invalid_signature", "Invalid signature", (*why).into()),
            NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found", "no such resource".into()),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "this resource does not accept that method".into(),
            ),
            Conflict { code, detail } => (StatusCode::CONFLICT, code, "Conflict", detail.clone()),
            RateLimited { retry_after, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
                format!("the tenant's intake rate is exhausted; retry in {retry_after} s"),
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "the database is unreachable; retry shortly".into(),
            ),
            UpstreamUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "Upstream unavailable",
                "what proves the request's signature could not be fetched; send it again later".into(),
            ),
            Overloaded(why) => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded", format!("{why}; retry shortly"))
            }
            TimedOut(limit) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Timed out",
                format!(
                    "the request took longer than {} ms and was abandoned; retry (an accept with its \
                     Idempotency-Key, which answers it if it was accepted)",
                    limit.as_millis()
                ),
            ),
            SubscriberRateLimited { retry_after, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
                format!("the subscriber's inbox request rate is exhausted; retry in {retry_after} s"),
            ),
            CheckRateLimited { retry_after, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
                format!("the tenant's rate of integration checks is exhausted; retry in {retry_after} s"),
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "something went wrong on our side; it has been logged".into(),
            ),
        }
    }

    /// The status and problem body, also used for the items of a batch answer.
    pub fn problem(&self) -> (StatusCode, Problem) {
        match self {
            ApiError::Internal(cause) => tracing::error!(cause, "request failed"),
            ApiError::Unavailable(cause) => tracing::warn!(cause, "database unavailable"),
            ApiError::UpstreamUnavailable(cause) => tracing::warn!(cause, "provider request not checked"),
            ApiError::InvalidSignature(why) => tracing::info!(why, "provider request refused"),
            ApiError::Overloaded(why) => tracing::info!(why, "request refused: overloaded"),
            ApiError::TimedOut(_) => tracing::warn!("request timed out"),
            _ => {}
        }
        let (status, code, title, detail) = self.parts();
        let errors = match self {
            ApiError::Validation(errors) => errors.clone(),
            _ => vec![],
        };
        let problem = Problem {
            kind: format!("/problems/{code}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            code: code.into(),
            errors,
        };
        (status, problem)
    }
}

/// `RateLimit-*` headers (IETF httpapi draft): the bucket's size, what is left, and
/// seconds until it is full.
pub fn rate_limit_headers(headers: &mut HeaderMap, quota: Quota) {
    headers.insert("ratelimit-limit", HeaderValue::from(quota.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(quota.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(quota.reset));
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.problem();
        let mut response = (status, serde_json::to_vec(&body).expect("a problem serializes")).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable(_) | ApiError::Overloaded(_) | ApiError::TimedOut(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RateLimited { quota, retry_after }
            | ApiError::SubscriberRateLimited { quota, retry_after }
            | ApiError::CheckRateLimited { quota, retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                rate_limit_headers(headers, quota);
            }
            _ => {}
        }
        response
    }
}

impl From<crate::receipts::Refusal> for ApiError {
    fn from(refusal: crate::receipts::Refusal) -> Self {
        match refusal {
            crate::receipts::Refusal::Signature(why) => ApiError::InvalidSignature(why),
            crate::receipts::Refusal::Unreachable(cause) => ApiError::UpstreamUnavailable(cause),
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        // Transient: the database is unreachable or restarting, the pool exhausted, a race
        // lost, or a write cut off whose commit is unknown (`store::group`). The producer
        // retries, with its idempotency key where a write may have happened.
        if e.is_transient() { ApiError::Unavailable(e.to_string()) } else { ApiError::Internal(e.to_string()) }
    }
}
