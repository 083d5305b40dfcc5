//! The producer HTTP API (DESIGN.md §5): accepts notifications, writing the notification,
//! its deliveries and their outbox rows in one transaction, and reports on them.

mod auth;
mod config;
mod error;
mod json;
mod routes;

use axum::{Router, extract::DefaultBodyLimit};
use bootstrap::ExposeSecret;
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use config::{Config, Limits};

/// Request bodies larger than this are refused with `413`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub limits: domain::request::Limits,
}

pub fn router(state: AppState) -> Router {
    routes::routes().layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).layer(TraceLayer::new_for_http()).with_state(state)
}

/// Serves on `listener` until `shutdown` fires, then finishes the requests in flight.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let url = bootstrap::require(&config.database_url, "database_url")?;
    let store = Store::connect_lazy(url.expose_secret(), config.database_max_connections)?;
    let app = router(AppState { store: store.clone(), limits: config.limits.domain() });
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    store.close().await;
    tracing::info!("api stopped");
    Ok(())
}
