//! Relays and workers that die mid-batch lose nothing; several relays share the outbox.

use std::time::Duration;

use domain::Channel;
use worker::SandboxConfig;

use crate::harness::{TestApp, WorkerOptions, eventually};

#[tokio::test]
async fn killing_a_relay_mid_batch_loses_nothing() {
    let app = TestApp::api_only().await;
    app.accept_many(200).await;
    let doomed = app.start_relay(10).await;
    eventually("the first relay to publish some batches", || async {
        (app.env.store.outbox_len().await.unwrap() < 200).then_some(())
    })
    .await;
    doomed.kill().await;

    let _relay = app.start_relay(10).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    app.wait_all_sent().await;
    // A batch published but not committed is published again; the worker drops the
    // duplicates, so each delivery was sent exactly once.
    for id in app.delivery_ids().await {
        assert_eq!(app.sends_of(Channel::Email, &id), 1, "delivery {id}");
    }
}

#[tokio::test]
async fn killing_a_worker_mid_batch_loses_nothing() {
    let app = TestApp::api_only().await;
    // The sweeper takes over what the dead worker held once its short lease runs out.
    let sweeping = outbox_relay::RelaySettings { sweep_interval: Duration::from_millis(100), ..Default::default() };
    let _relay = app.start_relay_with(sweeping).await;
    let slow = SandboxConfig { latency: Duration::from_millis(20), ..Default::default() };
    let short_lease = WorkerOptions {
        prefetch: 10,
        sandbox: slow,
        lease: Duration::from_millis(500),
        provider_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let doomed = app.start_worker(Channel::Email, short_lease).await;
    app.accept_many(100).await;
    eventually("some deliveries sent by the first worker", || async {
        (app.sent_and_total().await.0 >= 10).then_some(())
    })
    .await;
    doomed.kill().await;

    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    app.wait_all_sent().await;
    for id in app.delivery_ids().await {
        // At least once: a send cut off before its outcome was recorded is sent again.
        assert!(app.sends_of(Channel::Email, &id) >= 1, "delivery {id}");
    }
    let (sent, total) = app.sent_and_total().await;
    assert_eq!((sent, total), (100, 100));
}

#[tokio::test]
async fn two_relays_publish_every_row_once() {
    let app = TestApp::api_only().await;
    app.accept_many(300).await;
    let _a = app.start_relay(20).await;
    let _b = app.start_relay(20).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    app.wait_all_sent().await;
    for id in app.delivery_ids().await {
        assert_eq!(app.sends_of(Channel::Email, &id), 1, "delivery {id}");
    }
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn urgent_work_is_claimed_before_a_backlog() {
    let app = TestApp::api_only().await;
    app.accept_many(30).await;
    let mut urgent = crate::harness::email("vip@example.com");
    urgent["priority"] = "urgent".into();
    let urgent = app.accept(&urgent).await;
    let batch = app.env.store.claim_outbox(10, &[(domain::Route::Channel(Channel::Email), 100)]).await.unwrap();
    let domain::OutboxMessage::Delivery(first) = &batch.messages[0] else { panic!("a delivery") };
    assert_eq!(first.notification_id, urgent);
    assert_eq!(batch.messages.len(), 10);
}

#[tokio::test]
async fn relay_and_worker_reconnect_after_the_broker_drops_them() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    let first = app.accept(&crate::harness::email("a@example.com")).await;
    app.wait_for_status(first, "sent").await;

    let closed = app.close_broker_connections().await;
    assert!(closed >= 2, "relay and worker were connected");
    let second = app.accept(&crate::harness::email("b@example.com")).await;
    app.wait_for_status(second, "sent").await;
}

#[tokio::test]
async fn a_worker_stopped_gracefully_finishes_what_it_holds() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let slow = SandboxConfig { latency: Duration::from_millis(300), ..Default::default() };
    let stopping =
        app.start_worker(Channel::Email, WorkerOptions { prefetch: 10, sandbox: slow, ..Default::default() }).await;
    app.accept_many(10).await;
    eventually("deliveries in flight", || async {
        let (sending,): (i64,) = sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'sending'")
            .fetch_one(app.env.store.pool())
            .await
            .unwrap();
        (sending > 0).then_some(())
    })
    .await;
    stopping.stop().await;

    // What was in flight was sent, recorded and acked, not handed back to the broker.
    let _next = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    app.wait_all_sent().await;
    for id in app.delivery_ids().await {
        assert_eq!(app.sends_of(Channel::Email, &id), 1, "delivery {id}");
    }
}

#[tokio::test]
async fn the_relay_reports_readiness_on_its_side_port() {
    let app = TestApp::api_only().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _relay = app
        .start_relay_with(outbox_relay::RelaySettings {
            listen: Some(([127, 0, 0, 1], port).into()),
            ..Default::default()
        })
        .await;
    let ready: serde_json::Value = eventually("the relay to be ready", || async {
        let r = app.http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.ok()?;
        if r.status() == 200 { r.json().await.ok() } else { None }
    })
    .await;
    assert_eq!(ready, serde_json::json!({"database": true, "broker": true}));
    let health = app.http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    app.accept(&crate::harness::email("a@example.com")).await;
    let metrics = eventually("the publish to be counted", || async {
        let text = app.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?.text().await.ok()?;
        text.lines().any(|l| l.starts_with("notify_outbox_published_total ") && !l.ends_with(" 0")).then_some(text)
    })
    .await;
    assert!(metrics.contains("# TYPE notify_outbox_lag_seconds gauge"), "{metrics}");
}
