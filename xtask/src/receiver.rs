//! A local webhook receiver for `cargo xtask dev` and `cargo xtask chaos`: a tenant's
//! endpoint posts its events here. Each is checked against the endpoint's secret as a
//! receiver would (the Standard Webhooks signature), and kept for the checks.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use domain::webhook::WebhookSecret;
use serde_json::Value;

/// One request the receiver took.
#[derive(Clone, Debug)]
pub struct Received {
    pub body: Value,
    pub received_at: time::OffsetDateTime,
    /// Whether one of its signatures is the endpoint secret's, for its id, timestamp and body.
    pub verified: bool,
}

#[derive(Clone, Default)]
struct Shared {
    secret: Arc<OnceLock<WebhookSecret>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Print a line per request.
    announce: bool,
}

pub struct Receiver {
    pub url: String,
    shared: Shared,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1 until the process ends; prints a line per
    /// request when `announce`.
    pub async fn start(announce: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let shared = Shared { announce, ..Shared::default() };
        let app = Router::new().route("/webhooks", post(take)).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url: format!("http://{addr}/webhooks"), shared })
    }

    /// The endpoint's secret, once the API made it.
    pub fn set_secret(&self, secret: WebhookSecret) {
        let _ = self.shared.secret.set(secret);
    }

    /// A copy of every request taken: for the checks at the end.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("no panic while locked").clone()
    }

    /// How many requests taken `which` picks: for polling, which must not copy them (the
    /// bench's 100,000 events copied ten times a second took half a core from the stack).
    pub fn count(&self, which: impl Fn(&Received) -> bool) -> usize {
        self.shared.received.lock().expect("no panic while locked").iter().filter(|r| which(r)).count()
    }
}

async fn take(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp").parse::<i64>().unwrap_or_default());
    let verified = shared.secret.get().is_some_and(|secret| {
        let expected = secret.sign(id, timestamp, &body);
        header("webhook-signature").split(' ').any(|signature| signature == expected)
    });
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if shared.announce {
        println!(
            "webhook receiver: {} {} ({})",
            body["type"].as_str().unwrap_or("?"),
            id,
            if verified { "signature verified" } else { "SIGNATURE DOES NOT VERIFY" }
        );
    }
    let received_at = time::OffsetDateTime::now_utc();
    shared.received.lock().expect("no panic while locked").push(Received { body, received_at, verified });
    StatusCode::NO_CONTENT
}
