//! Every error answer is RFC 9457 `application/problem+json`:
//! `{type, title, status, detail, code, errors: [{field, message}]}`. Internal causes are
//! logged, never returned.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use domain::FieldError;
use serde::Serialize;

#[derive(Debug)]
pub enum ApiError {
    MalformedJson(String),
    Validation(Vec<FieldError>),
    UnsupportedMediaType,
    PayloadTooLarge,
    Unauthorized(&'static str),
    NotFound,
    MethodNotAllowed,
    /// The database is unreachable: worth retrying soon.
    Unavailable(String),
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
    errors: &'a [FieldError],
}

impl ApiError {
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
            NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found", "no such resource".into()),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "this resource does not accept that method".into(),
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "the database is unreachable; retry shortly".into(),
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "something went wrong on our side; it has been logged".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(cause, "request failed"),
            ApiError::Unavailable(cause) => tracing::warn!(cause, "database unavailable"),
            _ => {}
        }
        let (status, code, title, detail) = self.parts();
        let errors = match &self {
            ApiError::Validation(errors) => errors.as_slice(),
            _ => &[],
        };
        let body = Problem { kind: format!("/problems/{code}"), title, status: status.as_u16(), detail, code, errors };
        let mut response = (status, serde_json::to_vec(&body).expect("a problem serializes")).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match &e {
            store::StoreError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
                ApiError::Unavailable(e.to_string())
            }
            _ => ApiError::Internal(e.to_string()),
        }
    }
}
