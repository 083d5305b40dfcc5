pub mod deliveries;
pub mod devices;
pub mod health;
pub mod inbox;
pub mod integrations;
pub mod notifications;
pub mod providers;
pub mod subscribers;
pub mod templates;
pub mod topics;
pub mod types;
pub mod webhooks;

use axum::{
    Router,
    extract::{MatchedPath, Request},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use crate::{AppState, error::ApiError};

/// Every route; `cors` (from `inbox.cors_origins`) on those a browser calls with a
/// subscriber token, the inbox and the subscriber's devices.
pub fn routes(cors: Option<tower_http::cors::CorsLayer>) -> Router<AppState> {
    let mut browser = Router::new()
        .route("/v1/subscribers/{id}/devices", get(devices::list))
        .route(
            "/v1/subscribers/{id}/devices/{device_id}",
            axum::routing::put(devices::put).get(devices::get).delete(devices::delete),
        )
        .route("/v1/inbox", get(inbox::list))
        .route("/v1/inbox/count", get(inbox::count))
        .route("/v1/inbox/ws", get(crate::inbox::socket::connect))
        .route("/v1/inbox/read-all", post(inbox::read_all))
        .route("/v1/inbox/{id}", axum::routing::delete(inbox::delete))
        .route("/v1/inbox/{id}/read", post(inbox::read))
        .route("/v1/inbox/{id}/unread", post(inbox::unread))
        .route("/v1/inbox/{id}/archive", post(inbox::archive))
        // Set before the CORS layer so that it wraps it too: a preflight (`OPTIONS`, which
        // no route has) reaches the layer through it. Set after, on the whole router, it
        // would replace the layered one.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    if let Some(cors) = cors {
        browser = browser.layer(cors);
    }
    Router::new()
        .merge(browser)
        .route("/v1/notifications", post(notifications::create).get(notifications::list))
        .route("/v1/notifications/batch", post(notifications::batch))
        .route("/v1/notifications/{id}", get(notifications::get))
        .route("/v1/notifications/{id}/deliveries", get(notifications::deliveries))
        .route("/v1/notifications/{id}/cancel", post(notifications::cancel))
        .route("/v1/deliveries/{id}/retry", post(deliveries::retry))
        .route(
            "/v1/templates/{type}/{channel}",
            axum::routing::put(templates::put).get(templates::get).delete(templates::delete),
        )
        .route("/v1/templates/preview", post(templates::preview))
        .route(
            "/v1/subscribers/{id}",
            axum::routing::put(subscribers::put).get(subscribers::get).delete(subscribers::erase),
        )
        .route(
            "/v1/subscribers/{id}/preferences",
            axum::routing::put(subscribers::put_preferences).get(subscribers::get_preferences),
        )
        .route("/v1/subscribers/{id}/token", post(inbox::issue_token))
        .route("/v1/topics/{key}/subscribers", axum::routing::put(topics::change).get(topics::list))
        .route("/v1/types", get(types::list))
        .route("/v1/types/{key}", axum::routing::put(types::put).get(types::get))
        .route("/v1/integrations", get(integrations::list))
        .route(
            "/v1/integrations/{channel}/{provider}",
            axum::routing::put(integrations::put).get(integrations::get).delete(integrations::delete),
        )
        .route("/v1/integrations/{channel}/{provider}/check", post(integrations::check))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/{id}", get(webhooks::get).patch(webhooks::patch).delete(webhooks::delete))
        .route("/v1/webhooks/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/v1/webhooks/{id}/attempts", get(webhooks::attempts))
        .route("/v1/webhooks/{id}/test", post(webhooks::test))
        .route("/v1/webhooks/{id}/replay", post(webhooks::replay))
        .route("/v1/providers/twilio/status", post(providers::twilio_status))
        .route("/v1/providers/ses/events", post(providers::ses_events))
        .route("/v1/providers/meta/webhook", get(providers::meta_verify).post(providers::meta_webhook))
        .route("/v1/providers/twilio/status/{tenant_id}", post(providers::tenant_twilio_status))
        .route("/v1/providers/ses/events/{tenant_id}", post(providers::tenant_ses_events))
        .route(
            "/v1/providers/meta/webhook/{tenant_id}",
            get(providers::tenant_meta_verify).post(providers::tenant_meta_webhook),
        )
        .route("/inbox-demo", get(crate::inbox::demo::page))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(crate::openapi::serve))
        .route_layer(middleware::from_fn(refuse_nul))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
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
