//! The API publishes the single notifications it accepts right after the commit (a batch
//! is the relays'); what it could not publish is published by a relay once its outbox row
//! falls due.

use std::time::Duration;

use domain::Channel;
use notify_api::HandOffSettings;
use serde_json::json;

use crate::harness::{TestApp, WorkerOptions, email, eventually};

#[tokio::test]
async fn an_api_with_a_broker_delivers_a_single_notification_without_a_relay_and_leaves_no_outbox_row() {
    let app = TestApp::api_with_broker(|_| {}).await;
    let (conn, _) = app.amqp().await;
    let _ = conn.close(200, "declared".into()).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;

    let single = app.accept(&email("ada@example.com")).await;
    app.wait_for_status(single, "sent").await;
    eventually("the published row deleted from the outbox", || async {
        (app.env.store.outbox_len().await.unwrap() == 0).then_some(())
    })
    .await;

    // A batch (of more than one) is the relays' to publish: it waits for one.
    let items = json!({"notifications": [email("grace@example.com"), email("alan@example.com")]});
    let (status, batch) = app.call("POST", "/v1/notifications/batch", Some(&items)).await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 2, "the batch's rows wait for a relay");
    let _relay = app.start_relay(100).await;
    for result in batch["results"].as_array().unwrap() {
        app.wait_for_status(result["notification"]["id"].as_str().unwrap().parse().unwrap(), "sent").await;
    }
    for id in app.delivery_ids().await {
        assert_eq!(app.sends_of(Channel::Email, &id), 1, "delivery {id}");
    }
}

#[tokio::test]
async fn what_the_api_cannot_publish_a_relay_publishes_once_it_falls_due() {
    let grace = Duration::from_secs(2);
    // A broker nobody listens on: the API's publish fails, as when it dies after the commit.
    let app = TestApp::api_with(|config| {
        config.amqp_url = Some(bootstrap::SecretString::from("amqp://guest:guest@127.0.0.1:1/%2f"));
        config.hand_off = HandOffSettings { grace, confirm_timeout: Duration::from_secs(1), ..Default::default() };
    })
    .await;
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;

    let accepted_at = time::OffsetDateTime::now_utc();
    let id = app.accept(&email("ada@example.com")).await;
    let n = app.wait_for_status(id, "sent").await;
    let attempt = &n["deliveries"][0]["attempts"][0];
    let started = time::OffsetDateTime::parse(
        attempt["started_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(started - accepted_at >= grace, "sent {} after the accept, before its row fell due", started - accepted_at);
    assert_eq!(app.sends_of(Channel::Email, n["deliveries"][0]["id"].as_str().unwrap()), 1);
}

#[tokio::test]
async fn a_notification_larger_than_the_hand_off_takes_leaves_the_rest_to_the_relays_at_once() {
    // The hand-off publishes at most `max_ready` deliveries of a notification; a broadcast's
    // others are written due now, so the relays send them without waiting out the grace.
    let app = TestApp::api_with_broker(|c| c.hand_off.max_ready = 3).await;
    let (conn, _) = app.amqp().await;
    let _ = conn.close(200, "declared".into()).await;
    let to: Vec<_> = (0..5).map(|i| json!({"email": format!("user{i}@example.com")})).collect();
    let mut body = email("unused@example.com");
    body["to"] = to.into();
    let accepted_at = time::OffsetDateTime::now_utc();
    let id = app.accept(&body).await;

    let (due_now, later): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE available_at <= now()), count(*) FILTER (WHERE available_at > now()) FROM outbox",
    )
    .fetch_one(app.env.store.pool())
    .await
    .unwrap();
    assert_eq!(due_now, 2, "the two beyond the hand-off's three are due at once");
    assert!(later <= 3, "only the handed-off rows wait out the grace ({later})");

    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    let n = app.wait_for_status(id, "sent").await;
    let grace = HandOffSettings::default().grace;
    for delivery in n["deliveries"].as_array().unwrap() {
        let started = time::OffsetDateTime::parse(
            delivery["attempts"][0]["started_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            started - accepted_at < grace,
            "sent {} after the accept: it waited out the grace",
            started - accepted_at
        );
        assert_eq!(app.sends_of(Channel::Email, delivery["id"].as_str().unwrap()), 1);
    }
}
