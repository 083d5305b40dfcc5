//! The push worker: its claim reads a push delivery's device as registered now, a device
//! the provider reports gone is removed in the transaction that records the outcome (with
//! its audit event), a device removed since the accept fails the delivery without a
//! provider call, and the worker serves its metrics.
//!
//! The deliveries are written with SQL here, as the accept's fan-out to devices would
//! write them (recipient = the device's id, the subscriber named), so these tests hold
//! whatever the accept and the device routes do.

use std::time::Duration;

use domain::{Channel, DeliveryMessage, SendFailure};
use serde_json::{Value, json};
use store::{AttemptRecord, AttemptResult, Claim, Lease};
use uuid::Uuid;
use worker::{SandboxConfig, SandboxFailure};

use crate::harness::{TestApp, WorkerOptions, eventually};

const TOKEN: &str = "fcm-registration-token:APA91bTestOnly";

/// Registers `device_id` of `subscriber` (made if missing) on FCM with `token`, as the
/// device routes store it.
pub async fn register(app: &TestApp, subscriber: &str, device_id: &str, token: &str) {
    sqlx::query("INSERT INTO subscribers (tenant_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(app.tenant_id)
        .bind(subscriber)
        .execute(app.env.store.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO devices (tenant_id, subscriber_id, device_id, platform, token, token_hash, app)
         VALUES ($1, $2, $3, 'fcm', $4, sha256(convert_to('fcm:' || $4, 'UTF8')), 'notify-tests')
         ON CONFLICT (tenant_id, subscriber_id, device_id)
         DO UPDATE SET token = EXCLUDED.token, token_hash = EXCLUDED.token_hash, updated_at = now()",
    )
    .bind(app.tenant_id)
    .bind(subscriber)
    .bind(device_id)
    .bind(token)
    .execute(app.env.store.pool())
    .await
    .unwrap();
}

/// A push notification with one delivery to `device_id` of `subscriber`, due now in the
/// outbox; returns its message (attempt 1).
pub async fn push_delivery(app: &TestApp, subscriber: &str, device_id: &str) -> DeliveryMessage {
    let (notification_id, delivery_id) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "WITH n AS (
            INSERT INTO notifications (id, tenant_id, type, priority, delivery_count, content)
            VALUES ($2, $1, 'push.test', 'high', 1, '{\"title\": \"Hi\", \"body\": \"Hello by push\"}')),
         d AS (
            INSERT INTO deliveries (id, tenant_id, notification_id, channel, recipient, subscriber_id)
            VALUES ($3, $1, $2, 'push', $4, $5))
         INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority)
         VALUES ($1, $2, $3, 'push', 1, 1)",
    )
    .bind(app.tenant_id)
    .bind(notification_id)
    .bind(delivery_id)
    .bind(device_id)
    .bind(subscriber)
    .execute(app.env.store.pool())
    .await
    .unwrap();
    DeliveryMessage {
        v: 1,
        delivery_id,
        notification_id,
        tenant_id: app.tenant_id,
        channel: Channel::Push,
        attempt: 1,
        traceparent: None,
    }
}

async fn claim(app: &TestApp, msg: &DeliveryMessage) -> (Box<domain::DeliveryJob>, Lease) {
    let lease = Lease::new(Duration::from_secs(60));
    match app.env.store.claim_delivery(msg, lease).await.unwrap() {
        Claim::Claimed(job, _) => (job, lease),
        other => panic!("not claimed: {other:?}"),
    }
}

fn failed(failure: SendFailure) -> AttemptRecord {
    AttemptRecord {
        provider: "fcm".into(),
        integration: false,
        traceparent: None,
        started_at: time::OffsetDateTime::now_utc(),
        latency_ms: 5,
        result: AttemptResult::Failed { failure },
    }
}

async fn devices(app: &TestApp, subscriber: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT device_id, token FROM devices WHERE tenant_id = $1 AND subscriber_id = $2 ORDER BY 1")
        .bind(app.tenant_id)
        .bind(subscriber)
        .fetch_all(app.env.store.pool())
        .await
        .unwrap()
}

/// The `device_removed` audit events: (subscriber, delivery, notification, actor, detail).
async fn removals(app: &TestApp) -> Vec<(Option<String>, Option<Uuid>, Option<Uuid>, String, Value)> {
    sqlx::query_as(
        "SELECT subscriber_id, delivery_id, notification_id, actor, detail FROM audit_events
         WHERE tenant_id = $1 AND action = 'device_removed' ORDER BY id",
    )
    .bind(app.tenant_id)
    .fetch_all(app.env.store.pool())
    .await
    .unwrap()
}

/// Status and last error code of a delivery.
async fn delivery(app: &TestApp, id: Uuid) -> (String, Option<String>) {
    sqlx::query_as("SELECT status, last_error_code FROM deliveries WHERE id = $1")
        .bind(id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_claim_reads_the_device_as_registered_now() {
    let app = TestApp::api_only().await;
    register(&app, "u-1", "phone", "old-token").await;
    let msg = push_delivery(&app, "u-1", "phone").await;
    // The app refreshed its token after the accept: the claim reads the new one.
    register(&app, "u-1", "phone", TOKEN).await;
    let (job, _) = claim(&app, &msg).await;
    let device = job.device.as_ref().expect("the claim reads the device");
    assert_eq!(
        (device.id.as_str(), device.platform, device.token.as_str(), device.app.as_deref()),
        ("phone", domain::push::Platform::Fcm, TOKEN, Some("notify-tests"))
    );

    // Another subscriber's device of the same id is not this delivery's; a removed device
    // reads as none.
    register(&app, "u-2", "tablet", "u2-token").await;
    let other = push_delivery(&app, "u-1", "tablet").await;
    assert!(claim(&app, &other).await.0.device.is_none());
}

#[tokio::test]
async fn a_device_reported_gone_is_removed_with_the_record_unless_its_token_changed() {
    let app = TestApp::api_only().await;
    register(&app, "u-1", "phone", TOKEN).await;
    register(&app, "u-1", "tablet", "tablet-token").await;

    let msg = push_delivery(&app, "u-1", "phone").await;
    let (job, lease) = claim(&app, &msg).await;
    let record = failed(SendFailure::gone("UNREGISTERED", "the registration token is not registered"));
    assert!(app.env.store.record_attempt(&job, lease, &record).await.unwrap());
    assert_eq!(delivery(&app, msg.delivery_id).await, ("failed".into(), Some("UNREGISTERED".into())));
    assert_eq!(devices(&app, "u-1").await, [("tablet".to_owned(), "tablet-token".to_owned())]);
    let events = removals(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let (subscriber, delivery_id, notification_id, actor, detail) = &events[0];
    assert_eq!(
        (subscriber.as_deref(), *delivery_id, *notification_id, actor.as_str()),
        (Some("u-1"), Some(msg.delivery_id), Some(msg.notification_id), "worker")
    );
    assert_eq!(detail, &json!({"device_id": "phone", "platform": "fcm", "reason": "gone", "code": "UNREGISTERED"}));
    assert!(!detail.to_string().contains(TOKEN));

    // The app registered a new token for the tablet while the attempt with the old one was
    // under way: the new one is kept.
    let msg = push_delivery(&app, "u-1", "tablet").await;
    let (job, lease) = claim(&app, &msg).await;
    register(&app, "u-1", "tablet", "tablet-token-2").await;
    assert!(app.env.store.record_attempt(&job, lease, &record).await.unwrap());
    assert_eq!(devices(&app, "u-1").await, [("tablet".to_owned(), "tablet-token-2".to_owned())]);
    assert_eq!(removals(&app).await.len(), 1);

    // A permanent failure that is not `gone` keeps the device.
    let msg = push_delivery(&app, "u-1", "tablet").await;
    let (job, lease) = claim(&app, &msg).await;
    let record = failed(SendFailure::new(domain::FailureKind::Permanent, "INVALID_ARGUMENT", "bad payload"));
    assert!(app.env.store.record_attempt(&job, lease, &record).await.unwrap());
    assert_eq!(devices(&app, "u-1").await.len(), 1);
    assert_eq!(removals(&app).await.len(), 1);
}

/// The API, a relay and a push worker with `sandbox` settings, serving its metrics on
/// `listen`.
async fn with_push_worker(
    sandbox: SandboxConfig,
    listen: Option<std::net::SocketAddr>,
) -> (TestApp, Vec<crate::harness::Service>) {
    let app = TestApp::api_with_broker(|_| {}).await;
    let (conn, _) = app.amqp().await;
    let _ = conn.close(200, "declared".into()).await;
    let relay = app.start_relay(500).await;
    let worker = app.start_worker(Channel::Push, WorkerOptions { sandbox, listen, ..Default::default() }).await;
    (app, vec![relay, worker])
}

#[tokio::test]
async fn a_push_worker_sends_to_the_device_and_a_device_gone_is_removed_end_to_end() {
    let gone = SandboxConfig { failure_kind: SandboxFailure::Gone, fail_first_attempts: 1, ..Default::default() };
    let (app, mut services) = with_push_worker(gone, None).await;
    register(&app, "u-1", "phone", TOKEN).await;
    let first = push_delivery(&app, "u-1", "phone").await;
    eventually("the gone device's delivery failed", || async {
        let state = delivery(&app, first.delivery_id).await;
        (state.0 == "failed").then_some(state)
    })
    .await;
    assert_eq!(delivery(&app, first.delivery_id).await.1.as_deref(), Some("sandbox_gone"));
    assert!(devices(&app, "u-1").await.is_empty());
    assert_eq!(removals(&app).await[0].4["code"], "sandbox_gone");
    // One attempt: a gone device is not retried.
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts WHERE delivery_id = $1")
        .bind(first.delivery_id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 1);

    // Registered again, the device gets the next one (from a worker whose sandbox sends),
    // and the sandbox records which device it went to, never the token.
    services.pop().unwrap().stop().await;
    services.push(app.start_worker(Channel::Push, WorkerOptions::default()).await);
    register(&app, "u-1", "phone", TOKEN).await;
    let second = push_delivery(&app, "u-1", "phone").await;
    let sent = app.wait_for_status(second.notification_id, "sent").await;
    assert_eq!(sent["deliveries"][0]["recipient"], "phone");
    let lines = app.sandbox_messages(Channel::Push);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["device"], json!({"id": "phone", "platform": "fcm", "app": "notify-tests"}));
    assert_eq!(lines[0]["content"]["body"], "Hello by push");
    let file = std::fs::read_to_string(app.sandbox_file(Channel::Push)).unwrap();
    assert!(!file.contains(TOKEN), "{file}");
}

#[tokio::test]
async fn a_device_removed_since_the_accept_fails_the_delivery_without_a_provider_call() {
    let (app, _services) = with_push_worker(SandboxConfig::default(), None).await;
    register(&app, "u-1", "phone", TOKEN).await;
    let msg = push_delivery(&app, "u-1", "gone-phone").await;
    let failed = app.wait_for_status(msg.notification_id, "failed").await;
    let delivery = &failed["deliveries"][0];
    assert_eq!(delivery["status"], "failed", "{failed:#}");
    assert_eq!(delivery["last_error_code"], "device_removed", "{failed:#}");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{failed:#}");
    assert_eq!(attempts[0]["provider"], "none");
    assert!(app.sandbox_messages(Channel::Push).is_empty());
    // Its neighbour is untouched.
    assert_eq!(devices(&app, "u-1").await.len(), 1);
}

#[tokio::test]
async fn the_push_worker_serves_metrics_that_move_with_a_push() {
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (app, _services) = with_push_worker(SandboxConfig::default(), Some(listen)).await;
    register(&app, "u-1", "phone", TOKEN).await;
    let msg = push_delivery(&app, "u-1", "phone").await;
    app.wait_for_status(msg.notification_id, "sent").await;
    let text = reqwest::get(format!("http://{listen}/metrics")).await.unwrap().text().await.unwrap();
    let counter = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} in\n{text}"))
    };
    assert!(counter(r#"notify_delivery_attempts_total{channel="push",provider="sandbox",outcome="sent"}"#) >= 1.0);
    assert!(counter(r#"notify_accept_to_sent_seconds_count{channel="push"}"#) >= 1.0);
    let ready = reqwest::get(format!("http://{listen}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
}
