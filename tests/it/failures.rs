//! Provider failures: retried with backoff while the policy allows, failed at once when
//! permanent, and every attempt recorded.

use domain::Channel;
use serde_json::json;
use worker::{SandboxConfig, SandboxFailure};

use crate::harness::{TestApp, WorkerOptions, email, fast_retry};

fn failing(kind: SandboxFailure, rate: f64, first: u32) -> SandboxConfig {
    SandboxConfig { failure_kind: kind, failure_rate: rate, fail_first_attempts: first, ..Default::default() }
}

#[tokio::test]
async fn a_retryable_failure_is_retried_and_then_sent() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app
        .start_worker(
            Channel::Email,
            WorkerOptions { sandbox: failing(SandboxFailure::Retryable, 0.0, 1), ..Default::default() },
        )
        .await;
    let id = app.accept(&email("a@example.com")).await;
    let n = app.wait_for_status(id, "sent").await;
    let d = &n["deliveries"][0];
    assert_eq!(d["status"], "sent");
    assert_eq!(d["attempt_count"], 2);
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!((&attempts[0]["number"], &attempts[0]["outcome"]), (&json!(1), &json!("retryable")));
    assert_eq!(attempts[0]["error_code"], "sandbox_retryable");
    assert_eq!((&attempts[1]["number"], &attempts[1]["outcome"]), (&json!(2), &json!("sent")));
    assert_eq!(app.sends_of(Channel::Email, d["id"].as_str().unwrap()), 1);
}

#[tokio::test]
async fn retries_run_out_and_the_delivery_fails() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app
        .start_worker(
            Channel::Sms,
            WorkerOptions {
                retry: fast_retry(3),
                sandbox: failing(SandboxFailure::Retryable, 1.0, 0),
                ..Default::default()
            },
        )
        .await;
    let id = app.accept(&json!({"type": "t", "to": [{"phone": "+15551234567"}], "content": {"text": "hi"}})).await;
    let n = app.wait_for_status(id, "failed").await;
    let d = &n["deliveries"][0];
    assert_eq!(d["status"], "failed");
    assert_eq!(d["attempt_count"], 3);
    assert_eq!(d["last_error_code"], "sandbox_retryable");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 3);
    assert!(d["attempts"].as_array().unwrap().iter().all(|a| a["outcome"] == "retryable"));
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 0, "no retry is left scheduled");
}

#[tokio::test]
async fn a_permanent_failure_fails_after_one_attempt() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app
        .start_worker(
            Channel::Whatsapp,
            WorkerOptions { sandbox: failing(SandboxFailure::Permanent, 1.0, 0), ..Default::default() },
        )
        .await;
    let id = app.accept(&json!({"type": "t", "to": [{"whatsapp": "+15551234567"}], "content": {"text": "hi"}})).await;
    let n = app.wait_for_status(id, "failed").await;
    let d = &n["deliveries"][0];
    assert_eq!((d["status"].as_str(), d["attempt_count"].as_i64()), (Some("failed"), Some(1)));
    assert_eq!(d["attempts"][0]["outcome"], "permanent");
    assert_eq!(d["last_error_code"], "sandbox_permanent");
}

#[tokio::test]
async fn some_sent_and_some_failed_is_partial() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _email = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    let _sms = app
        .start_worker(
            Channel::Sms,
            WorkerOptions { sandbox: failing(SandboxFailure::Permanent, 1.0, 0), ..Default::default() },
        )
        .await;
    let id = app
        .accept(&json!({"type": "t", "to": [{"email": "a@example.com", "phone": "+15551234567"}],
            "content": {"subject": "s", "text": "hi"}}))
        .await;
    let n = app.wait_for_status(id, "partial").await;
    let statuses: Vec<_> = n["deliveries"].as_array().unwrap().iter().map(|d| d["status"].clone()).collect();
    assert_eq!(statuses, vec![json!("sent"), json!("failed")]);
}

#[tokio::test]
async fn a_configuration_error_pauses_the_provider_and_shows_in_readiness() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _worker = app
        .start_worker(
            Channel::Email,
            WorkerOptions {
                sandbox: failing(SandboxFailure::Config, 1.0, 0),
                listen: Some(([127, 0, 0, 1], port).into()),
                ..Default::default()
            },
        )
        .await;
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    crate::harness::eventually("the worker to be ready", || async {
        let r = app.http.get(&readyz).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let first = app.accept(&email("a@example.com")).await;
    let (status, body) = crate::harness::eventually("the first attempt recorded", || async {
        let n = app.get(first).await;
        n["deliveries"][0]["attempts"].as_array().filter(|a| !a.is_empty())?;
        let r = app.http.get(&readyz).send().await.unwrap();
        Some((r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap()))
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["paused_providers"], json!(["sandbox"]));

    // Not failed: its retry is queued and held while the provider is paused, not attempted.
    crate::harness::eventually("the retry to be published", || async {
        (app.env.store.outbox_len().await.unwrap() == 0).then_some(())
    })
    .await;
    let n = app.get(first).await;
    let d = &n["deliveries"][0];
    assert_eq!(d["attempts"][0]["outcome"], "config");
    assert!(d["status"] == "queued" || d["status"] == "retrying", "{d:#}");
    assert_eq!(d["attempt_count"], 1);
    let metrics = app.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"notify_delivery_attempts_total{channel="email",provider="sandbox",outcome="retrying"}"#),
        "{metrics}"
    );
}
