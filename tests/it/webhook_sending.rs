//! Outbound webhooks, the sending side: the relay carries each event's message to
//! `notify.webhooks`, the webhook-worker posts it signed to the tenant's receiver (a
//! wiremock stand-in on loopback), retries it on the schedule, logs every attempt, and
//! disables an endpoint that is gone or failing for too long.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use time::OffsetDateTime;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

use crate::harness::{Service, TestApp, WorkerOptions, email, eventually};

/// A receiver that answers its requests with `answers` in turn (the last one from then
/// on) and keeps each request with when it came.
struct Receiver {
    server: MockServer,
    seen: Arc<Mutex<Vec<(Instant, Request)>>>,
}

struct Answers {
    answers: Vec<ResponseTemplate>,
    seen: Arc<Mutex<Vec<(Instant, Request)>>>,
}

impl Respond for Answers {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut seen = self.seen.lock().unwrap();
        let answer = self.answers[seen.len().min(self.answers.len() - 1)].clone();
        seen.push((Instant::now(), request.clone()));
        answer
    }
}

impl Receiver {
    async fn answering(answers: Vec<ResponseTemplate>) -> Self {
        let server = MockServer::start().await;
        let seen = Arc::default();
        Mock::given(method("POST")).respond_with(Answers { answers, seen: Arc::clone(&seen) }).mount(&server).await;
        Self { server, seen }
    }

    fn url(&self) -> String {
        format!("{}/hooks/notify", self.server.uri())
    }

    fn requests(&self) -> Vec<(Instant, Request)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` requests came; returns them in order.
    async fn wait_for(&self, n: usize) -> Vec<Request> {
        eventually(&format!("{n} requests at the receiver"), || async {
            let seen = self.requests();
            (seen.len() >= n).then(|| seen.into_iter().map(|(_, r)| r).collect())
        })
        .await
    }
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

/// The API (taking http endpoints), a relay and a webhook-worker with `configure` applied.
async fn platform(configure: impl FnOnce(&mut worker::webhooks::WebhookWorkerConfig)) -> (TestApp, Vec<Service>) {
    let app = TestApp::api_with_broker(|c| c.webhooks.allow_http = true).await;
    let (conn, _) = app.amqp().await;
    let _ = conn.close(200, "declared".into()).await;
    let services = vec![app.start_relay(100).await, app.start_webhook_worker(configure).await];
    (app, services)
}

/// Creates an endpoint; its id and secret.
async fn endpoint(app: &TestApp, body: Value) -> (String, String) {
    let (status, created) = app.call("POST", "/v1/webhooks", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

async fn attempts(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, page) = app.call("GET", &format!("/v1/webhooks/{id}/attempts"), None).await;
    assert_eq!(status, 200, "{page}");
    page["attempts"].as_array().unwrap().clone()
}

async fn test_event(app: &TestApp, id: &str) -> Value {
    let (status, sent) = app.call("POST", &format!("/v1/webhooks/{id}/test"), None).await;
    assert_eq!(status, 202, "{sent}");
    sent
}

/// Verifies `request` with the Standard Webhooks reference library and `secret`.
fn verify(secret: &str, request: &Request) {
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    verifier.verify(&request.body, &request.headers).expect("the signature verifies with the endpoint's secret");
}

#[tokio::test]
async fn a_sent_delivery_reaches_the_endpoint_signed_and_its_attempt_is_listed() {
    let (app, _services) = platform(|_| {}).await;
    let _email = app.start_worker(domain::Channel::Email, WorkerOptions::default()).await;
    let plain = Receiver::answering(vec![ResponseTemplate::new(200).set_body_string("thanks")]).await;
    let with_addresses = Receiver::answering(vec![ResponseTemplate::new(204)]).await;
    let (plain_id, secret) = endpoint(&app, json!({"url": plain.url(), "events": ["delivery.sent"]})).await;
    let (with_id, _) =
        endpoint(&app, json!({"url": with_addresses.url(), "events": ["delivery.sent"], "include_addresses": true}))
            .await;

    let id = app
        .accept(&json!({"type": "order.shipped", "to": [{"email": "ada@example.com"}], "correlation_id": "order-1",
                        "content": {"subject": "Shipped", "text": "On its way"}}))
        .await;
    let request = plain.wait_for(1).await.remove(0);
    verify(&secret, &request);
    let event = body(&request);
    assert_eq!(event["type"], "delivery.sent", "{event}");
    let data = &event["data"];
    assert_eq!(data["notification_id"], id.to_string(), "{event}");
    assert_eq!((data["channel"].as_str(), data["status"].as_str()), (Some("email"), Some("sent")), "{event}");
    assert_eq!(data["correlation_id"], "order-1", "{event}");
    assert!(data["sequence"].is_i64() && data["updated_at"].is_string(), "{event}");
    let text = String::from_utf8_lossy(&request.body);
    assert!(!text.contains("ada@example.com") && !text.contains("On its way"), "no address, no body: {text}");
    let webhook_id = request.headers["webhook-id"].to_str().unwrap().to_owned();
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");

    // The endpoint that takes addresses gets the recipient's, of the same event.
    let request = with_addresses.wait_for(1).await.remove(0);
    assert_eq!(body(&request)["data"]["recipient"], "ada@example.com");
    assert_eq!(request.headers["webhook-id"].to_str().unwrap(), webhook_id);

    let listed = eventually("the attempt listed", || async {
        let listed = attempts(&app, &plain_id).await;
        (!listed.is_empty()).then_some(listed)
    })
    .await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let attempt = &listed[0];
    assert_eq!((attempt["status_code"].as_i64(), attempt["outcome"].as_str()), (Some(200), Some("sent")));
    assert_eq!((attempt["attempt"].as_i64(), attempt["response_excerpt"].as_str()), (Some(1), Some("thanks")));
    assert_eq!(
        (attempt["event_type"].as_str(), attempt["webhook_id"].as_str()),
        (Some("delivery.sent"), Some(webhook_id.as_str()))
    );
    assert!(attempt["next_attempt_at"].is_null());
    assert_eq!(attempts(&app, &with_id).await[0]["status_code"], 204);
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_on_the_schedule_after_its_retry_after_and_then_sent() {
    let (app, _services) = platform(|_| {}).await;
    let receiver = Receiver::answering(vec![
        ResponseTemplate::new(503).insert_header("retry-after", "1").set_body_string("busy"),
        ResponseTemplate::new(500),
        ResponseTemplate::new(200),
    ])
    .await;
    let (id, secret) = endpoint(&app, json!({"url": receiver.url(), "events": ["delivery.failed"]})).await;
    let sent = test_event(&app, &id).await;

    let requests = receiver.wait_for(3).await;
    for request in &requests {
        verify(&secret, request);
        assert_eq!(request.headers["webhook-id"].to_str().unwrap(), sent["webhook_id"].as_str().unwrap());
        assert_eq!(body(request)["type"], "webhook.test", "no filter stops a test");
    }
    let listed = eventually("three attempts listed", || async {
        let listed = attempts(&app, &id).await;
        (listed.len() == 3).then_some(listed)
    })
    .await;
    let summary: Vec<(i64, Option<i64>, &str)> = listed
        .iter()
        .map(|a| (a["attempt"].as_i64().unwrap(), a["status_code"].as_i64(), a["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(summary, [(3, Some(200), "sent"), (2, Some(500), "retryable"), (1, Some(503), "retryable")]);
    // The first retry waited for Retry-After (1 s), not the schedule's 100 ms.
    let time =
        |v: &Value| OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    let first = &listed[2];
    assert_eq!(first["response_excerpt"], "busy");
    let waited = time(&first["next_attempt_at"]) - time(&first["finished_at"]);
    assert!(waited >= time::Duration::milliseconds(990), "{waited}");
    assert!(time(&listed[1]["started_at"]) >= time(&first["next_attempt_at"]));
    assert_eq!(a_message(&app, "sent").await, 3);
}

#[tokio::test]
async fn a_message_out_of_attempts_fails_and_the_endpoint_stays_enabled() {
    let (app, _services) = platform(|c| c.webhooks.retry_schedule = vec![Duration::from_millis(50).into()]).await;
    let receiver = Receiver::answering(vec![ResponseTemplate::new(500)]).await;
    let (id, _) = endpoint(&app, json!({"url": receiver.url()})).await;
    test_event(&app, &id).await;
    receiver.wait_for(2).await;
    assert_eq!(a_message(&app, "failed").await, 2);
    let (_, shown) = app.call("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!((shown["enabled"].as_bool(), shown["failing_since"].is_string()), (Some(true), true), "{shown}");
    assert_eq!(attempts(&app, &id).await[0]["next_attempt_at"], Value::Null);
    assert_eq!(receiver.requests().len(), 2, "two attempts in all");
}

/// The endpoint once it is disabled.
async fn disabled(app: &TestApp, id: &str) -> Value {
    eventually("the endpoint disabled", || async {
        let (_, shown) = app.call("GET", &format!("/v1/webhooks/{id}"), None).await;
        (shown["enabled"] == false).then_some(shown)
    })
    .await
}

/// Waits until a webhook message has `status`; its attempts.
async fn a_message(app: &TestApp, status: &str) -> i32 {
    eventually(&format!("a {status} message"), || async {
        sqlx::query_scalar("SELECT attempts FROM webhook_messages WHERE status = $1 LIMIT 1")
            .bind(status)
            .fetch_optional(app.env.store.pool())
            .await
            .unwrap()
    })
    .await
}

async fn audit_details(app: &TestApp) -> Vec<Value> {
    let rows: Vec<(sqlx::types::Json<Value>,)> =
        sqlx::query_as("SELECT detail FROM audit_events WHERE action = 'webhook_disabled' AND tenant_id = $1")
            .bind(app.tenant_id)
            .fetch_all(app.env.store.pool())
            .await
            .unwrap();
    rows.into_iter().map(|(d,)| d.0).collect()
}

#[tokio::test]
async fn a_410_disables_the_endpoint_with_an_audit_event_and_its_events_are_kept_not_sent() {
    let (app, _services) = platform(|_| {}).await;
    let receiver = Receiver::answering(vec![ResponseTemplate::new(410)]).await;
    let (id, _) = endpoint(&app, json!({"url": receiver.url(), "events": ["notification.accepted"]})).await;
    test_event(&app, &id).await;
    receiver.wait_for(1).await;
    let shown = disabled(&app, &id).await;
    assert_eq!(shown["disabled_reason"], "gone");
    assert_eq!(audit_details(&app).await, [json!({"endpoint_id": id, "reason": "gone", "status_code": 410})]);
    assert_eq!(attempts(&app, &id).await[0]["outcome"], "gone");

    // Events keep being written for a replay; none is sent, and a test is refused.
    app.accept(&email("ada@example.com")).await;
    let events = app.env.store.webhook_events(app.tenant_id).await.unwrap();
    assert!(events.iter().any(|e| e.r#type == "notification.accepted"), "{events:?}");
    let (status, problem) = app.call("POST", &format!("/v1/webhooks/{id}/test"), None).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("endpoint_disabled")), "{problem}");
    let (status, _) =
        app.call("POST", &format!("/v1/webhooks/{id}/replay"), Some(&json!({"since": "2026-01-01T00:00:00Z"}))).await;
    assert_eq!(status, 422, "older than 14 days");
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn an_endpoint_failing_for_longer_than_disable_after_is_disabled() {
    let (app, _services) = platform(|_| {}).await;
    let receiver = Receiver::answering(vec![ResponseTemplate::new(502)]).await;
    let (id, _) = endpoint(&app, json!({"url": receiver.url()})).await;
    // Its streak began six days ago (the default allows five).
    sqlx::query("UPDATE webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1::uuid")
        .bind(&id)
        .execute(app.env.store.pool())
        .await
        .unwrap();
    test_event(&app, &id).await;
    receiver.wait_for(1).await;
    let shown = disabled(&app, &id).await;
    assert_eq!(shown["disabled_reason"], "failing");
    let details = audit_details(&app).await;
    assert_eq!((details.len(), details[0]["reason"].as_str()), (1, Some("failing")), "{details:?}");
    // Its retry is cancelled when it comes: nothing more is sent.
    a_message(&app, "cancelled").await;
    assert_eq!(receiver.requests().len(), 1);

    // Enabled again, it ends the streak and takes events.
    let (status, shown) = app.call("PATCH", &format!("/v1/webhooks/{id}"), Some(&json!({"enabled": true}))).await;
    assert_eq!(
        (status, shown["disabled_reason"].clone(), shown["failing_since"].clone()),
        (200, Value::Null, Value::Null)
    );
}

#[tokio::test]
async fn one_endpoint_gets_at_most_its_concurrency_and_the_rest_wait_without_using_attempts() {
    let (app, _services) = platform(|c| c.webhooks.endpoint_concurrency = 1).await;
    let slow = Duration::from_millis(300);
    let receiver = Receiver::answering(vec![ResponseTemplate::new(200).set_delay(slow)]).await;
    let (id, _) = endpoint(&app, json!({"url": receiver.url()})).await;
    for _ in 0..4 {
        test_event(&app, &id).await;
    }
    receiver.wait_for(4).await;
    let mut came: Vec<Instant> = receiver.requests().into_iter().map(|(at, _)| at).collect();
    came.sort();
    for pair in came.windows(2) {
        // Each came after the one before it was answered (less a little for the clocks).
        assert!(pair[1] - pair[0] >= slow - Duration::from_millis(20), "{:?} apart", pair[1] - pair[0]);
    }
    let listed = eventually("four attempts listed", || async {
        let listed = attempts(&app, &id).await;
        (listed.len() == 4).then_some(listed)
    })
    .await;
    assert!(listed.iter().all(|a| a["attempt"] == 1 && a["outcome"] == "sent"), "{listed:?}");
}

#[tokio::test]
async fn a_url_resolving_to_loopback_is_refused_without_the_allowance() {
    let (app, _services) = platform(|c| c.webhooks.allowed_subnets.clear()).await;
    let receiver = Receiver::answering(vec![ResponseTemplate::new(200)]).await;
    // `localhost` resolves to 127.0.0.1, an internal address.
    let url = receiver.url().replace("127.0.0.1", "localhost");
    let (id, _) = endpoint(&app, json!({"url": url})).await;
    test_event(&app, &id).await;
    let listed = eventually("a refused attempt", || async {
        let listed = attempts(&app, &id).await;
        (!listed.is_empty()).then_some(listed)
    })
    .await;
    assert_eq!((listed[0]["outcome"].as_str(), listed[0]["status_code"].as_i64()), (Some("refused"), None));
    assert!(listed[0]["error"].as_str().unwrap().contains("internal address"), "{listed:?}");
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn a_replay_sends_the_windows_events_again_with_their_ids() {
    let (app, _services) = platform(|_| {}).await;
    let receiver = Receiver::answering(vec![ResponseTemplate::new(200)]).await;
    let (id, _) = endpoint(&app, json!({"url": receiver.url(), "events": ["notification.accepted"]})).await;
    let since = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    for n in 0..2 {
        app.accept(&email(&format!("{n}@example.com"))).await;
    }
    let first: Vec<String> =
        receiver.wait_for(2).await.iter().map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned()).collect();
    let since = since.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (status, replayed) =
        app.call("POST", &format!("/v1/webhooks/{id}/replay"), Some(&json!({"since": since}))).await;
    assert_eq!((status, replayed["replayed"].as_i64()), (202, Some(2)), "{replayed}");
    let mut again: Vec<String> =
        receiver.wait_for(4).await[2..].iter().map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned()).collect();
    let mut first = first;
    first.sort();
    again.sort();
    assert_eq!(first, again, "the same events, by their webhook-id");
}

#[tokio::test]
async fn a_message_lost_from_the_queue_or_with_its_worker_is_recovered_by_the_sweeper() {
    let app = TestApp::api_with_broker(|c| c.webhooks.allow_http = true).await;
    let sweeping = outbox_relay::RelaySettings {
        batch_size: 100,
        sweep_interval: Duration::from_millis(100),
        stranded_after: Duration::from_millis(500),
        ..Default::default()
    };
    let _relay = app.start_relay_with(sweeping).await;
    let receiver = Receiver::answering(vec![ResponseTemplate::new(200)]).await;
    let (id, _) = endpoint(&app, json!({"url": receiver.url()})).await;

    // Lost from the queue: published (its outbox row gone), then purged, with no worker.
    let lost = test_event(&app, &id).await;
    let (_conn, amqp) = app.amqp().await;
    let queue = queue::topology::route_queue_name(domain::Route::Webhooks);
    eventually("the message published", || async {
        let rows: (i64,) = sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(app.env.store.pool()).await.unwrap();
        (rows.0 == 0).then_some(())
    })
    .await;
    let purged = amqp.queue_purge(queue.as_str().into(), lapin::options::QueuePurgeOptions::default()).await.unwrap();
    assert_eq!(purged, 1);
    // Lost with its worker: claimed under a lease that ran out, nothing left to consume.
    let held = test_event(&app, &id).await;
    eventually("the second message published", || async {
        let rows: (i64,) = sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(app.env.store.pool()).await.unwrap();
        (rows.0 == 0).then_some(())
    })
    .await;
    amqp.queue_purge(queue.as_str().into(), lapin::options::QueuePurgeOptions::default()).await.unwrap();
    sqlx::query(
        "UPDATE webhook_messages m SET status = 'sending', claimed_by = gen_random_uuid(),
             lease_until = now() - interval '1 second'
         FROM webhook_events e WHERE e.id = m.event_id AND e.id = $1::uuid",
    )
    .bind(held["event_id"].as_str().unwrap())
    .execute(app.env.store.pool())
    .await
    .unwrap();

    let _worker = app.start_webhook_worker(|_| {}).await;
    let requests = receiver.wait_for(2).await;
    let mut ids: Vec<&str> = requests.iter().map(|r| r.headers["webhook-id"].to_str().unwrap()).collect();
    ids.sort();
    let mut sent = vec![lost["webhook_id"].as_str().unwrap(), held["webhook_id"].as_str().unwrap()];
    sent.sort();
    assert_eq!(ids, sent);
}

#[tokio::test]
async fn a_receiver_that_hangs_does_not_delay_another_endpoints_events() {
    let (app, _services) = platform(|c| {
        c.webhooks.timeout = Duration::from_secs(30);
        c.webhooks.endpoint_concurrency = 2;
        c.worker.lease = Duration::from_secs(60);
    })
    .await;
    let hanging = Receiver::answering(vec![ResponseTemplate::new(200).set_delay(Duration::from_secs(60))]).await;
    let fast = Receiver::answering(vec![ResponseTemplate::new(200)]).await;
    let (slow_id, _) = endpoint(&app, json!({"url": hanging.url()})).await;
    let (fast_id, _) = endpoint(&app, json!({"url": fast.url()})).await;
    // More of the hanging endpoint's messages than the worker's prefetch (16), first.
    for _ in 0..20 {
        test_event(&app, &slow_id).await;
    }
    for _ in 0..10 {
        test_event(&app, &fast_id).await;
    }
    fast.wait_for(10).await;
    // Every one of them while the hanging endpoint had not answered once.
    assert!(attempts(&app, &slow_id).await.is_empty());
    assert!(hanging.requests().len() <= 2, "at most its concurrency at once: {}", hanging.requests().len());
}

#[tokio::test]
async fn after_a_rotation_each_request_verifies_with_the_old_secret_and_the_new() {
    let (app, _services) = platform(|_| {}).await;
    let receiver = Receiver::answering(vec![ResponseTemplate::new(200)]).await;
    let (id, old) = endpoint(&app, json!({"url": receiver.url()})).await;
    let (status, rotated) = app.call("POST", &format!("/v1/webhooks/{id}/rotate-secret"), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, old);
    test_event(&app, &id).await;
    let request = receiver.wait_for(1).await.remove(0);
    verify(&old, &request);
    verify(new, &request);
    let signatures = request.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
}
