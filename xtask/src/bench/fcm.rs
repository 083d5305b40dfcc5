//! A stand-in for FCM HTTP v1 and its OAuth2 token endpoint, so the push phase's
//! deliveries leave the push-worker over HTTP as they would for Firebase
//! (docs/providers.md, FCM): `POST /token` (the JWT-bearer grant) answers an access token,
//! `POST /v1/projects/{project}/messages:send` with that token answers `200 {"name":
//! "projects/{project}/messages/<n>"}`. It counts the grants and the messages it accepted,
//! as the sandbox files count the other channels' messages. It is the provider, neither
//! platform nor generator: it runs on a thread of its own, its CPU read apart.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    routing::post,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::threads;

/// The access token the stand-in grants; a send with another is refused, as FCM would.
const ACCESS_TOKEN: &str = "ya29.bench-access-token";

#[derive(Default)]
struct Seen {
    grants: AtomicU64,
    messages: AtomicU64,
}

pub struct FcmStandIn {
    /// `http://127.0.0.1:<port>`: FCM's base URL and, with `/token`, its token URI.
    pub base_url: String,
    /// The thread it runs on, for the CPU sampler.
    pub tid: u32,
    seen: Arc<Seen>,
    stop: Option<oneshot::Sender<()>>,
}

impl FcmStandIn {
    /// Listens on a free loopback port, on a thread of its own, until dropped.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the FCM stand-in")?;
        listener.set_nonblocking(true)?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let seen = Arc::new(Seen::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new()
            .route("/token", post(grant))
            .route("/v1/projects/{project}/{method}", post(send))
            .with_state(seen.clone());
        let thread = threads::spawn("fcm-stand-in", move || async move {
            let served = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => axum::serve(listener, app).with_graceful_shutdown(async { _ = stopped.await }).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                crate::say!("the FCM stand-in stopped: {e}");
            }
        })
        .await?;
        Ok(Self { base_url, tid: thread.tid, seen, stop: Some(stop) })
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> u64 {
        self.seen.messages.load(Ordering::Relaxed)
    }

    /// Access tokens granted so far.
    pub fn grants(&self) -> u64 {
        self.seen.grants.load(Ordering::Relaxed)
    }
}

impl Drop for FcmStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The JWT-bearer grant: any well-formed request gets the token (the provider's own tests
/// check the assertion; here only the traffic matters).
async fn grant(State(seen): State<Arc<Seen>>, body: String) -> (StatusCode, Json<Value>) {
    let form: Vec<(String, String)> = url_pairs(&body);
    let grant_type = form.iter().find(|(k, _)| k == "grant_type").map(|(_, v)| v.as_str());
    let assertion = form.iter().any(|(k, v)| k == "assertion" && v.split('.').count() == 3);
    if grant_type != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") || !assertion {
        let answer = json!({"error": "invalid_grant", "error_description": "Invalid JWT"});
        return (StatusCode::BAD_REQUEST, Json(answer));
    }
    seen.grants.fetch_add(1, Ordering::Relaxed);
    (StatusCode::OK, Json(json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"})))
}

/// `messages:send`: 401 without the granted token, 400 without a token target, else 200.
async fn send(
    State(seen): State<Arc<Seen>>,
    Path((project, method)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if method != "messages:send" {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": 404, "status": "NOT_FOUND"}})));
    }
    let authorized =
        headers.get(AUTHORIZATION).is_some_and(|v| v.as_bytes() == format!("Bearer {ACCESS_TOKEN}").as_bytes());
    if !authorized {
        let error = json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                                     "status": "UNAUTHENTICATED"}});
        return (StatusCode::UNAUTHORIZED, Json(error));
    }
    if body["message"]["token"].as_str().is_none_or(str::is_empty) {
        let error = json!({"error": {"code": 400, "message": "The registration token is not a valid FCM registration token",
                                     "status": "INVALID_ARGUMENT"}});
        return (StatusCode::BAD_REQUEST, Json(error));
    }
    let n = seen.messages.fetch_add(1, Ordering::Relaxed);
    (StatusCode::OK, Json(json!({"name": format!("projects/{project}/messages/0:{n}")})))
}

/// The pairs of an `application/x-www-form-urlencoded` body.
fn url_pairs(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}
