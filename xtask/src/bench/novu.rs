//! A stand-in for Novu's trigger endpoint, so the peer shape's notifications leave the
//! novu-worker over HTTP as they would for Novu (providers.md §5): `POST
//! /v1/events/trigger` with `Authorization: ApiKey <key>` and a body naming the workflow,
//! the subscriber and our `transactionId` answers `201 {"data": {"acknowledged": true,
//! "status": "processed", "transactionId": …}}`. It counts the triggers it acknowledged,
//! as the sandbox files count the other channels' messages.

use std::sync::{
    Arc,
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

/// The key the bench's novu-worker is given; the stand-in refuses any other, as Novu would.
pub const API_KEY: &str = "bench-novu-secret-key";

pub struct NovuStandIn {
    /// `http://127.0.0.1:<port>`: the novu provider's `base_url`.
    pub base_url: String,
    triggers: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl NovuStandIn {
    /// Listens on a free loopback port, in this process, until dropped.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the Novu stand-in")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let triggers = Arc::new(AtomicU64::new(0));
        let app = Router::new().route("/v1/events/trigger", post(trigger)).with_state(triggers.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                crate::say!("the Novu stand-in stopped: {e}");
            }
        });
        Ok(Self { base_url, triggers, server })
    }

    /// Triggers acknowledged so far.
    pub fn triggers(&self) -> u64 {
        self.triggers.load(Ordering::Relaxed)
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
        self.server.abort();
    }
}

/// Novu's answers: 401 for a wrong key, 400 for a body without the workflow, subscriber or
/// transaction id (messages as Novu words them), else 201 processed.
async fn trigger(
    State(triggers): State<Arc<AtomicU64>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
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
    triggers.fetch_add(1, Ordering::Relaxed);
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
    }
}
