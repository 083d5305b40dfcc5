//! The producer HTTP API (docs/contract.md §3): accepts notifications, writing the notification,
//! its deliveries and their outbox rows in one transaction, and reports on them.

mod accept;
mod admission;
mod auth;
mod chat_addresses;
mod config;
mod cors;
pub mod dlq;
mod error;
mod handoff;
mod inbox;
mod json;
mod metrics;
mod openapi;
mod rate_limit;
mod receipts;
pub mod rotation;
mod routes;
mod serve;

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit};
use bootstrap::{ConfigError, ExposeSecret};
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use admission::AdmissionSettings;
pub use config::{
    CacheSettings, Config, Idempotency, InboxSettings, Limits, MetaReceipts, Receipts, SesReceipts, TwilioReceipts,
};
pub use handoff::HandOffSettings;
pub use inbox::socket::SocketSettings as InboxSocket;
pub use inbox::token::{SubscriberClaims, TokenKey};
pub use openapi::{ApiDoc, openapi_json};
pub use rate_limit::Rate;

/// Request bodies larger than this are refused with `413`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct AppState {
    store: Store,
    limits: domain::request::Limits,
    limiter: Arc<rate_limit::RateLimiter>,
    default_rate: Rate,
    idempotency_retention: Duration,
    /// How long a delivery must be stranded before a retry may queue it again.
    stranded_after: Duration,
    /// Subscribers whose `data` planning reads at once.
    subscriber_data_page: usize,
    /// Signature checkers of the providers whose receipts are configured.
    receipts: Arc<receipts::Receipts>,
    /// Signs and verifies subscriber tokens (the inbox).
    tokens: Arc<TokenKey>,
    /// How long a subscriber token is valid.
    token_ttl: Duration,
    /// This replica's live inbox sockets, and the events that reach them from any replica.
    inbox_hub: Arc<inbox::hub::Hub>,
    inbox_socket: inbox::socket::SocketSettings,
    /// Publishes accepted deliveries right after their commit; none without a broker.
    hand_off: Option<handoff::HandOff>,
    /// Database lookups of API keys (`admission.key_lookups`).
    key_lookups: Arc<auth::KeyLookups>,
    /// Each subscriber's requests on the inbox (`admission.inbox_rate`).
    inbox_limiter: Arc<rate_limit::RateLimiter<(uuid::Uuid, String)>>,
    inbox_rate: Rate,
    /// Push devices a subscriber keeps (`limits.max_devices_per_subscriber`).
    max_devices_per_subscriber: usize,
    /// Checks and seals subscribers' chat addresses.
    chat_addresses: chat_addresses::ChatAddresses,
    /// The keyring, rules and HTTP client of tenants' integrations.
    integrations: Arc<routes::integrations::Integrations>,
    /// What tenants' webhook endpoints may be.
    webhooks: routes::webhooks::WebhookSettings,
}

/// The API's routes and state; fails on receipt and inbox settings that [`Config::validate`] refuses.
pub fn router(
    store: Store,
    config: &Config,
    inbox_hub: Arc<inbox::hub::Hub>,
    hand_off: Option<handoff::HandOff>,
) -> Result<Router, ConfigError> {
    let tokens = TokenKey::from_settings(&config.inbox)?;
    if config.inbox.token_secret.is_none() {
        tracing::info!(
            "inbox.token_secret is not set: subscriber tokens are signed with a random key made at start, \
             so they verify only on this replica and only until it restarts"
        );
    }
    // One keyring for the process: chat addresses and integrations seal with the same keys.
    let keyring = config.secrets.keyring()?.map(Arc::new);
    let state = AppState {
        store,
        limits: domain::request::Limits {
            allow_private_hosts: config.integrations.allow_private_hosts,
            ..config.limits.domain()
        },
        limiter: Arc::default(),
        default_rate: config.rate_limit,
        idempotency_retention: config.idempotency.retention,
        stranded_after: config.limits.stranded_after,
        subscriber_data_page: config.limits.subscriber_data_page,
        receipts: Arc::new(receipts::Receipts::new(&config.receipts)?),
        tokens: Arc::new(tokens),
        token_ttl: config.inbox.token_ttl,
        inbox_hub,
        inbox_socket: config.inbox_socket.clone(),
        hand_off,
        key_lookups: Arc::new(auth::KeyLookups::new(config.admission.key_lookups)),
        inbox_limiter: Arc::default(),
        inbox_rate: config.admission.inbox_rate,
        max_devices_per_subscriber: config.limits.max_devices_per_subscriber,
        chat_addresses: chat_addresses::ChatAddresses::new(keyring.clone(), config.integrations.allow_private_hosts),
        integrations: Arc::new(routes::integrations::Integrations::new(config, keyring)),
        webhooks: config.webhooks.clone(),
    };
    let admission = admission::Admission::new(&config.admission);
    // `layer`, not `route_layer`: unmatched paths (404) and methods (405) are counted too,
    // and so are the requests admission refuses.
    let (routes, _) = routes::routes(cors::layer(&config.inbox.cors_origins)?);
    Ok(routes
        .layer(axum::middleware::from_fn_with_state(admission, admission::admit))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state))
}

/// One span per request, named by its route (never its raw path), continuing the
/// caller's trace when it sends a `traceparent`.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
    let span = tracing::info_span!("request", method = %request.method(), route);
    let parent = request.headers().get("traceparent").and_then(|v| v.to_str().ok());
    bootstrap::telemetry::set_parent(&span, parent);
    span
}

/// Serves on `listener` until `shutdown` fires, then finishes the requests in flight.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let url = bootstrap::require(&config.database_url, "database_url")?;
    let mut store = Store::connect_lazy(url.expose_secret(), config.database_max_connections)?
        .with_cache_of_unknown_keys(config.cache.capacity, config.cache.unknown_keys, config.cache.unknown_key_ttl);
    let amqp_url = config.amqp_url.as_ref().map(|u| u.expose_secret().to_owned());
    // With a broker the API publishes what it accepts itself; the relays only if it could not.
    let handed_off = CancellationToken::new();
    let (hand_off, publishing) = match &amqp_url {
        Some(url) if config.hand_off.enabled => {
            store = store.with_hand_off(config.hand_off.grace, config.hand_off.max_ready as usize);
            let (hand_off, task) =
                handoff::HandOff::start(store.clone(), url.clone(), &config.hand_off, handed_off.clone());
            (Some(hand_off), Some(task))
        }
        _ => (None, None),
    };
    let purge = tokio::spawn(purge_expired(store.clone(), config.idempotency.clone(), shutdown.clone()));
    let inbox_hub = inbox::hub::Hub::start(store.clone(), amqp_url, config.inbox_socket.send_queue, shutdown.clone());
    let app = router(store.clone(), &config, Arc::clone(&inbox_hub), hand_off)?;
    let cache = tokio::spawn({
        let (store, shutdown) = (store.clone(), shutdown.clone());
        async move { store.keep_cache(shutdown.cancelled()).await }
    });
    // `/metrics` is served only here, off the public port, beside the probes.
    let ops =
        config.ops_listen.map(|addr| tokio::spawn(bootstrap::ops::serve(addr, readiness(&store), shutdown.clone())));
    tracing::info!(addr = %listener.local_addr()?, "listening");
    serve::serve(listener, app, config.admission.header_read_timeout, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    // Upgraded sockets outlive their requests: they close on `shutdown`; wait for them.
    inbox_hub.sockets_tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), inbox_hub.sockets_tracker.wait()).await;
    let _ = purge.await;
    let _ = cache.await;
    // No request is left to hand anything off: the task publishes what it holds and ends,
    // or is given up after the grace (what it still held falls due for the relays).
    handed_off.cancel();
    if let Some(mut publishing) = publishing
        && tokio::time::timeout(config.hand_off.grace, &mut publishing).await.is_err()
    {
        tracing::warn!("the hand-off did not finish within its grace; the relays publish what it held");
        publishing.abort();
    }
    store.close().await;
    tracing::info!("api stopped");
    Ok(())
}

/// Ready when the database answers, as the public `/readyz`; also says whether the cache
/// serves (it is not needed to be ready: without it requests read the database).
fn readiness(store: &Store) -> bootstrap::ops::Check {
    let store = store.clone();
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            let database = store.ping().await.is_ok();
            let details = serde_json::json!({"database": database, "cache": routes::health::cache_state(&store)});
            if database { Ok(details) } else { Err(details) }
        })
    })
}

/// Deletes expired idempotency keys, pending receipts and webhook events now and then. Every replica may
/// run it; deleting twice is harmless, and a key past retention counts as unused even
/// before it goes.
async fn purge_expired(store: Store, settings: Idempotency, shutdown: CancellationToken) {
    loop {
        match store.purge_idempotency_keys(settings.retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
        }
        // A receipt an outcome left pending when its worker died before applying it.
        match store.apply_claimable_receipts().await {
            Ok(0) => {}
            Ok(messages) => tracing::info!(messages, "pending receipts applied"),
            Err(e) => tracing::warn!(error = %e, "applying pending receipts failed"),
        }
        match store.purge_pending_receipts(store::PENDING_RECEIPT_RETENTION).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "pending receipts no send claimed deleted"),
            Err(e) => tracing::warn!(error = %e, "purging pending receipts failed"),
        }
        if let Err(e) = store.purge_receipt_tokens(store::RECEIPT_TOKEN_RETENTION).await {
            tracing::warn!(error = %e, "purging receipt tokens failed");
        }
        match store.purge_webhook_events(store::webhooks::EVENT_RETENTION).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "webhook events past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "purging webhook events failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.purge_interval) => {}
        }
    }
}
