//! `POST /v1/notifications/batch`: each item stands on its own.

use serde_json::{Value, json};

use crate::harness::{TestApp, email};

impl TestApp {
    async fn batch(&self, items: Vec<Value>) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/v1/notifications/batch"))
            .bearer_auth(&self.api_key)
            .json(&json!({ "notifications": items }))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

#[tokio::test]
async fn invalid_items_do_not_reject_valid_ones() {
    let app = TestApp::api_only().await;
    let mut keyed = email("c@example.com");
    keyed["idempotency_key"] = "batch-1".into();
    let (status, body) = app.batch(vec![email("a@example.com"), email("not-an-email"), keyed.clone()]).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["status"], 202);
    assert_eq!(results[0]["notification"]["deliveries"][0]["recipient"], "a@example.com");
    assert_eq!(results[1]["status"], 422);
    assert_eq!(results[1]["error"]["errors"][0]["field"], "to[0].email");
    assert_eq!(results[2]["status"], 202);
    assert_eq!(app.notification_count().await, 2);
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 2);

    // Sent again, the keyed item is a replay, the others new notifications.
    let (_, again) = app.batch(vec![keyed, email("d@example.com")]).await;
    assert_eq!(again["results"][0]["replayed"], true);
    assert_eq!(again["results"][0]["notification"]["id"], results[2]["notification"]["id"]);
    assert_eq!(again["results"][1]["status"], 202);
    assert_eq!(app.notification_count().await, 3);
}

#[tokio::test]
async fn a_key_repeated_within_a_batch_is_one_notification() {
    let app = TestApp::api_only().await;
    let with_key = |to: &str| {
        let mut n = email(to);
        n["idempotency_key"] = "dup".into();
        n
    };
    let (_, body) =
        app.batch(vec![with_key("a@example.com"), with_key("a@example.com"), with_key("b@example.com")]).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], 202);
    assert_eq!(results[1]["replayed"], true);
    assert_eq!(results[1]["notification"]["id"], results[0]["notification"]["id"]);
    assert_eq!(results[2]["status"], 409);
    assert_eq!(results[2]["error"]["code"], "idempotency_key_reused");
    assert_eq!(app.notification_count().await, 1);
}

#[tokio::test]
async fn a_thousand_items_in_one_request_and_no_more() {
    let app = TestApp::api_only().await;
    let items: Vec<Value> = (0..1000).map(|i| email(&format!("u{i}@example.com"))).collect();
    let (status, body) = app.batch(items.clone()).await;
    assert_eq!(status, 200);
    assert!(body["results"].as_array().unwrap().iter().all(|r| r["status"] == 202));
    assert_eq!(app.notification_count().await, 1000);
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 1000);

    let mut too_many = items;
    too_many.push(email("one-more@example.com"));
    let (status, body) = app.batch(too_many).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("notifications")));
    let (status, _) = app.batch(vec![]).await;
    assert_eq!(status, 422);
}
