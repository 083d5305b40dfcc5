//! A stand-in for Novu's trigger endpoint, so the peer shape's notifications leave the
//! novu-worker over HTTP as they would for Novu (providers.md §5): `POST
//! /v1/events/trigger` with `Authorization: ApiKey <key>` and a body naming the workflow,
//! the subscriber and our `transactionId` answers `201 {"data": {"acknowledged": true,
//! "status": "processed", "transactionId": …}}`. It counts the triggers it acknowledged,
//! as the sandbox files count the other channels' messages, and notes when each peer-shape
//! notification arrived (its `payload.order`, the notification's `data`, carries the load
//! generator's request number) on the generator's clock. It is the provider, neither
//! platform nor generator: it runs on a thread of its own, its CPU read apart.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    routing::post,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{load, threads};

/// The key the bench's novu-worker is given; the stand-in refuses any other, as Novu would.
pub const API_KEY: &str = "bench-novu-secret-key";

#[derive(Default)]
struct Seen {
    triggers: AtomicU64,
    /// `(request number, load::clock_us())` of each trigger whose `payload.order` is
    /// `order-<number>`.
    arrivals: Mutex<Vec<(u64, u64)>>,
}

pub struct NovuStandIn {
    /// `http://127.0.0.1:<port>`: the novu provider's `base_url`.
    pub base_url: String,
    /// The thread it runs on, for the CPU sampler.
    pub tid: u32,
    seen: Arc<Seen>,
    stop: Option<oneshot::Sender<()>>,
}

impl NovuStandIn {
    /// Listens on a free loopback port, on a thread of its own, until dropped.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the Novu stand-in")?;
        listener.set_nonblocking(true)?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let seen = Arc::new(Seen::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new().route("/v1/events/trigger", post(trigger)).with_state(seen.clone());
        let thread = threads::spawn("novu-stand-in", move || async move {
            let served = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => axum::serve(listener, app).with_graceful_shutdown(async { _ = stopped.await }).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                crate::say!("the Novu stand-in stopped: {e}");
            }
        })
        .await?;
        Ok(Self { base_url, tid: thread.tid, seen, stop: Some(stop) })
    }

    /// Triggers acknowledged so far.
    pub fn triggers(&self) -> u64 {
        self.seen.triggers.load(Ordering::Relaxed)
    }

    /// The arrivals noted since the last call: `(request number, clock_us)`.
    pub fn take_arrivals(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.seen.arrivals.lock().expect("not poisoned"))
    }

    /// The novu-worker's environment that makes it send to this stand-in.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFY_NOVU__PROVIDERS", r#"["novu"]"#.into()),
            ("NOTIFY_NOVU__NOVU__API_KEY", API_KEY.into()),
            ("NOTIFY_NOVU__NOVU__BASE_URL", self.base_url.clone()),
            // A developer's HTTP(S)_PROXY must not see the loopback calls.
            ("NO_PROXY", "127.0.0.1,localhost".into()),
        ]
    }
}

impl Drop for NovuStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Novu's answers: 401 for a wrong key, 400 for a body without the workflow, subscriber or
/// transaction id (messages as Novu words them), else 201 processed.
async fn trigger(
    State(seen): State<Arc<Seen>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let arrived = load::clock_us();
    let authorized = headers.get(AUTHORIZATION).is_some_and(|v| v.as_bytes() == format!("ApiKey {API_KEY}").as_bytes());
    if !authorized {
        let answer = json!({"statusCode": 401, "message": "API Key not found", "error": "Unauthorized"});
        return (StatusCode::UNAUTHORIZED, Json(answer));
    }
    let subscriber = body["to"]["subscriberId"].as_str().or_else(|| body["to"].as_str());
    let (Some(_workflow), Some(_subscriber), Some(transaction_id)) =
        (body["name"].as_str(), subscriber, body["transactionId"].as_str())
    else {
        let answer =
            json!({"statusCode": 400, "message": ["name, to and transactionId are required"], "error": "Bad Request"});
        return (StatusCode::BAD_REQUEST, Json(answer));
    };
    seen.triggers.fetch_add(1, Ordering::Relaxed);
    let number = body["payload"]["order"].as_str().and_then(|o| o.strip_prefix("order-")?.parse().ok());
    if let Some(number) = number {
        seen.arrivals.lock().expect("not poisoned").push((number, arrived));
    }
    let answer = json!({"data": {"acknowledged": true, "status": "processed", "transactionId": transaction_id}});
    (StatusCode::CREATED, Json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_a_trigger_as_novu_does() {
        let stand_in = NovuStandIn::start().await.unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{}/v1/events/trigger", stand_in.base_url);
        let body = json!({"name": "order.shipped", "to": {"subscriberId": "t:u-1"}, "payload": {"order": "1"},
                          "transactionId": "d-1", "tenant": {"identifier": "t"}});

        let refused = client.post(&url).header("authorization", "ApiKey wrong").json(&body).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        let incomplete = json!({"name": "order.shipped"});
        let request = client.post(&url).header("authorization", format!("ApiKey {API_KEY}")).json(&incomplete);
        assert_eq!(request.send().await.unwrap().status(), 400);
        assert_eq!(stand_in.triggers(), 0);

        let request = client.post(&url).header("authorization", format!("ApiKey {API_KEY}")).json(&body);
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 201);
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["data"], json!({"acknowledged": true, "status": "processed", "transactionId": "d-1"}));
        assert_eq!(stand_in.triggers(), 1);
        assert!(stand_in.take_arrivals().is_empty(), "its payload names no request number");

        let numbered = json!({"name": "order.shipped", "to": {"subscriberId": "t:u-1"},
                              "payload": {"order": "order-00000042"}, "transactionId": "d-2"});
        let request = client.post(&url).header("authorization", format!("ApiKey {API_KEY}")).json(&numbered);
        assert_eq!(request.send().await.unwrap().status(), 201);
        let arrivals = stand_in.take_arrivals();
        assert_eq!(arrivals.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [42]);
        assert!(stand_in.take_arrivals().is_empty());
    }
}
