//! Publishing to the channels' queues: a queue that refuses messages holds up only its own
//! channel.

use domain::Channel;
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde_json::{Value, json};

use crate::harness::{Management, TestApp, WorkerOptions, email, eventually};

fn sms(text: &str) -> Value {
    json!({"type": "otp", "to": [{"phone": "+15551230001"}], "content": {"text": text}})
}

/// Sets the `max-length` of `notify.<channel>` in the test's vhost by a policy, as an
/// operator would.
async fn limit_queue(app: &TestApp, channel: Channel, max_length: u32) {
    let vhost = app.env.vhost().await;
    let queue = queue::topology::queue_name(channel);
    let policy = json!({"pattern": format!("^{}$", queue.replace('.', "\\.")), "apply-to": "queues",
                        "definition": {"max-length": max_length}});
    Management::new()
        .request(reqwest::Method::PUT, &format!("/api/policies/{vhost}/limit-{channel}"))
        .json(&policy)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("the management API sets a policy");
}

/// Makes `notify.<channel>` refuse publishes, as a full queue does with its `reject-publish`
/// overflow: its limit is 0 and one message is put in, so it is over its limit.
async fn fill_queue(app: &TestApp, channel: Channel) {
    limit_queue(app, channel, 0).await;
    let queue = queue::topology::queue_name(channel);
    let (_conn, amqp) = app.amqp().await;
    amqp.basic_publish(
        "".into(),
        queue.as_str().into(),
        BasicPublishOptions::default(),
        b"filler",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    eventually("the queue over its limit", || async {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let q = amqp.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await.ok()?;
        (q.message_count() >= 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_queue_that_refuses_messages_holds_up_only_its_own_channel() {
    let app = TestApp::api_only().await;
    fill_queue(&app, Channel::Sms).await;
    // The refused rows come first and fill whole batches.
    let mut texts = Vec::new();
    for i in 0..6 {
        texts.push(app.accept(&sms(&format!("code {i}"))).await);
    }
    let mut emails = Vec::new();
    for i in 0..3 {
        emails.push(app.accept(&email(&format!("user{i}@example.com"))).await);
    }
    let _relay = app.start_relay(5).await;
    let _email = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    for id in &emails {
        app.wait_for_status(*id, "sent").await;
    }

    // The text messages wait in the outbox, parked, not dropped and not sent.
    let (parked,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE channel = 'sms'")
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(parked, 6);
    for id in &texts {
        assert_eq!(app.get(*id).await["status"], "pending");
    }

    // Once the queue takes messages again (its limit raised: RabbitMQ 3.10 does not tell
    // publishers a queue takes messages again when its limit is removed), they go.
    limit_queue(&app, Channel::Sms, 1_000).await;
    let _sms = app.start_worker(Channel::Sms, WorkerOptions::default()).await;
    for id in &texts {
        app.wait_for_status(*id, "sent").await;
    }
    for message in app.sandbox_messages(Channel::Sms) {
        assert_eq!(app.sends_of(Channel::Sms, message["delivery_id"].as_str().unwrap()), 1);
    }
}

#[tokio::test]
async fn a_message_the_broker_refuses_leaves_the_api_publishing_the_others() {
    let app = TestApp::api_with_broker(|_| {}).await;
    fill_queue(&app, Channel::Sms).await;
    let _email = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    // One notification, two deliveries handed off together: the email goes at once.
    let both = json!({"type": "t", "to": [{"email": "a@example.com", "phone": "+15551230001"}],
                      "content": {"subject": "s", "text": "t"}});
    let id = app.accept(&both).await;
    eventually("the email sent without a relay", || async {
        let n = app.get(id).await;
        let statuses: Vec<&str> = n["deliveries"].as_array()?.iter().filter_map(|d| d["status"].as_str()).collect();
        statuses.contains(&"sent").then_some(())
    })
    .await;
    // The text message's row stays for the relays.
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE channel = 'sms'")
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    eventually("the email's row deleted", || async { (app.env.store.outbox_len().await.ok()? == 1).then_some(()) })
        .await;
}

#[tokio::test]
async fn an_urgent_notification_overtakes_a_backlog_of_normal_ones() {
    const MAX_READY: u32 = 10;
    let app = TestApp::api_with_broker(|c| c.hand_off.max_ready = MAX_READY).await;
    let (conn, _) = app.amqp().await;
    let _ = conn.close(200, "declared".into()).await;
    let _relay = app.start_relay_with(outbox_relay::RelaySettings { max_ready: MAX_READY, ..Default::default() }).await;
    // A backlog of 1,000 normal emails, queued with no worker to take them.
    let items: Vec<Value> = (0..1_000).map(|i| email(&format!("user{i}@example.com"))).collect();
    let (status, batch) = app.call("POST", "/v1/notifications/batch", Some(&json!({"notifications": items}))).await;
    assert_eq!(status, 200, "{batch}");
    eventually("the relay to have published what the queue takes", || async {
        (app.env.store.outbox_len().await.ok()? <= 1_000 - i64::from(MAX_READY)).then_some(())
    })
    .await;
    // Then an urgent one, handed off by the API.
    let mut otp = email("vip@example.com");
    otp["priority"] = "urgent".into();
    let urgent = app.accept(&otp).await;

    let _worker = app.start_worker(Channel::Email, WorkerOptions { prefetch: 1, ..Default::default() }).await;
    let sent = app.wait_for_status(urgent, "sent").await;
    let delivery = sent["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let position = app
        .sandbox_messages(Channel::Email)
        .iter()
        .position(|m| m["delivery_id"] == delivery.as_str())
        .expect("the sandbox recorded the urgent email");
    // Behind at most what the queue held ready, and what the worker had taken.
    assert!(position <= MAX_READY as usize + 2, "the urgent email was sent after {position} others");
}

#[tokio::test]
async fn a_backlog_behind_a_full_queue_moves_as_the_workers_take_messages() {
    // The relay polls only once a minute: a backlog that waited for the poll would not be
    // sent within the deadline. It is rechecked soon after a full queue held rows back.
    const MAX_READY: u32 = 10;
    let app = TestApp::api_with_broker(|c| c.hand_off.max_ready = MAX_READY).await;
    let _relay = app
        .start_relay_with(outbox_relay::RelaySettings {
            max_ready: MAX_READY,
            poll_interval: std::time::Duration::from_secs(60),
            ..Default::default()
        })
        .await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    let items: Vec<Value> = (0..200).map(|i| email(&format!("user{i}@example.com"))).collect();
    let (status, batch) = app.call("POST", "/v1/notifications/batch", Some(&json!({"notifications": items}))).await;
    assert_eq!(status, 200, "{batch}");
    eventually("the whole backlog sent", || async {
        (app.sandbox_messages(Channel::Email).len() == 200).then_some(())
    })
    .await;
}
