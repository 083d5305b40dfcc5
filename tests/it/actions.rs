//! Cancelling notifications and retrying failed deliveries, both audited.

use domain::Channel;
use serde_json::Value;
use uuid::Uuid;
use worker::{SandboxConfig, SandboxFailure};

use crate::harness::{TestApp, WorkerOptions, email, eventually};

impl TestApp {
    async fn action(&self, path: &str) -> (u16, Value) {
        let response = self.http.post(self.url(path)).bearer_auth(&self.api_key).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

fn actions(n: &Value) -> Vec<String> {
    n["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn cancelling_before_sending_stops_every_delivery() {
    let app = TestApp::api_only().await;
    let id = app
        .accept(&serde_json::json!({"type": "t", "to": [{"email": "a@example.com", "phone": "+15551234567"}],
            "content": {"subject": "s", "text": "t"}}))
        .await;
    let (status, n) = app.action(&format!("/v1/notifications/{id}/cancel")).await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["status"], "cancelled");
    assert!(n["deliveries"].as_array().unwrap().iter().all(|d| d["status"] == "cancelled"));
    assert_eq!(actions(&n), vec!["accepted", "cancelled"]);
    assert!(n["events"][1]["actor"].as_str().unwrap().starts_with("api_key:"));
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 0);

    let (status, problem) = app.action(&format!("/v1/notifications/{id}/cancel")).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("nothing_to_cancel")));
    let (status, _) = app.action(&format!("/v1/notifications/{}/cancel", Uuid::now_v7())).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_message_already_published_for_a_cancelled_delivery_is_dropped() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let id = app.accept(&email("a@example.com")).await;
    eventually("the message published", || async { (app.env.store.outbox_len().await.unwrap() == 0).then_some(()) })
        .await;
    let (status, _) = app.action(&format!("/v1/notifications/{id}/cancel")).await;
    assert_eq!(status, 200);

    let _worker = app.start_worker(Channel::Email, WorkerOptions { prefetch: 1, ..Default::default() }).await;
    let marker = app.accept(&email("marker@example.com")).await;
    app.wait_for_status(marker, "sent").await;
    let n = app.get(id).await;
    assert_eq!(n["status"], "cancelled");
    assert_eq!(app.sends_of(Channel::Email, n["deliveries"][0]["id"].as_str().unwrap()), 0);
}

#[tokio::test]
async fn a_sent_notification_cannot_be_cancelled() {
    let (app, _services) = TestApp::spawn().await;
    let id = app.accept(&email("a@example.com")).await;
    app.wait_for_status(id, "sent").await;
    let (status, problem) = app.action(&format!("/v1/notifications/{id}/cancel")).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("nothing_to_cancel")));
    assert_eq!(app.get(id).await["status"], "sent");
}

#[tokio::test]
async fn a_failed_delivery_can_be_retried() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let fails_once =
        SandboxConfig { failure_kind: SandboxFailure::Permanent, fail_first_attempts: 1, ..Default::default() };
    let _worker = app.start_worker(Channel::Email, WorkerOptions { sandbox: fails_once, ..Default::default() }).await;
    let id = app.accept(&email("a@example.com")).await;
    let failed = app.wait_for_status(id, "failed").await;
    let delivery = failed["deliveries"][0]["id"].as_str().unwrap().to_owned();

    let (status, n) = app.action(&format!("/v1/deliveries/{delivery}/retry")).await;
    assert_eq!(status, 202, "{n}");
    assert_eq!(n["status"], "processing");
    let sent = app.wait_for_status(id, "sent").await;
    let d = &sent["deliveries"][0];
    assert_eq!(d["attempt_count"], 2);
    let outcomes: Vec<&str> =
        d["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["permanent", "sent"]);
    assert_eq!(actions(&sent), vec!["accepted", "retried"]);
    assert_eq!(sent["events"][1]["delivery_id"], d["id"]);

    let (status, problem) = app.action(&format!("/v1/deliveries/{delivery}/retry")).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("not_retryable")));
    let (status, _) = app.action(&format!("/v1/deliveries/{}/retry", Uuid::now_v7())).await;
    assert_eq!(status, 404);
}
