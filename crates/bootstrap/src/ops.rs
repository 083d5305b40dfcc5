//! The small side server of every binary (workers, relay, and the API off its public
//! port): `/healthz` (the process answers), `/readyz` (what it depends on is reachable),
//! for Kubernetes probes, and `/metrics` for Prometheus.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A readiness check: `Ok(details)` when ready, `Err(details)` when not.
pub type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Value, Value>> + Send>> + Send + Sync>;

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until `shutdown`.
pub async fn serve(addr: SocketAddr, check: Check, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "ops endpoints listening");
    let app = Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(check);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn metrics() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render())
}

async fn readyz(State(check): State<Check>) -> (StatusCode, Json<Value>) {
    match check().await {
        Ok(details) => (StatusCode::OK, Json(details)),
        Err(details) => (StatusCode::SERVICE_UNAVAILABLE, Json(details)),
    }
}
