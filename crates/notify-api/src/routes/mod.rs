pub mod classifications;
pub mod deliveries;
pub mod devices;
pub mod health;
pub mod inbox;
pub mod integrations;
pub mod me;
pub mod notifications;
pub mod providers;
pub mod subscriber_token_key;
pub mod subscribers;
pub mod templates;
pub mod topics;
pub mod types;
pub mod webhooks;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{MatchedPath, Request},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{AppState, error::ApiError, openapi::ApiDoc};

/// Every route, and the OpenAPI document of the API's: one list, so no operation of the
/// API can exist undocumented, or be documented and not exist. Beside it only the inbox's
/// WebSocket (which OpenAPI cannot describe: README, "The inbox"), the demo page and the
/// document itself. `cors` (from `inbox.cors_origins`) goes on the routes a browser calls
/// with a subscriber token: the inbox, the caller's preferences and the subscriber's devices.
pub fn routes(cors: Option<tower_http::cors::CorsLayer>) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (browser, browser_doc) = OpenApiRouter::new()
        .routes(routes!(devices::list))
        .routes(routes!(devices::put, devices::get, devices::delete))
        .routes(routes!(inbox::list))
        .routes(routes!(inbox::count))
        .routes(routes!(inbox::read_all))
        .routes(routes!(inbox::delete))
        .routes(routes!(inbox::read))
        .routes(routes!(inbox::unread))
        .routes(routes!(inbox::archive))
        .routes(routes!(me::put_preferences, me::get_preferences))
        .split_for_parts();
    let mut browser = browser
        .route("/v1/inbox/ws", get(crate::inbox::socket::connect))
        // Set before the CORS layer so that it wraps it too: a preflight (`OPTIONS`, which
        // no route has) reaches the layer through it. Set after, on the whole router, it
        // would replace the layered one.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    if let Some(cors) = cors {
        browser = browser.layer(cors);
    }
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(notifications::create, notifications::list))
        .routes(routes!(notifications::batch))
        .routes(routes!(notifications::get))
        .routes(routes!(notifications::deliveries))
        .routes(routes!(notifications::cancel))
        .routes(routes!(deliveries::retry))
        .routes(routes!(templates::put, templates::get, templates::delete))
        .routes(routes!(templates::preview))
        .routes(routes!(subscribers::put, subscribers::get, subscribers::erase))
        .routes(routes!(subscribers::put_preferences, subscribers::get_preferences))
        .routes(routes!(inbox::issue_token))
        .routes(routes!(subscriber_token_key::put, subscriber_token_key::get, subscriber_token_key::delete))
        .routes(routes!(topics::change, topics::list))
        .routes(routes!(types::list))
        .routes(routes!(types::put, types::get))
        .routes(routes!(classifications::put, classifications::get))
        .routes(routes!(integrations::list))
        .routes(routes!(integrations::put, integrations::get, integrations::delete))
        .routes(routes!(integrations::check))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::patch, webhooks::delete))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::attempts))
        .routes(routes!(webhooks::test))
        .routes(routes!(webhooks::replay))
        .routes(routes!(providers::twilio_status))
        .routes(routes!(providers::ses_events))
        .routes(routes!(providers::meta_verify, providers::meta_webhook))
        .routes(routes!(providers::tenant_twilio_status))
        .routes(routes!(providers::tenant_ses_events))
        .routes(routes!(providers::tenant_meta_verify, providers::tenant_meta_webhook))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .split_for_parts();
    doc.merge(browser_doc);
    crate::openapi::complete(&mut doc);
    let served = Arc::new(doc.clone());
    let router = Router::new()
        .merge(browser)
        .merge(api)
        .route("/inbox-demo", get(crate::inbox::demo::page))
        .route("/openapi.json", get(move || async move { Json(served) }))
        .route_layer(middleware::from_fn(refuse_nul))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    (router, doc)
}

/// Refuses a request with a NUL character in a path or query parameter with a `422` naming
/// it, before any handler runs: PostgreSQL's text cannot hold one (so no stored value has
/// one), and a query would fail on it.
async fn refuse_nul(request: Request, next: Next) -> Response {
    match nul_parameter(&request) {
        Some(name) => ApiError::field(&name, "must not contain a NUL character").into_response(),
        None => next.run(request).await,
    }
}

/// The name of the first parameter holding a NUL. A raw NUL cannot be in a URI, so only
/// `%00` decodes to one.
fn nul_parameter(request: &Request) -> Option<String> {
    let uri = request.uri();
    if let Some(query) = uri.query().filter(|q| q.contains("%00")) {
        let pair = form_urlencoded::parse(query.as_bytes()).find(|(n, v)| n.contains('\0') || v.contains('\0'));
        if let Some((name, _)) = pair {
            return Some(if name.contains('\0') { "(query)".to_owned() } else { name.into_owned() });
        }
    }
    if !uri.path().contains("%00") {
        return None;
    }
    // The route's pattern names each segment: `/v1/subscribers/{id}`.
    let pattern = request.extensions().get::<MatchedPath>()?.as_str();
    uri.path()
        .split('/')
        .zip(pattern.split('/'))
        .find(|(segment, _)| segment.contains("%00"))
        .map(|(_, name)| name.trim_start_matches('{').trim_end_matches('}').to_owned())
}

/// An id in a path that is not a UUID names nothing: the same 404 as another tenant's id.
fn parse_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound)
}

/// A page size from the `limit` query parameter: 1 to `max`, else a `422` naming it.
fn page_limit(value: &str, max: i64) -> Result<i64, ApiError> {
    value
        .parse()
        .ok()
        .filter(|l| (1..=max).contains(l))
        .ok_or_else(|| ApiError::field("limit", format!("must be 1 to {max}")))
}
