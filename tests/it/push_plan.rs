//! Push at accept: push templates and inline content with their checks (the payload limit
//! included, naming the field), and the fan-out to each of a subscriber's devices, in the
//! device's locale and under its timezone's quiet hours, with preferences and critical
//! types as on every channel. Devices are inserted here as rows (their API is tested in
//! `devices.rs`); sending belongs to the push worker's tests.

use serde_json::{Value, json};

use crate::harness::TestApp;

async fn put(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, answer) = app.call("PUT", path, Some(&body)).await;
    assert!(matches!(status, 200 | 201), "PUT {path}: {status} {answer}");
    answer
}

/// The fields a `422` names, in order.
fn fields(status: u16, body: &Value) -> Vec<String> {
    assert_eq!(status, 422, "{body}");
    body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

/// A device row of `subscriber` (its token made up from its id).
async fn device(app: &TestApp, subscriber: &str, id: &str, locale: Option<&str>, timezone: Option<&str>) {
    sqlx::query(
        "INSERT INTO devices (tenant_id, subscriber_id, device_id, platform, token, token_hash, locale, timezone)
         VALUES ($1, $2, $3, 'fcm', $4, sha256(convert_to('fcm:' || $4, 'UTF8')), $5, $6)",
    )
    .bind(app.tenant_id)
    .bind(subscriber)
    .bind(id)
    .bind(format!("token-{subscriber}-{id}"))
    .bind(locale)
    .bind(timezone)
    .execute(app.env.store.pool())
    .await
    .unwrap();
}

/// The type `order.shipped` on in-app and push, with push templates in English and
/// Portuguese; `u-1` (English, UTC) with a phone (`pt-BR`, Tokyo) and a tablet, `u-2` with
/// no device.
async fn shop(app: &TestApp) {
    put(app, "/v1/types/order.shipped", json!({"channels": ["in_app", "push"]})).await;
    put(app, "/v1/templates/order.shipped/in_app", json!({"title": "Order {{ order }} shipped"})).await;
    let push = json!({"title": "Order {{ order }} shipped", "body": "Tap to track it", "sound": "default",
        "image": "https://cdn.example.com/{{ order }}.png", "action_url": "/orders/{{ order }}", "badge": 1,
        "data": {"order_id": "{{ order }}", "screen": "tracking"}});
    let stored = put(app, "/v1/templates/order.shipped/push", push.clone()).await;
    assert_eq!(stored["content"], push);
    put(app, "/v1/templates/order.shipped/push?locale=pt", json!({"title": "Pedido {{ order }} enviado"})).await;
    put(app, "/v1/subscribers/u-1", json!({"locale": "en"})).await;
    put(app, "/v1/subscribers/u-2", json!({})).await;
    device(app, "u-1", "phone", Some("pt-BR"), Some("Asia/Tokyo")).await;
    device(app, "u-1", "tablet", None, None).await;
}

/// The deliveries of notification `id` as (channel, subscriber, recipient, status,
/// locale, error code), sorted.
async fn planned(app: &TestApp, id: uuid::Uuid) -> Vec<(String, String, String, String, Value, Value)> {
    let mut planned: Vec<_> = app
        .deliveries_with_content(id)
        .await
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (
                s("channel"),
                s("subscriber_id"),
                s("recipient"),
                s("status"),
                d["locale"].clone(),
                d["last_error_code"].clone(),
            )
        })
        .collect();
    planned.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    planned
}

#[tokio::test]
async fn a_push_goes_to_each_device_in_its_locale_and_a_subscriber_without_one_is_skipped() {
    let app = TestApp::api_only().await;
    shop(&app).await;
    let id = app
        .accept(&json!({"type": "order.shipped", "to": [{"subscriber_id": "u-1"}, {"subscriber_id": "u-2"}],
            "data": {"order": "A-7"}}))
        .await;
    let fanned = planned(&app, id).await;
    let row = |c: &str, s: &str, r: &str, status: &str, locale: Value, code: Value| {
        (c.to_owned(), s.to_owned(), r.to_owned(), status.to_owned(), locale, code)
    };
    assert_eq!(
        fanned,
        [
            row("in_app", "u-1", "u-1", "delivered", "en".into(), Value::Null),
            row("in_app", "u-2", "u-2", "delivered", "en".into(), Value::Null),
            row("push", "u-1", "phone", "pending", "pt".into(), Value::Null),
            row("push", "u-1", "tablet", "pending", "en".into(), Value::Null),
            row("push", "u-2", "", "suppressed", Value::Null, "no_address".into()),
        ]
    );
    let deliveries = app.deliveries_with_content(id).await;
    let content = |recipient: &str| deliveries.iter().find(|d| d["recipient"] == recipient).unwrap()["content"].clone();
    assert_eq!(content("phone"), json!({"title": "Pedido A-7 enviado"}));
    assert_eq!(
        content("tablet"),
        json!({"title": "Order A-7 shipped", "body": "Tap to track it", "sound": "default",
            "image": "https://cdn.example.com/A-7.png", "action_url": "/orders/A-7", "badge": 1,
            "data": {"order_id": "A-7", "screen": "tracking"}})
    );

    // Inline content, to the inbox and the devices in one notification.
    let id = app
        .accept(&json!({"type": "order.shipped", "to": [{"subscriber_id": "u-1"}], "channels": ["in_app", "push"],
            "content": {"title": "Hello", "data": {"k": "v"}}}))
        .await;
    let recipients: Vec<_> = planned(&app, id).await.into_iter().map(|(c, _, r, ..)| format!("{c}:{r}")).collect();
    assert_eq!(recipients, ["in_app:u-1", "push:phone", "push:tablet"]);

    // Erasing the subscriber removes its devices: a later push has no address.
    let (status, _) = app.call("DELETE", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 204);
    put(&app, "/v1/subscribers/u-1", json!({})).await;
    let id = app
        .accept(&json!({"type": "order.shipped", "to": [{"subscriber_id": "u-1"}], "channels": ["push"],
            "content": {"title": "Hello"}}))
        .await;
    let codes: Vec<_> = planned(&app, id).await.into_iter().map(|(.., code)| code).collect();
    assert_eq!(codes, [Value::from("no_address")]);
}

#[tokio::test]
async fn push_follows_each_devices_quiet_hours_preferences_and_critical_types() {
    let app = TestApp::api_only().await;
    shop(&app).await;
    put(&app, "/v1/subscribers/u-1/preferences", json!({"quiet_hours": {"start": "22:00", "end": "07:00"}})).await;
    // 14:00 UTC: 23:00 in Tokyo (the phone's, quiet until 07:00 there: 22:00 UTC); the
    // tablet has the subscriber's clock (UTC), outside the window.
    let body = json!({"type": "order.shipped", "to": [{"subscriber_id": "u-1"}], "channels": ["push"],
        "data": {"order": "A-7"}, "send_at": "2026-12-20T14:00:00Z"});
    let n = app.get(app.accept(&body).await).await;
    let mut deferred: Vec<(String, Value)> = n["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["recipient"].as_str().unwrap().to_owned(), d["next_attempt_at"].clone()))
        .collect();
    deferred.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(deferred, [("phone".into(), "2026-12-20T22:00:00Z".into()), ("tablet".into(), Value::Null)]);

    put(&app, "/v1/subscribers/u-1/preferences", json!({"channels": {"push": false}})).await;
    let body = json!({"type": "order.shipped", "to": [{"subscriber_id": "u-1"}], "channels": ["push"],
        "content": {"title": "x"}});
    let codes: Vec<_> = planned(&app, app.accept(&body).await).await.into_iter().map(|(.., code)| code).collect();
    assert_eq!(codes, [Value::from("opted_out"), Value::from("opted_out")]);
    put(&app, "/v1/types/order.shipped", json!({"channels": ["in_app", "push"], "critical": true})).await;
    let statuses: Vec<_> =
        planned(&app, app.accept(&body).await).await.into_iter().map(|(_, _, _, status, ..)| status).collect();
    assert_eq!(statuses, ["pending", "pending"]);
}

#[tokio::test]
async fn push_content_is_checked_at_accept_and_at_template_put_naming_the_field() {
    let app = TestApp::api_only().await;
    shop(&app).await;
    let to_u1 = |content: Value| json!({"type": "order.shipped", "to": [{"subscriber_id": "u-1"}], "channels": ["push"], "content": content});
    // Over 4 KB of push fields (less the providers' share), inline: the largest field.
    let (status, body) = app.post(&to_u1(json!({"title": "t", "body": "b".repeat(3900)}))).await;
    assert_eq!(fields(status, &body), ["content.body"]);
    assert!(body.to_string().contains("push payload"), "{body}");
    let (status, body) =
        app.post(&to_u1(json!({"title": "t", "data": {"blob": "d".repeat(3900)}, "image": "http://x.example"}))).await;
    assert_eq!(fields(status, &body), ["content.data", "content.image"]);
    let (status, body) = app.post(&to_u1(json!({"body": "b", "data": {"from": "x"}}))).await;
    assert_eq!(fields(status, &body), ["content.data.from"]);
    let (status, body) = app.post(&to_u1(json!({"subject": "only email"}))).await;
    assert_eq!(fields(status, &body), ["content.title"]);

    // Rendered over the limit: the template's field, in the message the template's locale.
    let (status, body) = app
        .post(&json!({"type": "order.shipped", "to": [{"subscriber_id": "u-1"}], "channels": ["push"],
            "data": {"order": "x".repeat(4000)}}))
        .await;
    assert_eq!(fields(status, &body), ["content.title", "content.data"]);
    assert!(body.to_string().contains("rendered from the push template (pt)"), "{body}");
    let (status, _) = app.call("GET", "/v1/notifications?limit=10", None).await;
    assert_eq!(status, 200);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE tenant_id = $1 AND channel = 'push'")
        .bind(app.tenant_id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing refused was written");

    // Templates: push fields elsewhere, reserved keys, an image that cannot be https.
    let (status, body) = app
        .call("PUT", "/v1/templates/order.shipped/in_app", Some(&json!({"title": "t", "badge": 1, "data": {}})))
        .await;
    assert_eq!(fields(status, &body), ["content.data", "content.badge"]);
    let (status, body) = app
        .call(
            "PUT",
            "/v1/templates/order.shipped/push",
            Some(&json!({"title": "t", "image": "ftp://{{ x }}", "data": {"gcm.x": "1"}})),
        )
        .await;
    assert_eq!(fields(status, &body), ["content.data.gcm.x", "content.image"]);
    let (status, body) = app
        .call("PUT", "/v1/templates/order.shipped/push", Some(&json!({"title": "x".repeat(4000), "body": "b"})))
        .await;
    assert_eq!(fields(status, &body), ["content.title"]);
}
