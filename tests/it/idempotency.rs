//! Idempotency keys: one notification per key and request, whatever the timing.

use futures_util::future::join_all;
use serde_json::Value;

use crate::harness::{TestApp, email};

impl TestApp {
    async fn post_with_key(&self, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/notifications"))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn notification_count(&self) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM notifications").fetch_one(self.env.store.pool()).await.unwrap();
        n
    }
}

#[tokio::test]
async fn the_same_key_and_body_replays_the_original_answer() {
    let app = TestApp::api_only().await;
    let first = app.post_with_key("evt-1", &email("a@example.com")).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // The same request with its fields in another order is the same request.
    let reordered: Value = serde_json::from_str(
        r#"{"content": {"text": "Hello", "subject": "Hi"}, "to": [{"email": "a@example.com"}], "type": "test.email"}"#,
    )
    .unwrap();
    let again = app.post_with_key("evt-1", &reordered).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    // The key may also come in the body.
    let mut in_body = email("a@example.com");
    in_body["idempotency_key"] = "evt-1".into();
    let (status, body) = app.post(&in_body).await;
    assert_eq!((status, &body["id"]), (202, &first["id"]));

    assert_eq!(app.notification_count().await, 1);
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 1);
    let n = app.get(first["id"].as_str().unwrap().parse().unwrap()).await;
    assert_eq!(n["idempotency_key"], "evt-1");
}

#[tokio::test]
async fn the_same_key_with_another_body_is_409() {
    let app = TestApp::api_only().await;
    assert_eq!(app.post_with_key("evt-2", &email("a@example.com")).await.status(), 202);
    let other = app.post_with_key("evt-2", &email("b@example.com")).await;
    assert_eq!(other.status(), 409);
    let problem: Value = other.json().await.unwrap();
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(app.notification_count().await, 1);

    let mut conflicting = email("a@example.com");
    conflicting["idempotency_key"] = "evt-other".into();
    let response = app.post_with_key("evt-2", &conflicting).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.json::<Value>().await.unwrap()["errors"][0]["field"], "idempotency_key");
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_make_one_notification() {
    let app = TestApp::api_only().await;
    let body = email("a@example.com");
    let answers = join_all((0..50).map(|_| async {
        let r = app.post_with_key("evt-race", &body).await;
        let replayed = r.headers().get("idempotent-replayed").is_some();
        (r.status().as_u16(), replayed, r.json::<Value>().await.unwrap())
    }))
    .await;
    assert!(answers.iter().all(|(status, _, _)| *status == 202), "{answers:?}");
    assert_eq!(answers.iter().filter(|(_, replayed, _)| !replayed).count(), 1);
    assert!(answers.iter().all(|(_, _, body)| body["id"] == answers[0].2["id"]));
    assert_eq!(app.notification_count().await, 1);
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 1);
}

#[tokio::test]
async fn keys_belong_to_a_tenant_and_expire() {
    let app = TestApp::api_only().await;
    let first: Value = app.post_with_key("evt-3", &email("a@example.com")).await.json().await.unwrap();
    let other = app.env.store.create_tenant("other").await.unwrap();
    let theirs = app
        .http
        .post(app.url("/v1/notifications"))
        .bearer_auth(&other.api_key)
        .header("Idempotency-Key", "evt-3")
        .json(&email("a@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 202);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
    assert_ne!(theirs.json::<Value>().await.unwrap()["id"], first["id"]);

    // Past retention a key counts as unused, and the purge deletes it.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(app.env.store.pool())
        .await
        .unwrap();
    let fresh = app.post_with_key("evt-3", &email("z@example.com")).await;
    assert_eq!(fresh.status(), 202);
    assert_ne!(fresh.json::<Value>().await.unwrap()["id"], first["id"]);
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(app.env.store.pool())
        .await
        .unwrap();
    let purged = app.env.store.purge_idempotency_keys(std::time::Duration::from_secs(24 * 3600)).await.unwrap();
    assert_eq!(purged, 2);
}

#[tokio::test]
async fn a_batch_refuses_an_idempotency_key_header_and_writes_nothing() {
    let app = TestApp::api_only().await;
    let send = || {
        app.http
            .post(app.url("/v1/notifications/batch"))
            .bearer_auth(&app.api_key)
            .header("Idempotency-Key", "batch-1")
            .json(&serde_json::json!({"notifications": [email("a@example.com"), email("b@example.com")]}))
            .send()
    };
    for _ in 0..2 {
        let response = send().await.unwrap();
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "Idempotency-Key", "{problem}");
    }
    assert_eq!(app.notification_count().await, 0, "a refused batch writes nothing");
}
