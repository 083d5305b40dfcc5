//! CORS for the endpoints a browser calls with a subscriber token (the inbox, the
//! caller's preferences and the subscriber's devices): only the origins `inbox.cors_origins` lists, never `*`. The
//! producer endpoints get no CORS headers: an API key belongs on the tenant's backend.

use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use bootstrap::ConfigError;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight's answer.
const MAX_AGE: Duration = Duration::from_secs(3600);

/// The layer for `origins`, `None` when there are none; an origin that is not
/// `scheme://host[:port]` is refused naming `inbox.cors_origins`.
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>, ConfigError> {
    if origins.is_empty() {
        return Ok(None);
    }
    let invalid = |origin: &str| ConfigError::Invalid {
        key: "inbox.cors_origins".into(),
        message: format!("`{origin}` is not an origin such as `https://app.example.com`"),
    };
    let mut allowed = Vec::with_capacity(origins.len());
    for origin in origins {
        let url = reqwest::Url::parse(origin).map_err(|_| invalid(origin))?;
        let serialized = url.origin().ascii_serialization();
        // An origin has no path, query or fragment: `https://a.example` as a browser sends it.
        if !matches!(url.scheme(), "http" | "https") || serialized != origin.trim_end_matches('/') {
            return Err(invalid(origin));
        }
        allowed.push(HeaderValue::from_str(&serialized).map_err(|_| invalid(origin))?);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([
                header::RETRY_AFTER,
                header::HeaderName::from_static("ratelimit-limit"),
                header::HeaderName::from_static("ratelimit-remaining"),
                header::HeaderName::from_static("ratelimit-reset"),
            ])
            .max_age(MAX_AGE),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(layer(&[]).unwrap().is_none());
        assert!(layer(&["https://app.example.com".into(), "http://localhost:3000".into()]).unwrap().is_some());
        for bad in ["*", "app.example.com", "https://app.example.com/path", "ftp://x.example", "https://a.example?q"] {
            match layer(&[bad.into()]) {
                Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "inbox.cors_origins"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
