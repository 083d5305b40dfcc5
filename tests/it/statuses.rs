//! A notification's status: the rule stated once in Rust (`NotificationStatus::of`) and once
//! in SQL (`notification_status`) agree, and the worker's writes apply it: a claim leaves
//! the notification alone, an outcome sets it, from its only delivery's new status or
//! from all of its deliveries.

use std::time::Duration;

use domain::{Channel, DeliveryJob, DeliveryMessage, DeliveryStatus, FailureKind, NotificationStatus, SendFailure};
use serde_json::json;
use store::{AttemptRecord, AttemptResult, Claim, Lease};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::harness::{TestApp, TestEnv, email};

#[tokio::test]
async fn the_sql_and_rust_rules_agree_on_every_combination_of_up_to_three_deliveries() {
    let env = TestEnv::new().await;
    let mut combinations: Vec<Vec<DeliveryStatus>> = vec![vec![]];
    let mut longest = combinations.clone();
    for _ in 0..3 {
        longest = longest.iter().flat_map(|c| DeliveryStatus::ALL.map(|s| [c.as_slice(), &[s]].concat())).collect();
        combinations.extend(longest.iter().cloned());
    }
    assert_eq!(combinations.len(), 1 + 11 + 11 * 11 + 11 * 11 * 11);
    let arrays: Vec<String> =
        combinations.iter().map(|c| c.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")).collect();
    let sql: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c, notification_status(string_to_array(c, ',')), notification_initial_status(string_to_array(c, ','))
         FROM unnest($1::text[]) WITH ORDINALITY AS u(c, i) ORDER BY i",
    )
    .bind(&arrays)
    .fetch_all(env.store.pool())
    .await
    .unwrap();
    assert_eq!(sql.len(), combinations.len());
    for (statuses, (array, status, initial)) in combinations.iter().zip(&sql) {
        let rust =
            (NotificationStatus::of(statuses.iter().copied()), NotificationStatus::initial(statuses.iter().copied()));
        assert_eq!((status.as_str(), initial.as_str()), (rust.0.as_str(), rust.1.as_str()), "deliveries {{{array}}}");
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// Each delivery of `notification` as the message for its next attempt.
async fn messages_of(app: &TestApp, notification: Uuid) -> Vec<DeliveryMessage> {
    let rows: Vec<(Uuid, String, i32)> =
        sqlx::query_as("SELECT id, channel, attempts FROM deliveries WHERE notification_id = $1 ORDER BY channel")
            .bind(notification)
            .fetch_all(app.env.store.pool())
            .await
            .unwrap();
    rows.into_iter()
        .map(|(id, channel, attempts)| {
            DeliveryMessage::new(id, notification, app.tenant_id, channel.parse().unwrap(), attempts + 1)
        })
        .collect()
}

/// Sets `notifications.delivery_count` as the accept writes it (how many deliveries the
/// notification has), or, with `known` false, leaves it unknown, as for notifications
/// accepted before the column existed.
async fn count_deliveries(app: &TestApp, notification: Uuid, known: bool) {
    sqlx::query(
        "UPDATE notifications n SET delivery_count = CASE WHEN $2 THEN
            (SELECT count(*) FROM deliveries d WHERE d.notification_id = n.id) END
         WHERE n.id = $1",
    )
    .bind(notification)
    .bind(known)
    .execute(app.env.store.pool())
    .await
    .unwrap();
}

async fn claim(app: &TestApp, msg: &DeliveryMessage, lease: Lease) -> Box<DeliveryJob> {
    match app.env.store.claim_delivery(msg, lease).await.unwrap() {
        Claim::Claimed(job, _) => job,
        other => panic!("not claimed: {other:?}"),
    }
}

/// Records `result` for the attempt `job` claimed under `lease`; whether it applied.
async fn record(app: &TestApp, job: &DeliveryJob, lease: Lease, result: AttemptResult) -> bool {
    let record = AttemptRecord {
        provider: "sandbox".into(),
        integration: false,
        traceparent: None,
        started_at: OffsetDateTime::now_utc(),
        latency_ms: 1,
        result,
    };
    app.env.store.record_attempt(job, lease, &record).await.unwrap()
}

/// Claims `msg` and records `result` for it.
async fn attempt(app: &TestApp, msg: &DeliveryMessage, result: AttemptResult) {
    let lease = Lease::new(LEASE);
    let job = claim(app, msg, lease).await;
    assert!(record(app, &job, lease, result).await, "the outcome applies");
}

async fn status_of(app: &TestApp, notification: Uuid) -> String {
    app.get(notification).await["status"].as_str().unwrap().to_owned()
}

fn sent() -> AttemptResult {
    AttemptResult::Sent { provider_message_id: Uuid::new_v4().to_string(), response_excerpt: None }
}

fn retry() -> AttemptResult {
    let failure = SendFailure::new(FailureKind::Retryable, "throttled", "slow down");
    AttemptResult::Retry { failure, after: Duration::ZERO }
}

#[tokio::test]
async fn a_notification_with_one_delivery_is_pending_while_it_is_sent_and_then_takes_its_outcome() {
    let app = TestApp::api_only().await;
    // Counted at accept, and not (accepted before the count was stored): the same statuses.
    for known in [true, false] {
        let notification = app.accept(&email("a@example.com")).await;
        count_deliveries(&app, notification, known).await;
        let [msg] = &messages_of(&app, notification).await[..] else { panic!("one delivery") };

        let lease = Lease::new(LEASE);
        let job = claim(&app, msg, lease).await;
        assert_eq!(status_of(&app, notification).await, "pending", "while sending (count known: {known})");
        assert!(record(&app, &job, lease, retry()).await);
        assert_eq!(status_of(&app, notification).await, "processing", "a retry waits (count known: {known})");

        attempt(&app, &DeliveryMessage { attempt: 2, ..msg.clone() }, sent()).await;
        assert_eq!(status_of(&app, notification).await, "sent", "count known: {known}");
    }
}

#[tokio::test]
async fn a_notification_with_several_deliveries_takes_the_aggregate_of_their_outcomes() {
    let app = TestApp::api_only().await;
    let notification = app
        .accept(&json!({"type": "t", "to": [{"email": "a@example.com", "phone": "+15551234567"}],
                        "content": {"subject": "Hi", "text": "Hello"}}))
        .await;
    count_deliveries(&app, notification, true).await;
    let [email, sms] = &messages_of(&app, notification).await[..] else { panic!("two deliveries") };
    assert_eq!((email.channel, sms.channel), (Channel::Email, Channel::Sms));

    attempt(&app, email, sent()).await;
    assert_eq!(status_of(&app, notification).await, "processing", "the SMS is still to be sent");
    let failed = AttemptResult::Failed { failure: SendFailure::new(FailureKind::Permanent, "21211", "invalid number") };
    attempt(&app, sms, failed).await;
    assert_eq!(status_of(&app, notification).await, "partial");
}
