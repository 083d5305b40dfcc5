//! Intake limits: per-tenant rate, revocable keys, the size limits of a notification.

use serde_json::{Value, json};

use crate::harness::{NOTIFIED, TestApp, email, eventually, within};

#[tokio::test]
async fn the_rate_limit_is_reached_and_recovers() {
    let app = TestApp::api_only().await;
    assert!(app.env.store.set_rate_limit(app.tenant_id, Some((2, 2))).await.unwrap());
    let post =
        || app.http.post(app.url("/v1/notifications")).bearer_auth(&app.api_key).json(&email("a@example.com")).send();

    let first = post().await.unwrap();
    assert_eq!(first.status(), 202);
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    let _second = post().await.unwrap();
    let limited = post().await.unwrap();
    if limited.status() == 202 {
        // Half a second passed between the requests on a slow machine: try once more.
        assert_eq!(post().await.unwrap().status(), 429);
    } else {
        assert_eq!(limited.status(), 429);
        assert!(limited.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(limited.headers()["ratelimit-remaining"], "0");
        assert_eq!(limited.json::<Value>().await.unwrap()["code"], "rate_limited");
    }
    eventually("the bucket to refill", || async { (post().await.unwrap().status() == 202).then_some(()) }).await;
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let app = TestApp::api_only().await;
    let (key_id, key) = app.env.store.create_api_key(app.tenant_id).await.unwrap().unwrap();
    let post = || app.http.post(app.url("/v1/notifications")).bearer_auth(&key).json(&email("a@example.com")).send();
    assert_eq!(post().await.unwrap().status(), 202);
    // Revoked from another process (as `notify-admin revoke-key`): the API hears of it through
    // the change notification (tests/it/cache.rs).
    assert!(app.env.store.revoke_api_key(key_id).await.unwrap());
    let refused = within(NOTIFIED, "the revoked key refused", || async {
        let r = post().await.unwrap();
        (r.status() == 401).then_some(r)
    })
    .await;
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "unauthorized");
    // The tenant's other key still works.
    assert_eq!(app.post(&email("a@example.com")).await.0, 202);
    let keys = app.env.store.list_api_keys(app.tenant_id).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().any(|k| k.id == key_id && k.revoked_at.is_some() && k.last_used_at.is_some()));
}

#[tokio::test]
async fn size_limits_of_a_notification_are_422() {
    let app = TestApp::api_only().await;
    let mut big_data = email("a@example.com");
    big_data["data"] = json!({"blob": "x".repeat(65 * 1024)});
    let mut crowd = email("a@example.com");
    crowd["to"] = (0..101).map(|i| json!({"email": format!("u{i}@example.com")})).collect();
    let mut far = email("a@example.com");
    far["send_at"] = "2099-01-01T00:00:00Z".into();
    for (body, field) in [(big_data, "data"), (crowd, "to"), (far, "send_at")] {
        let (status, problem) = app.post(&body).await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field);
    }
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 0);
}
