//! `GET /inbox-demo`: a small page that shows a subscriber's inbox and updates it live
//! through `/v1/inbox/ws` (`demo.html`: plain HTML and JavaScript, nothing from elsewhere).
//! Public: the page holds no secret, it asks for a subscriber token (`?token=`).

use axum::{
    http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY},
    response::IntoResponse,
};

const PAGE: &str = include_str!("demo.html");

/// The page's own inline script and style, its own origin's API and socket, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub async fn page() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
            // The token is in the page's URL: never send it on as a referrer.
            (REFERRER_POLICY, "no-referrer"),
            (CONTENT_SECURITY_POLICY, POLICY),
        ],
        PAGE,
    )
}
