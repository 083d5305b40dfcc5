//! Nothing stranded: claims hold a delivery under a lease, an outcome is never forgotten,
//! and the relay's sweeper queues again what lost its message (a purge, a dead letter, a
//! worker that died holding it). A database error that would recur dead-letters the
//! message instead of holding the worker.

use std::time::Duration;

use domain::{Channel, DeliveryMessage, FailureKind, Publishable, SendFailure};
use lapin::options::{QueueDeclareOptions, QueuePurgeOptions};
use serde_json::{Value, json};
use store::{AttemptRecord, AttemptResult, Claim, Lease};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::harness::{TestApp, WorkerOptions, email, eventually};

const LEASE: Duration = Duration::from_secs(60);

/// A relay that sweeps often and takes a delivery as stranded after `after`.
fn sweeping(after: Duration) -> outbox_relay::RelaySettings {
    outbox_relay::RelaySettings {
        batch_size: 100,
        sweep_interval: Duration::from_millis(100),
        stranded_after: after,
        ..Default::default()
    }
}

/// The message the relay publishes for the one delivery of `notification`.
async fn message_of(app: &TestApp, notification: Uuid) -> DeliveryMessage {
    let (delivery, attempts): (Uuid, i32) =
        sqlx::query_as("SELECT id, attempts FROM deliveries WHERE notification_id = $1")
            .bind(notification)
            .fetch_one(app.env.store.pool())
            .await
            .unwrap();
    DeliveryMessage::new(delivery, notification, app.tenant_id, Channel::Email, attempts + 1)
}

async fn claim(app: &TestApp, msg: &DeliveryMessage, lease: Lease) -> Claim {
    app.env.store.claim_delivery(msg, lease).await.unwrap()
}

fn sent(id: &str) -> AttemptRecord {
    AttemptRecord {
        provider: "sandbox".into(),
        integration: false,
        traceparent: None,
        started_at: OffsetDateTime::now_utc(),
        latency_ms: 1,
        result: AttemptResult::Sent { provider_message_id: id.into(), response_excerpt: None },
    }
}

async fn delivery(app: &TestApp, id: Uuid) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT status, attempts, last_error_code FROM deliveries WHERE id = $1")
        .bind(id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap()
}

async fn expire_lease(app: &TestApp, id: Uuid) {
    sqlx::query("UPDATE deliveries SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(app.env.store.pool())
        .await
        .unwrap();
}

async fn attempts_logged(app: &TestApp, id: Uuid) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM delivery_attempts WHERE delivery_id = $1")
        .bind(id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    n
}

async fn audit_actions(app: &TestApp, notification: Uuid) -> Vec<(String, String, Value)> {
    sqlx::query_as("SELECT action, actor, detail FROM audit_events WHERE notification_id = $1 ORDER BY id")
        .bind(notification)
        .fetch_all(app.env.store.pool())
        .await
        .unwrap()
}

async fn purge_email_queue(app: &TestApp) -> u32 {
    let (_conn, amqp) = app.amqp().await;
    let queue = queue::topology::queue_name(Channel::Email);
    amqp.queue_purge(queue.as_str().into(), QueuePurgeOptions::default()).await.unwrap()
}

async fn queued_messages(app: &TestApp, queue: &str) -> u32 {
    let (_conn, amqp) = app.amqp().await;
    let declared = amqp
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, Default::default())
        .await
        .unwrap();
    declared.message_count()
}

/// Waits until the relay has published the notification's delivery (it is `queued` and
/// its outbox row is gone), so what a test does to the broker's copy is not undone.
async fn wait_queued(app: &TestApp, notification: Uuid) -> Uuid {
    let msg = message_of(app, notification).await;
    eventually("the delivery queued", || async {
        let (status, _, _) = delivery(app, msg.delivery_id).await;
        (status == "queued" && app.env.store.outbox_len().await.unwrap() == 0).then_some(())
    })
    .await;
    msg.delivery_id
}

#[tokio::test]
async fn a_claim_tried_again_after_a_lost_reply_finds_its_own() {
    let app = TestApp::api_only().await;
    let notification = app.accept(&email("a@example.com")).await;
    let msg = message_of(&app, notification).await;
    let lease = Lease::new(LEASE);
    assert!(matches!(claim(&app, &msg, lease).await, Claim::Claimed(..)));
    // The reply was lost and the worker claims again with the same claim: still its own.
    assert!(matches!(claim(&app, &msg, lease).await, Claim::Claimed(..)), "the retried claim is refused");
}

#[tokio::test]
async fn a_copy_of_the_message_cannot_take_a_live_claim_over_only_an_expired_one() {
    let app = TestApp::api_only().await;
    let notification = app.accept(&email("a@example.com")).await;
    let msg = message_of(&app, notification).await;
    let first = Lease::new(LEASE);
    let Claim::Claimed(job, _) = claim(&app, &msg, first).await else { panic!("claimed") };
    // A redelivered copy (the broker connection dropped) while the first is sending.
    let second = Lease::new(LEASE);
    assert!(matches!(claim(&app, &msg, second).await, Claim::Stale(_)), "two live claims on one delivery");

    // Once the lease has run out, the copy takes over; the first holder's late outcome
    // is logged as an attempt but leaves the delivery to the new holder.
    expire_lease(&app, msg.delivery_id).await;
    assert!(matches!(claim(&app, &msg, second).await, Claim::Claimed(..)));
    assert!(!app.env.store.record_attempt(&job, first, &sent("first")).await.unwrap());
    assert_eq!(delivery(&app, msg.delivery_id).await.0, "sending");
    assert!(app.env.store.record_attempt(&job, second, &sent("second")).await.unwrap());
    assert_eq!(delivery(&app, msg.delivery_id).await.0, "sent");
    // The takeover's `ambiguous` entry for the replaced claim, and both sends.
    assert_eq!(attempts_logged(&app, msg.delivery_id).await, 3, "both sends are in the attempts log");
}

#[tokio::test]
async fn an_outcome_whose_claim_the_database_lost_still_settles_the_delivery() {
    let app = TestApp::api_only().await;
    let notification = app.accept(&email("a@example.com")).await;
    let msg = message_of(&app, notification).await;
    let lease = Lease::new(LEASE);
    let Claim::Claimed(job, _) = claim(&app, &msg, lease).await else { panic!("claimed") };
    // The claim committed without waiting for the disk and a crash lost it: the row is
    // back as the claim found it.
    sqlx::query(
        "UPDATE deliveries SET status = 'queued', attempts = attempts - 1, claimed_by = NULL, lease_until = NULL
         WHERE id = $1",
    )
    .bind(msg.delivery_id)
    .execute(app.env.store.pool())
    .await
    .unwrap();

    assert!(app.env.store.record_attempt(&job, lease, &sent("p-1")).await.unwrap());
    assert_eq!(delivery(&app, msg.delivery_id).await, ("sent".into(), 1, None));
    assert_eq!(app.get(notification).await["status"], "sent");
}

#[tokio::test]
async fn a_provider_reply_with_a_nul_byte_is_recorded() {
    let app = TestApp::api_only().await;
    let notification = app.accept(&email("a@example.com")).await;
    let msg = message_of(&app, notification).await;
    let lease = Lease::new(LEASE);
    let Claim::Claimed(job, _) = claim(&app, &msg, lease).await else { panic!("claimed") };
    let failure = SendFailure::new(FailureKind::Permanent, "bad\0code", "the provider said \0 this");
    let record = AttemptRecord { result: AttemptResult::Failed { failure }, ..sent("unused") };
    assert!(app.env.store.record_attempt(&job, lease, &record).await.unwrap());
    assert_eq!(delivery(&app, msg.delivery_id).await, ("failed".into(), 1, Some("badcode".into())));
}

#[tokio::test]
async fn a_retry_for_a_recipient_erased_while_it_was_sent_is_cancelled() {
    let app = TestApp::api_only().await;
    let (status, _) = app.call("PUT", "/v1/subscribers/u-1", Some(&json!({"email": "ada@example.org"}))).await;
    assert_eq!(status, 201);
    let notification = app
        .accept(&json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "channels": ["email"],
                        "content": {"subject": "Hi", "text": "Hello"}}))
        .await;
    let msg = message_of(&app, notification).await;
    let lease = Lease::new(LEASE);
    let Claim::Claimed(job, _) = claim(&app, &msg, lease).await else { panic!("claimed") };
    let (status, _) = app.call("DELETE", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 204);

    let failure = SendFailure::new(FailureKind::Retryable, "throttled", "slow down");
    let retry = AttemptRecord { result: AttemptResult::Retry { failure, after: Duration::ZERO }, ..sent("unused") };
    assert!(app.env.store.record_attempt(&job, lease, &retry).await.unwrap());
    assert_eq!(delivery(&app, msg.delivery_id).await.0, "cancelled");
    let (retries,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE delivery_id = $1 AND attempt = 2")
        .bind(msg.delivery_id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(retries, 0, "a retry to [erased] was queued");
}

#[tokio::test]
async fn a_purged_queue_is_recovered_by_the_sweeper() {
    let app = TestApp::api_only().await;
    let relay = app.start_relay(100).await;
    let notification = app.accept(&email("a@example.com")).await;
    let delivery_id = wait_queued(&app, notification).await;
    assert_eq!(purge_email_queue(&app).await, 1);
    relay.stop().await;

    // Nothing carries the delivery now but the sweeper.
    let _relay = app.start_relay_with(sweeping(Duration::from_millis(300))).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    app.wait_for_status(notification, "sent").await;
    assert_eq!(app.sends_of(Channel::Email, &delivery_id.to_string()), 1);
    let events = audit_actions(&app, notification).await;
    let recovered: Vec<_> = events.iter().filter(|(action, _, _)| action == "recovered").collect();
    assert_eq!(recovered.len(), 1, "events: {events:?}");
    assert_eq!(recovered[0].1, "sweeper");
    assert_eq!(recovered[0].2["stranded"], "queued");
}

#[tokio::test]
async fn a_delivery_whose_sender_died_is_recovered_once_its_lease_runs_out() {
    let app = TestApp::api_only().await;
    let relay = app.start_relay(100).await;
    let notification = app.accept(&email("a@example.com")).await;
    wait_queued(&app, notification).await;
    relay.stop().await;
    // A worker claimed it and died, and its message was lost with the broker.
    let msg = message_of(&app, notification).await;
    assert!(matches!(claim(&app, &msg, Lease::new(Duration::from_millis(200))).await, Claim::Claimed(..)));
    purge_email_queue(&app).await;

    let _relay = app.start_relay_with(sweeping(Duration::from_millis(100))).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    app.wait_for_status(notification, "sent").await;
    let (status, attempts, _) = delivery(&app, msg.delivery_id).await;
    assert_eq!((status.as_str(), attempts), ("sent", 1), "the recovered send keeps the attempt it took over");
    // The dead worker may have sent it: the attempts log says so, beside the send that
    // followed, so a duplicate the recipient saw is visible.
    let logged: Vec<(i64, String, Option<String>)> = app.get(notification).await["deliveries"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["number"].as_i64().unwrap(),
                a["outcome"].as_str().unwrap().to_owned(),
                a["error_code"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(logged, [(1, "ambiguous".into(), Some("worker_lost".into())), (1, "sent".into(), None)]);
}

/// Checks `check` every 50 ms for `period`: what must hold however often the relay sweeps.
async fn throughout<F, Fut>(period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let end = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < end {
        check().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A relay sweeping every 50 ms that takes a delivery as stranded after 200 ms and fails
/// it after one recovery: a long wait with no worker lasts many `stranded_after`s.
fn impatient() -> outbox_relay::RelaySettings {
    outbox_relay::RelaySettings {
        sweep_interval: Duration::from_millis(50),
        poll_interval: Duration::from_millis(50),
        max_recoveries: 1,
        ..sweeping(STRANDED)
    }
}
const STRANDED: Duration = Duration::from_millis(200);

#[tokio::test]
async fn a_claim_whose_lease_ran_out_with_no_worker_waits_with_at_most_two_copies() {
    let app = TestApp::api_only().await;
    let relay = app.start_relay(100).await;
    let notification = app.accept(&email("a@example.com")).await;
    let delivery_id = wait_queued(&app, notification).await;
    relay.stop().await;
    // A worker claimed it and was killed: its message went back to the queue, and no
    // worker runs for a long while.
    let msg = message_of(&app, notification).await;
    assert!(matches!(claim(&app, &msg, Lease::new(LEASE)).await, Claim::Claimed(..)));
    expire_lease(&app, delivery_id).await;

    let _relay = app.start_relay_with(impatient()).await;
    eventually("the expired claim recovered", || async {
        audit_actions(&app, notification).await.iter().any(|(action, ..)| action == "recovered").then_some(())
    })
    .await;
    let queue = queue::topology::queue_name(Channel::Email);
    throughout(STRANDED * 10, || async {
        assert_eq!(delivery(&app, delivery_id).await.0, "sending");
        assert!(queued_messages(&app, &queue).await <= 2, "more than two copies queued");
    })
    .await;
    assert_eq!(queued_messages(&app, &queue).await, 2);

    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    app.wait_for_status(notification, "sent").await;
    eventually("both copies consumed", || async { (queued_messages(&app, &queue).await == 0).then_some(()) }).await;
    assert_eq!(app.sends_of(Channel::Email, &delivery_id.to_string()), 1);
}

#[tokio::test]
async fn a_queued_backlog_with_no_worker_for_long_is_delivered_once_a_worker_starts() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay_with(impatient()).await;
    let mut notifications = vec![];
    for i in 0..5 {
        notifications.push(app.accept(&email(&format!("u{i}@example.com"))).await);
    }
    let mut deliveries = vec![];
    for n in &notifications {
        deliveries.push(wait_queued(&app, *n).await);
    }
    let queue = queue::topology::queue_name(Channel::Email);
    // stranded_after x (max_recoveries + 1), and more.
    throughout(STRANDED * 2 * 5, || async {
        for d in &deliveries {
            assert_eq!(delivery(&app, *d).await.0, "queued");
        }
        assert_eq!(queued_messages(&app, &queue).await, 5, "a waiting message was queued again");
    })
    .await;

    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    for (n, d) in notifications.iter().zip(&deliveries) {
        app.wait_for_status(*n, "sent").await;
        assert_eq!(app.sends_of(Channel::Email, &d.to_string()), 1);
    }
}

#[tokio::test]
async fn a_delivery_that_never_gets_an_outcome_is_failed_as_stranded() {
    let app = TestApp::api_only().await;
    let notification = app.accept(&email("a@example.com")).await;
    let msg = message_of(&app, notification).await;
    // Its messages vanish each time (the outbox row is removed as if published and lost).
    let lose_outbox_row = || async {
        sqlx::query("DELETE FROM outbox").execute(app.env.store.pool()).await.unwrap();
    };
    lose_outbox_row().await;
    let store = &app.env.store;
    let recovered = store.recover_stranded(Duration::ZERO, 1, 100, &[Channel::Email]).await.unwrap();
    assert_eq!((recovered.requeued, recovered.failed), (1, 0));
    assert_eq!(store.outbox_len().await.unwrap(), 1);
    lose_outbox_row().await;
    let recovered = store.recover_stranded(Duration::ZERO, 1, 100, &[Channel::Email]).await.unwrap();
    assert_eq!((recovered.requeued, recovered.failed), (0, 1));
    assert_eq!(delivery(&app, msg.delivery_id).await, ("failed".into(), 0, Some("stranded".into())));
    assert_eq!(app.get(notification).await["status"], "failed");
    assert_eq!(store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_stranded_delivery_can_be_retried_by_hand() {
    let app = TestApp::api_with(|c| c.limits.stranded_after = Duration::ZERO).await;
    let notification = app.accept(&email("a@example.com")).await;
    let msg = message_of(&app, notification).await;
    let path = format!("/v1/deliveries/{}/retry", msg.delivery_id);
    // Still in the outbox: it is moving, not stranded.
    let (status, body) = app.call("POST", &path, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("in_flight")), "{body}");

    let relay = app.start_relay(100).await;
    wait_queued(&app, notification).await;
    relay.stop().await;
    purge_email_queue(&app).await;
    let (status, body) = app.call("POST", &path, None).await;
    assert_eq!(status, 202, "{body}");
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    app.wait_for_status(notification, "sent").await;
    let events = audit_actions(&app, notification).await;
    assert!(
        events.iter().any(|(action, actor, detail)| action == "retried"
            && actor.starts_with("api_key:")
            && detail["stranded"] == "queued"),
        "events: {events:?}"
    );
}

#[tokio::test]
async fn a_database_error_that_would_recur_dead_letters_the_message() {
    let app = TestApp::api_only().await;
    // Attempts of this one recipient cannot be written: a deterministic error, as a
    // constraint or bad data would give, not an outage.
    let notification = app.accept(&email("refused@example.com")).await;
    let refused = message_of(&app, notification).await.delivery_id;
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION refuse_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.delivery_id = '{refused}' THEN
                 RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_attempt BEFORE INSERT ON delivery_attempts
             FOR EACH ROW EXECUTE FUNCTION refuse_attempt();"
    ))
    .execute(app.env.store.pool())
    .await
    .unwrap();

    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions { prefetch: 1, ..Default::default() }).await;
    let dead_queue = queue::topology::dead_letter_queue_name(Channel::Email);
    eventually("the message dead-lettered", || async { (queued_messages(&app, &dead_queue).await == 1).then_some(()) })
        .await;
    // The worker is free for the next message.
    let next = app.accept(&email("b@example.com")).await;
    app.wait_for_status(next, "sent").await;
}

/// Sessions of the worker's claim slots and record slots, told by their last statements.
async fn slot_sessions(app: &TestApp) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE query LIKE 'SELECT * FROM claim_deliveries(%'),
                count(*) FILTER (WHERE query LIKE 'SELECT * FROM record_outcomes(%')
         FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(app.env.store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_worker_replaces_the_connections_it_holds_when_the_database_drops_them() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions { prefetch: 1, ..Default::default() }).await;
    let first = app.accept(&email("a@example.com")).await;
    app.wait_for_status(first, "sent").await;
    assert_eq!(slot_sessions(&app).await, (1, 1), "one claim slot and one record slot used");

    // Their sessions end (waited for), as in a database restart or an idle timeout.
    sqlx::query(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND (query LIKE 'SELECT * FROM claim_deliveries(%' OR query LIKE 'SELECT * FROM record_outcomes(%')",
    )
    .execute(app.env.store.pool())
    .await
    .unwrap();
    assert_eq!(slot_sessions(&app).await, (0, 0));

    // Slots take turns, so messages one at a time reach the slots whose sessions ended:
    // each connects anew rather than failing for ever, and every message is sent.
    eventually("both claim slots and both record slots connected", || async {
        let next = app.accept(&email("b@example.com")).await;
        app.wait_for_status(next, "sent").await;
        (slot_sessions(&app).await == (2, 2)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_slow_rate_limit_with_a_large_prefetch_keeps_every_claim_within_its_lease() {
    let app = TestApp::api_only().await;
    // The sweeper recovers an expired claim at once.
    let _relay = app.start_relay_with(sweeping(Duration::from_secs(60))).await;
    // 30 messages at 10 a second take 3 s of pacing, the whole lease; each send then
    // takes 1 s more. Paced inside the lease, the last claims would run out.
    let options = WorkerOptions {
        prefetch: 30,
        rate_limits: [("sandbox".to_owned(), 10.0)].into(),
        lease: Duration::from_secs(3),
        provider_timeout: Duration::from_millis(1500),
        sandbox: worker::SandboxConfig { latency: Duration::from_secs(1), ..Default::default() },
        ..Default::default()
    };
    let _worker = app.start_worker(Channel::Email, options).await;
    let mut notifications = vec![];
    for i in 0..50 {
        notifications.push(app.accept(&email(&format!("u{i}@example.com"))).await);
    }
    for n in &notifications {
        app.wait_for_status(*n, "sent").await;
        let delivery_id = message_of(&app, *n).await.delivery_id;
        assert_eq!(app.sends_of(Channel::Email, &delivery_id.to_string()), 1, "sent twice");
        let events = audit_actions(&app, *n).await;
        assert!(!events.iter().any(|(action, ..)| action == "recovered"), "a claim ran out: {events:?}");
    }
    let (taken_over,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM delivery_attempts WHERE error_code = 'worker_lost'")
            .fetch_one(app.env.store.pool())
            .await
            .unwrap();
    assert_eq!(taken_over, 0, "a claim was taken over");
}

#[tokio::test]
async fn a_retry_is_due_by_the_database_clock_not_the_workers() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let hour = Duration::from_secs(3600);
    let options = WorkerOptions {
        retry: domain::RetryPolicy {
            max_attempts: 3,
            initial_delay: hour,
            multiplier: 1.0,
            max_delay: hour,
            jitter: 0.0,
        },
        sandbox: worker::SandboxConfig { fail_first_attempts: 1, ..Default::default() },
        ..Default::default()
    };
    let _worker = app.start_worker(Channel::Email, options).await;
    let notification = app.accept(&email("a@example.com")).await;
    let delivery_id = message_of(&app, notification).await.delivery_id;
    eventually("the first attempt failed", || async {
        (delivery(&app, delivery_id).await.0 == "retrying").then_some(())
    })
    .await;
    // The delay counts from the database's `now()` of the outcome's own transaction (its
    // `updated_at`), whatever the worker's clock says: exactly an hour, to the microsecond.
    let (next_attempt, available): (f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM d.next_attempt_at - d.updated_at)::float8,
                extract(epoch FROM o.available_at - d.updated_at)::float8
         FROM deliveries d JOIN outbox o ON o.delivery_id = d.id WHERE d.id = $1",
    )
    .bind(delivery_id)
    .fetch_one(app.env.store.pool())
    .await
    .unwrap();
    assert_eq!((next_attempt, available), (3600.0, 3600.0));
}

/// A provider named `.0` that panics on recipient `.1` and sends to every other.
struct PanicsOn(&'static str, &'static str);

impl worker::Provider for PanicsOn {
    fn name(&self) -> &str {
        self.0
    }

    fn send<'a>(&'a self, job: &'a domain::DeliveryJob) -> futures_util::future::BoxFuture<'a, domain::SendOutcome> {
        Box::pin(async move {
            assert!(job.recipient != self.1, "the provider cannot take this recipient");
            domain::SendOutcome::Sent(domain::SendReceipt {
                provider_message_id: format!("p-{}", job.delivery_id),
                response_excerpt: None,
            })
        })
    }
}

fn panics_counted() -> u64 {
    bootstrap::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix("notify_message_handler_panics_total{channel=\"email\"} "))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_message_whose_handler_panics_is_dead_lettered_and_the_worker_goes_on() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let before = panics_counted();
    // One message at a time: a leaked prefetch slot would stop the worker.
    let options = WorkerOptions { prefetch: 1, ..Default::default() };
    let _worker = app
        .start_worker_with(Channel::Email, options, vec![std::sync::Arc::new(PanicsOn("panicky", "boom@example.com"))])
        .await;
    app.accept(&email("boom@example.com")).await;
    let dead_queue = queue::topology::dead_letter_queue_name(Channel::Email);
    eventually("the message dead-lettered", || async { (queued_messages(&app, &dead_queue).await == 1).then_some(()) })
        .await;
    for i in 0..3 {
        let next = app.accept(&email(&format!("u{i}@example.com"))).await;
        app.wait_for_status(next, "sent").await;
    }
    assert!(panics_counted() > before, "the panic was not counted");
}

#[tokio::test]
async fn an_idle_worker_publishes_its_metrics_before_its_first_message() {
    let app = TestApp::api_only().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options = WorkerOptions { listen: Some(([127, 0, 0, 1], port).into()), ..Default::default() };
    // A provider name of this test's own: the registry is shared with the other tests.
    let _worker =
        app.start_worker_with(Channel::Novu, options, vec![std::sync::Arc::new(PanicsOn("idle", "nobody"))]).await;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text =
        eventually("the worker's /metrics", || async { app.http.get(&url).send().await.ok()?.text().await.ok() }).await;
    for series in [
        r#"notify_delivery_attempts_total{channel="novu",provider="idle",outcome="sent"} 0"#,
        r#"notify_delivery_attempts_total{channel="novu",provider="idle",outcome="failed"} 0"#,
        r#"notify_provider_call_seconds_count{channel="novu",provider="idle"} 0"#,
        r#"notify_messages_dead_lettered_total{channel="novu"}"#,
        r#"notify_message_handler_panics_total{channel="novu"}"#,
        r#"notify_consumer_in_flight{channel="novu"}"#,
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "notify_build_info{version=",
    ] {
        assert!(text.lines().any(|l| l.starts_with(series)), "{series} missing from:\n{text}");
    }
}

/// A provider that holds its send to `held` until the test lets it go, and sends to every
/// other recipient at once.
struct HoldsOne {
    held: &'static str,
    called: std::sync::atomic::AtomicBool,
    release: tokio::sync::Semaphore,
    sends: std::sync::Mutex<Vec<String>>,
}

impl worker::Provider for HoldsOne {
    fn name(&self) -> &str {
        "holds-one"
    }

    fn send<'a>(&'a self, job: &'a domain::DeliveryJob) -> futures_util::future::BoxFuture<'a, domain::SendOutcome> {
        Box::pin(async move {
            if job.recipient == self.held {
                self.called.store(true, std::sync::atomic::Ordering::SeqCst);
                self.release.acquire().await.unwrap().forget();
            }
            self.sends.lock().unwrap().push(job.recipient.clone());
            domain::SendOutcome::Sent(domain::SendReceipt {
                provider_message_id: format!("p-{}", job.delivery_id),
                response_excerpt: None,
            })
        })
    }
}

/// What [`Capture`] saw: the events' messages, and the `delivery` spans by notification.
#[derive(Default)]
struct Seen {
    events: Vec<String>,
    /// Span id -> (handles alive, its notification id, panics when it closes).
    spans: std::collections::HashMap<u64, (usize, String, bool)>,
    /// Notification ids of the `delivery` spans closed, in order.
    closed: Vec<String>,
    next_id: u64,
    /// The next `delivery` span panics when it closes: after its message was settled.
    arm: bool,
}

/// A subscriber of this test's thread (the runtime of `#[tokio::test]` runs every task
/// there) that records what it sees and panics where a test asks.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Seen>>);

struct Fields {
    notification: Option<String>,
    message: Option<String>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "notification_id" => self.notification = Some(format!("{value:?}")),
            "message" => self.message = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl tracing::Subscriber for Capture {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Fields { notification: None, message: None };
        span.record(&mut fields);
        let mut seen = self.0.lock().unwrap();
        seen.next_id += 1;
        let id = seen.next_id;
        let delivery = span.metadata().name() == "delivery";
        let panics = delivery && std::mem::take(&mut seen.arm);
        let notification = if delivery { fields.notification.unwrap_or_default() } else { String::new() };
        seen.spans.insert(id, (1, notification, panics));
        tracing::span::Id::from_u64(id)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields { notification: None, message: None };
        event.record(&mut fields);
        if let Some(message) = fields.message {
            self.0.lock().unwrap().events.push(message);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}

    fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
        if let Some(span) = self.0.lock().unwrap().spans.get_mut(&id.into_u64()) {
            span.0 += 1;
        }
        id.clone()
    }

    fn try_close(&self, id: tracing::span::Id) -> bool {
        let panics = {
            let mut seen = self.0.lock().unwrap();
            let Some(span) = seen.spans.get_mut(&id.into_u64()) else { return false };
            span.0 -= 1;
            if span.0 > 0 {
                return false;
            }
            let (_, notification, panics) = seen.spans.remove(&id.into_u64()).unwrap();
            if !notification.is_empty() {
                seen.closed.push(notification);
            }
            panics
        };
        assert!(!panics, "a panic after the message was settled");
        true
    }
}

#[tokio::test]
async fn a_panic_after_the_message_was_settled_does_not_settle_it_again() {
    let seen = Capture::default();
    // A second live dispatcher: with only one registered, tracing rebuilds the interest of
    // a call site first met on another test's thread from that thread's (none) and caches
    // it as uninteresting for every thread; with two, from both.
    let _second = tracing::Dispatch::new(Capture::default());
    let _thread = tracing::subscriber::set_default(seen.clone());
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let provider = std::sync::Arc::new(HoldsOne {
        held: "held@example.com",
        called: Default::default(),
        release: tokio::sync::Semaphore::new(0),
        sends: Default::default(),
    });
    let options = WorkerOptions { prefetch: 4, ..Default::default() };
    let _worker = app.start_worker_with(Channel::Email, options, vec![provider.clone()]).await;
    // One message in flight, held in its send.
    let held = app.accept(&email("held@example.com")).await;
    eventually("the held message sending", || async {
        provider.called.load(std::sync::atomic::Ordering::SeqCst).then_some(())
    })
    .await;

    // The next one panics once it has been acked (the end of its `delivery` span).
    seen.0.lock().unwrap().arm = true;
    let panicky = app.accept(&email("a@example.com")).await;
    app.wait_for_status(panicky, "sent").await;
    eventually("the panic", || async {
        let seen = seen.0.lock().unwrap();
        seen.events.iter().any(|e| e.starts_with("message handler panicked")).then_some(())
    })
    .await;
    let next = app.accept(&email("b@example.com")).await;
    app.wait_for_status(next, "sent").await;

    // The held message is sent and acked on the channel it came on: had the panic
    // settled the acked message again, the broker would have closed that channel and
    // handed the held message out again. Nor is the acked message said (or counted) to be
    // dead-lettered.
    let released_at = seen.0.lock().unwrap().closed.len();
    provider.release.add_permits(1);
    app.wait_for_status(held, "sent").await;
    eventually("the held message settled", || async {
        let seen = seen.0.lock().unwrap();
        seen.closed[released_at..].contains(&held.to_string()).then_some(())
    })
    .await;
    let trouble: Vec<String> = seen
        .0
        .lock()
        .unwrap()
        .events
        .iter()
        .filter(|e| {
            ["could not settle", "reconnecting", "dropping a stale", "dead-lettering"].iter().any(|t| e.contains(t))
        })
        .cloned()
        .collect();
    assert!(trouble.is_empty(), "{trouble:?}");
    let held_sends = provider.sends.lock().unwrap().iter().filter(|r| *r == "held@example.com").count();
    assert_eq!(held_sends, 1);
    assert_eq!(queued_messages(&app, &queue::topology::dead_letter_queue_name(Channel::Email)).await, 0);
}

#[tokio::test]
async fn stale_copies_do_not_use_up_a_providers_rate_slots() {
    const RATE: f64 = 10.0;
    const STALE: usize = 40;
    const FRESH: usize = 5;
    let app = TestApp::api_only().await;
    // A delivery sent already, and copies of its message (a relay that published twice,
    // a redelivery): each is dropped by its claim.
    let done = app.accept(&email("done@example.com")).await;
    let msg = message_of(&app, done).await;
    let lease = Lease::new(LEASE);
    let Claim::Claimed(job, _) = claim(&app, &msg, lease).await else { panic!("claimed") };
    assert!(app.env.store.record_attempt(&job, lease, &sent("p-1")).await.unwrap());
    sqlx::query("DELETE FROM outbox").execute(app.env.store.pool()).await.unwrap();
    let (_conn, amqp) = app.amqp().await;
    amqp.confirm_select(lapin::options::ConfirmSelectOptions::default()).await.unwrap();
    for _ in 0..STALE {
        let confirm = amqp
            .basic_publish(
                queue::topology::EXCHANGE.into(),
                "email".into(),
                lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() },
                &msg.to_json(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    // Then fresh ones, behind the copies in the queue.
    let relay = app.start_relay(100).await;
    let mut fresh = vec![];
    for i in 0..FRESH {
        let n = app.accept(&email(&format!("u{i}@example.com"))).await;
        fresh.push((n, wait_queued(&app, n).await));
    }
    relay.stop().await;

    let options =
        WorkerOptions { prefetch: 64, rate_limits: [("sandbox".to_owned(), RATE)].into(), ..Default::default() };
    let started = std::time::Instant::now();
    let _worker = app.start_worker(Channel::Email, options).await;
    for (n, _) in &fresh {
        app.wait_for_status(*n, "sent").await;
    }
    // The fresh sends take FRESH slots; had every copy taken one too, the last of them
    // could not go before (STALE + FRESH - 1) / RATE.
    let bound = Duration::from_secs_f64((STALE as f64 / 2.0 + FRESH as f64) / RATE);
    assert!(started.elapsed() < bound, "{:?} for {FRESH} sends at {RATE}/s behind {STALE} copies", started.elapsed());
    for (_, delivery_id) in &fresh {
        assert_eq!(app.sends_of(Channel::Email, &delivery_id.to_string()), 1);
    }
    assert_eq!(app.sends_of(Channel::Email, &msg.delivery_id.to_string()), 0);
}
