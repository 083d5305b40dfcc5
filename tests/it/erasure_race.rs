//! An accept racing `DELETE /v1/subscribers/{id}`: the directory is read before the accept
//! statement, so the erasure can fall between them. The interleavings are forced with locks
//! held by the test on a connection of its own; either order ends with nothing written, or
//! nothing left to send, to the erased address.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use domain::{
    NewNotification,
    plan::{Budget, plan_all},
    request::Limits,
};
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use store::{Accept, Intake, IntakeResult};
use time::OffsetDateTime;

use crate::harness::{TestApp, eventually};

const ADA: &str = "ada@example.com";

async fn put_subscriber(app: &TestApp, id: &str, email: &str) {
    let (status, answer) = app.call("PUT", &format!("/v1/subscribers/{id}"), Some(&json!({"email": email}))).await;
    assert!(matches!(status, 200 | 201), "PUT {id}: {status} {answer}");
}

async fn erase(app: &TestApp, id: &str) {
    let (status, answer) = app.call("DELETE", &format!("/v1/subscribers/{id}"), None).await;
    assert_eq!(status, 204, "{answer}");
}

fn to(recipients: Value) -> Value {
    json!({"type": "t", "to": recipients, "channels": ["email"], "content": {"subject": "Hi", "text": "Hello"}})
}

/// Waits until `n` of the API's statements wait for a lock.
async fn lock_waiters(pool: &PgPool, n: i64) {
    eventually(&format!("{n} statements waiting for a lock"), || async {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (waiting >= n).then_some(())
    })
    .await
}

/// Holds what an accept statement needs before it starts (it inserts notifications) but
/// neither the directory read nor an erasure of a subscriber without deliveries needs.
async fn hold_accepts_before_they_start(pool: &PgPool) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE notifications IN SHARE MODE").execute(&mut *tx).await.unwrap();
    tx
}

/// Everything written to `address` (or to the erased placeholder): (status, recipient),
/// and how many outbox rows are left to send.
async fn written(pool: &PgPool, address: &str) -> (Vec<(String, String)>, i64) {
    let deliveries: Vec<(String, String)> = sqlx::query_as(
        "SELECT status, recipient FROM deliveries WHERE recipient IN ($1, $2) OR subscriber_id = 'u-1' ORDER BY id",
    )
    .bind(address)
    .bind(store::ERASED)
    .fetch_all(pool)
    .await
    .unwrap();
    let (outbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(pool).await.unwrap();
    (deliveries, outbox)
}

fn fields(body: &Value) -> Vec<String> {
    body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn an_erasure_between_the_directory_read_and_the_accept_refuses_the_notification() {
    let app = TestApp::api_only().await;
    let pool = app.env.store.pool();
    put_subscriber(&app, "u-1", ADA).await;
    let hold = hold_accepts_before_they_start(pool).await;

    let body = to(json!([{"subscriber_id": "u-1"}]));
    let accept = app.post(&body);
    let race = async {
        // The accept has read the directory and waits to write; the erasure runs now.
        lock_waiters(pool, 1).await;
        erase(&app, "u-1").await;
        hold.rollback().await.unwrap();
    };
    let ((status, answer), ()) = tokio::join!(accept, race);

    assert_eq!(status, 422, "{answer}");
    assert_eq!(fields(&answer), ["to[0].subscriber_id"], "{answer}");
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("erased"), "{answer}");
    assert_eq!(written(pool, ADA).await, (vec![], 0), "nothing is written for the erased subscriber");
    let (notifications,): (i64,) = sqlx::query_as("SELECT count(*) FROM notifications").fetch_one(pool).await.unwrap();
    assert_eq!(notifications, 0, "nothing half-written");
}

#[tokio::test]
async fn an_erasure_waits_for_an_accept_that_locked_the_subscriber_and_cancels_its_delivery() {
    let app = TestApp::api_only().await;
    let pool = app.env.store.pool();
    put_subscriber(&app, "u-1", ADA).await;
    // The accept statement's last step checks its notifications' tenant (a foreign key,
    // `FOR KEY SHARE`): holding the tenant row stops the accept after it locked its
    // subscribers and wrote its rows, before it commits.
    let mut hold = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(app.tenant_id)
        .execute(&mut *hold)
        .await
        .unwrap();

    let erased = AtomicBool::new(false);
    let body = to(json!([{"subscriber_id": "u-1"}]));
    let accept = app.post(&body);
    let erasure = async {
        lock_waiters(pool, 1).await;
        erase(&app, "u-1").await;
        erased.store(true, Ordering::SeqCst);
    };
    let release = async {
        // Either the erasure waits for the accept's lock, or (without one) it is done.
        eventually("the erasure to wait for the accept or finish", || async {
            let waiting: (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            (waiting.0 >= 2 || erased.load(Ordering::SeqCst)).then_some(())
        })
        .await;
        assert!(!erased.load(Ordering::SeqCst), "the erasure finished while an accept to the subscriber was in flight");
        hold.rollback().await.unwrap();
    };
    let ((status, answer), (), ()) = tokio::join!(accept, erasure, release);

    assert_eq!(status, 202, "{answer}");
    // The erasure came second and found the delivery: cancelled, redacted, nothing to send.
    assert_eq!(written(pool, ADA).await, (vec![("cancelled".into(), store::ERASED.into())], 0));
}

#[tokio::test]
async fn in_a_batch_only_the_items_to_an_erased_subscriber_are_refused() {
    let app = TestApp::api_only().await;
    let pool = app.env.store.pool();
    put_subscriber(&app, "u-1", ADA).await;
    put_subscriber(&app, "u-2", "grace@example.com").await;
    let (status, answer) = app.call("PUT", "/v1/topics/team/subscribers", Some(&json!({"add": ["u-1", "u-2"]}))).await;
    assert!(status < 300, "{status} {answer}");
    let hold = hold_accepts_before_they_start(pool).await;

    let items = json!({"notifications": [
        to(json!([{"subscriber_id": "u-1"}])),
        to(json!([{"subscriber_id": "u-2"}])),
        to(json!([{"topic": "team"}])),
        to(json!([{"email": "linus@example.com"}])),
    ]});
    let batch = app.call("POST", "/v1/notifications/batch", Some(&items));
    let race = async {
        lock_waiters(pool, 1).await;
        erase(&app, "u-1").await;
        hold.rollback().await.unwrap();
    };
    let ((status, answer), ()) = tokio::join!(batch, race);

    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [422, 202, 422, 202], "{answer}");
    assert_eq!(fields(&results[0]["error"]), ["to[0].subscriber_id"]);
    // A topic's member: the topic no longer holds it, so sending again plans without it.
    assert_eq!(fields(&results[2]["error"]), ["to"]);
    assert!(results[2]["error"]["errors"][0]["message"].as_str().unwrap().contains("`u-1`"), "{answer}");
    assert_eq!(written(pool, ADA).await, (vec![], 2), "two notifications to send, none to the erased address");
}

#[tokio::test]
async fn a_key_given_with_a_request_refused_for_an_erasure_stays_unused() {
    let app = TestApp::api_only().await;
    let pool = app.env.store.pool();
    put_subscriber(&app, "u-1", ADA).await;
    let body = to(json!([{"subscriber_id": "u-1"}]));
    let post = || async {
        let response = app
            .http
            .post(app.url("/v1/notifications"))
            .bearer_auth(&app.api_key)
            .header("Idempotency-Key", "k-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        let replayed = response.headers().contains_key("idempotent-replayed");
        (response.status().as_u16(), replayed, response.json::<Value>().await.unwrap())
    };
    let hold = hold_accepts_before_they_start(pool).await;
    let race = async {
        lock_waiters(pool, 1).await;
        erase(&app, "u-1").await;
        hold.rollback().await.unwrap();
    };
    let ((status, _, answer), ()) = tokio::join!(post(), race);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(written(pool, ADA).await, (vec![], 0));

    // The same request later is accepted afresh (not replayed), for the subscriber as it now is.
    put_subscriber(&app, "u-1", "new-u1@example.com").await;
    let (status, replayed, answer) = post().await;
    assert_eq!((status, replayed), (202, false), "{answer}");
    assert_eq!(answer["deliveries"][0]["recipient"], "new-u1@example.com");
}

#[tokio::test]
async fn a_member_erased_before_its_data_page_was_read_is_refused_by_the_accept() {
    // Planning reads a topic's members first and their `data` after, a page at a time; the
    // steps are taken here one by one, with the erasure between them.
    let app = TestApp::api_only().await;
    let pool = app.env.store.pool();
    for (id, email) in [("u-1", ADA), ("u-2", "grace@example.com")] {
        let body = json!({"email": email, "data": {"name": id}});
        let (status, answer) = app.call("PUT", &format!("/v1/subscribers/{id}"), Some(&body)).await;
        assert!(matches!(status, 200 | 201), "PUT {id}: {status} {answer}");
    }
    let (status, answer) = app.call("PUT", "/v1/topics/team/subscribers", Some(&json!({"add": ["u-1", "u-2"]}))).await;
    assert!(status < 300, "{status} {answer}");
    for (path, body) in [
        ("/v1/types/digest", json!({"channels": ["email"]})),
        ("/v1/templates/digest/email", json!({"subject": "Hi", "text": "Hello {{ subscriber.data.name }}"})),
    ] {
        let (status, answer) = app.call("PUT", path, Some(&body)).await;
        assert!(matches!(status, 200 | 201), "PUT {path}: {status} {answer}");
    }
    let request: NewNotification =
        serde_json::from_value(json!({"type": "digest", "to": [{"topic": "team"}]})).unwrap();
    let n = request.validate(Limits::default(), OffsetDateTime::now_utc()).unwrap();
    let store = &app.env.store;

    let directory = store.directory(app.tenant_id, &[&n]).await.unwrap();
    erase(&app, "u-1").await;
    let mut data = store.subscriber_data(app.tenant_id);
    let mut plans =
        plan_all(&[&n], &directory, OffsetDateTime::now_utc(), &mut Budget::default(), 1, &mut data).await.unwrap();
    let plan = plans.pop().unwrap().unwrap();
    let subscribers = plan.subscribers(&directory);
    let intake = Intake { notification: n, plan, idempotency: None, subscribers };
    let accept = Accept {
        tenant_id: app.tenant_id,
        actor: "test".into(),
        traceparent: None,
        items: vec![intake],
        retention: Duration::from_secs(24 * 3600),
    };
    let results = store.accept(accept).await.unwrap().results;

    assert!(matches!(&results[..], [IntakeResult::Erased(ids)] if ids == &["u-1"]), "{results:?}");
    let (notifications,): (i64,) = sqlx::query_as("SELECT count(*) FROM notifications").fetch_one(pool).await.unwrap();
    assert_eq!(notifications, 0, "nothing written, to the erased member or the other");
}
