//! Subscribers' push devices: registered with the tenant's API key or the subscriber's own
//! token, token shapes checked per platform, a token moved when registered elsewhere, the
//! oldest device evicted past the bound, every removal audited, erasure removing them all,
//! CORS for the configured origins.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestApp;

const P256DH: &str = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM";
const AUTH: &str = "tBHItJI5svbpez7KI4CCXg";

/// Any call with `bearer`; status and JSON body (`null` when none).
async fn call_as(app: &TestApp, bearer: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.http.request(method, app.url(path)).bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put_subscriber(app: &TestApp, api_key: &str, id: &str) {
    let (status, body) = call_as(app, api_key, "PUT", &format!("/v1/subscribers/{id}"), Some(&json!({}))).await;
    assert_eq!(status, 201, "{body}");
}

async fn token(app: &TestApp, subscriber: &str) -> String {
    let (status, body) = app.call("POST", &format!("/v1/subscribers/{subscriber}/token"), None).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

fn fcm(token: &str) -> Value {
    json!({"platform": "fcm", "token": token, "app": "my-project"})
}

/// The device ids of a listing, in its order.
fn ids(list: &Value) -> Vec<String> {
    list["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap().to_owned()).collect()
}

/// The tenant's `device_removed` audit events, oldest first: (subscriber, actor, detail).
async fn removals(app: &TestApp, tenant_id: Uuid) -> Vec<(String, String, Value)> {
    sqlx::query_as(
        "SELECT subscriber_id, actor, detail FROM audit_events
         WHERE tenant_id = $1 AND action = 'device_removed' ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(app.env.store.pool())
    .await
    .unwrap()
}

async fn stored_token(app: &TestApp, subscriber: &str, device: &str) -> Option<String> {
    sqlx::query_scalar("SELECT token FROM devices WHERE tenant_id = $1 AND subscriber_id = $2 AND device_id = $3")
        .bind(app.tenant_id)
        .bind(subscriber)
        .bind(device)
        .fetch_optional(app.env.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn devices_are_registered_listed_replaced_and_deleted_with_the_api_key() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;

    let apns = "A1B2".repeat(16);
    let body = json!({"platform": "apns", "token": apns, "app": "com.example.app", "locale": "pt_br",
                      "timezone": "Europe/Berlin"});
    let (status, device) = app.call("PUT", "/v1/subscribers/u-1/devices/iphone", Some(&body)).await;
    assert_eq!(status, 201, "{device}");
    assert_eq!(device["device_id"], "iphone");
    assert_eq!(device["platform"], "apns");
    assert_eq!(device["app"], "com.example.app");
    assert_eq!(device["locale"], "pt-BR");
    assert_eq!(device["timezone"], "Europe/Berlin");
    assert_eq!(device["token_hint"], "a1b2a1b2");
    assert!(device.get("token").is_none(), "the token is never returned: {device}");
    // Stored in lower case, the form APNs takes.
    assert_eq!(stored_token(&app, "u-1", "iphone").await.unwrap(), apns.to_lowercase());

    let sub = json!({"endpoint": "https://push.example.com/send/abc", "expirationTime": null,
                     "keys": {"p256dh": P256DH, "auth": AUTH}});
    let (status, web) = app
        .call("PUT", "/v1/subscribers/u-1/devices/browser", Some(&json!({"platform": "webpush", "token": sub})))
        .await;
    assert_eq!(status, 201, "{web}");
    assert_eq!(web["token_hint"], "push.example.com");
    // Stored as compact JSON of the members a sender needs.
    let stored: Value = serde_json::from_str(&stored_token(&app, "u-1", "browser").await.unwrap()).unwrap();
    assert_eq!(
        stored,
        json!({"endpoint": "https://push.example.com/send/abc", "keys": {"p256dh": P256DH, "auth": AUTH}})
    );

    let (status, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), ["browser", "iphone"]);

    // Replaced: fields left out are cleared, the listing puts it first.
    let (status, replaced) = app.call("PUT", "/v1/subscribers/u-1/devices/iphone", Some(&fcm("fcm-token-1"))).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!((replaced["platform"].as_str(), replaced.get("locale")), (Some("fcm"), None));
    assert_eq!(replaced["created_at"], device["created_at"]);
    let (_, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(ids(&list), ["iphone", "browser"]);
    let (status, one) = app.call("GET", "/v1/subscribers/u-1/devices/iphone", None).await;
    assert_eq!((status, &one["app"]), (200, &json!("my-project")));

    let (status, _) = app.call("DELETE", "/v1/subscribers/u-1/devices/iphone", None).await;
    assert_eq!(status, 204);
    let (status, body) = app.call("DELETE", "/v1/subscribers/u-1/devices/iphone", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(app.call("GET", "/v1/subscribers/u-1/devices/iphone", None).await.0, 404);
    let (_, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(ids(&list), ["browser"]);
    let key_id: Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE tenant_id = $1")
        .bind(app.tenant_id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(
        removals(&app, app.tenant_id).await,
        [(
            "u-1".to_owned(),
            format!("api_key:{key_id}"),
            json!({"device_id": "iphone", "platform": "fcm", "reason": "removed"})
        )]
    );

    // An unknown subscriber: 404 on every route; a bad device id: 422 naming it.
    for (method, path) in [
        ("PUT", "/v1/subscribers/nobody/devices/d"),
        ("GET", "/v1/subscribers/nobody/devices"),
        ("GET", "/v1/subscribers/nobody/devices/d"),
        ("DELETE", "/v1/subscribers/nobody/devices/d"),
    ] {
        let (status, body) = app.call(method, path, Some(&fcm("fcm-token-2"))).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{method} {path}");
    }
    let (status, body) = app.call("PUT", "/v1/subscribers/u-1/devices/%01", Some(&fcm("t"))).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("device_id")), "{body}");
    // Without credentials.
    assert_eq!(app.http.get(app.url("/v1/subscribers/u-1/devices")).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn tokens_are_checked_by_platform_naming_the_field() {
    let app = TestApp::api_with(|c| c.integrations.allow_private_hosts = false).await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let sub = |endpoint: &str, p256dh: &str, auth: &str| json!({"platform": "webpush", "token": {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}});
    let https = "https://push.example.com/x";
    for (body, field) in [
        (json!({"platform": "fcm", "token": "has spaces"}), "token"),
        (json!({"platform": "fcm", "token": "x".repeat(4097)}), "token"),
        (json!({"platform": "apns", "token": "abc"}), "token"),
        (json!({"platform": "apns", "token": "zz".repeat(32)}), "token"),
        (json!({"platform": "webpush", "token": "not a subscription"}), "token"),
        (sub("http://push.example.com/x", P256DH, AUTH), "token.endpoint"),
        (sub("https://127.0.0.1/x", P256DH, AUTH), "token.endpoint"),
        (sub(https, "AAAA", AUTH), "token.keys.p256dh"),
        (sub(https, P256DH, "AAAA"), "token.keys.auth"),
        (json!({"platform": "fcm", "token": "ok", "app": ""}), "app"),
        (json!({"platform": "fcm", "token": "ok", "locale": "english"}), "locale"),
        (json!({"platform": "fcm", "token": "ok", "timezone": "Mars/Base"}), "timezone"),
        (json!({"platform": "pager", "token": "ok"}), "platform"),
    ] {
        let (status, answer) = app.call("PUT", "/v1/subscribers/u-1/devices/d", Some(&body)).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["errors"][0]["field"], field, "{body}: {answer}");
    }
    // A subscription given as a string holding its JSON is taken too.
    let as_string = json!({"platform": "webpush",
        "token": json!({"endpoint": https, "keys": {"p256dh": P256DH, "auth": AUTH}}).to_string()});
    assert_eq!(app.call("PUT", "/v1/subscribers/u-1/devices/d", Some(&as_string)).await.0, 201);
}

#[tokio::test]
async fn a_subscriber_token_opens_its_own_devices_only() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    put_subscriber(&app, &app.api_key, "u-2").await;
    let mine = token(&app, "u-1").await;

    let (status, device) =
        call_as(&app, &mine, "PUT", "/v1/subscribers/u-1/devices/pixel", Some(&fcm("from-the-app"))).await;
    assert_eq!(status, 201, "{device}");
    let (status, list) = call_as(&app, &mine, "GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!((status, ids(&list)), (200, vec!["pixel".to_owned()]));
    assert_eq!(call_as(&app, &mine, "GET", "/v1/subscribers/u-1/devices/pixel", None).await.0, 200);

    // Another subscriber's devices: 403, whatever the method.
    app.call("PUT", "/v1/subscribers/u-2/devices/tablet", Some(&fcm("u2-token"))).await;
    for (method, path) in [
        ("PUT", "/v1/subscribers/u-2/devices/pixel"),
        ("GET", "/v1/subscribers/u-2/devices"),
        ("GET", "/v1/subscribers/u-2/devices/tablet"),
        ("DELETE", "/v1/subscribers/u-2/devices/tablet"),
    ] {
        let (status, body) = call_as(&app, &mine, method, path, Some(&fcm("stolen"))).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{method} {path}: {body}");
    }
    let (_, theirs) = app.call("GET", "/v1/subscribers/u-2/devices", None).await;
    assert_eq!(ids(&theirs), ["tablet"]);

    // A bad token is 401, and the subscriber token opens nothing else.
    let (signed, tag) = mine.rsplit_once('.').unwrap();
    let tampered = format!("{signed}x.{tag}");
    assert_eq!(call_as(&app, &tampered, "GET", "/v1/subscribers/u-1/devices", None).await.0, 401);
    assert_eq!(call_as(&app, &mine, "GET", "/v1/subscribers/u-1", None).await.0, 401);

    let (status, _) = call_as(&app, &mine, "DELETE", "/v1/subscribers/u-1/devices/pixel", None).await;
    assert_eq!(status, 204);
    let events = removals(&app, app.tenant_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].1.as_str(), &events[0].2["reason"]), ("subscriber:u-1", &json!("removed")));

    // Once the subscriber is erased, its token opens nothing.
    assert_eq!(app.call("DELETE", "/v1/subscribers/u-1", None).await.0, 204);
    assert_eq!(call_as(&app, &mine, "GET", "/v1/subscribers/u-1/devices", None).await.0, 401);
}

#[tokio::test]
async fn a_token_registered_elsewhere_moves_across_subscribers_and_tenants() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    put_subscriber(&app, &app.api_key, "u-2").await;
    let other = app.env.store.create_tenant("other").await.unwrap();
    put_subscriber(&app, &other.api_key, "x-1").await;

    assert_eq!(app.call("PUT", "/v1/subscribers/u-1/devices/phone", Some(&fcm("shared-token"))).await.0, 201);
    // The same token on another device of the same subscriber, then another subscriber.
    assert_eq!(app.call("PUT", "/v1/subscribers/u-1/devices/phone-2", Some(&fcm("shared-token"))).await.0, 201);
    let (_, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(ids(&list), ["phone-2"]);
    assert_eq!(app.call("PUT", "/v1/subscribers/u-2/devices/phone", Some(&fcm("shared-token"))).await.0, 201);
    let (_, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(ids(&list), Vec::<String>::new());
    // The same string on another platform is another token.
    let apns = "ab".repeat(32);
    let apns_body = json!({"platform": "apns", "token": apns});
    assert_eq!(app.call("PUT", "/v1/subscribers/u-1/devices/ipad", Some(&apns_body)).await.0, 201);

    // Another tenant's subscriber takes it: it leaves this tenant.
    let (status, _) =
        call_as(&app, &other.api_key, "PUT", "/v1/subscribers/x-1/devices/phone", Some(&fcm("shared-token"))).await;
    assert_eq!(status, 201);
    let (_, list) = app.call("GET", "/v1/subscribers/u-2/devices", None).await;
    assert_eq!(ids(&list), Vec::<String>::new());
    let (_, list) = call_as(&app, &other.api_key, "GET", "/v1/subscribers/x-1/devices", None).await;
    assert_eq!(ids(&list), ["phone"]);

    let events = removals(&app, app.tenant_id).await;
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(s, _, d)| (s.as_str(), d["device_id"].as_str().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(summary, [("u-1", "phone", "moved"), ("u-1", "phone-2", "moved"), ("u-2", "phone", "moved")]);
    // Moved by another tenant: its key is not named here.
    assert_eq!(events[2].1, "another_tenant");
    assert!(events[0].1.starts_with("api_key:"));
    assert!(removals(&app, other.tenant_id).await.is_empty());
    // No event carries the token.
    assert!(!serde_json::to_string(&events.iter().map(|e| &e.2).collect::<Vec<_>>()).unwrap().contains("shared-token"));
}

#[tokio::test]
async fn the_device_updated_least_recently_is_evicted_past_the_bound() {
    let app = TestApp::api_with(|c| c.limits.max_devices_per_subscriber = 3).await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    for (i, d) in ["a", "b", "c"].into_iter().enumerate() {
        let body = fcm(&format!("token-{i}"));
        assert_eq!(app.call("PUT", &format!("/v1/subscribers/u-1/devices/{d}"), Some(&body)).await.0, 201);
    }
    // `a` registered again: `b` is now the oldest.
    assert_eq!(app.call("PUT", "/v1/subscribers/u-1/devices/a", Some(&fcm("token-0"))).await.0, 200);
    assert_eq!(app.call("PUT", "/v1/subscribers/u-1/devices/d", Some(&fcm("token-3"))).await.0, 201);
    let (_, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(ids(&list), ["d", "a", "c"]);
    // Replacing a device at the bound evicts nothing.
    assert_eq!(app.call("PUT", "/v1/subscribers/u-1/devices/c", Some(&fcm("token-2b"))).await.0, 200);
    let (_, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(ids(&list), ["c", "d", "a"]);
    let events = removals(&app, app.tenant_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].2, json!({"device_id": "b", "platform": "fcm", "reason": "evicted"}));
}

#[tokio::test]
async fn erasure_removes_every_device() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    for d in ["a", "b"] {
        let body = fcm(&format!("erase-{d}"));
        assert_eq!(app.call("PUT", &format!("/v1/subscribers/u-1/devices/{d}"), Some(&body)).await.0, 201);
    }
    assert_eq!(app.call("DELETE", "/v1/subscribers/u-1", None).await.0, 204);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE tenant_id = $1")
        .bind(app.tenant_id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
    let erased: Value =
        sqlx::query_scalar("SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'subscriber_erased'")
            .bind(app.tenant_id)
            .fetch_one(app.env.store.pool())
            .await
            .unwrap();
    assert_eq!(erased["devices_removed"], 2, "{erased}");
    // A namesake made later starts with none, and its tokens register freely.
    put_subscriber(&app, &app.api_key, "u-1").await;
    let (_, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(ids(&list), Vec::<String>::new());
    assert_eq!(app.call("PUT", "/v1/subscribers/u-1/devices/a", Some(&fcm("erase-a"))).await.0, 201);
}

#[tokio::test]
async fn browsers_of_the_configured_origins_may_call_the_device_and_inbox_routes() {
    let app = TestApp::api_with(|c| c.inbox.cors_origins = vec!["https://app.example.com".into()]).await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let preflight = |origin: &'static str, path: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let response = preflight("https://app.example.com", "/v1/subscribers/u-1/devices/web").await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("PUT") && methods.contains("DELETE"), "{methods}");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");

    // Another origin gets no grant; the producer routes get no CORS at all.
    let response = preflight("https://evil.example", "/v1/subscribers/u-1/devices/web").await.unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());
    let response = preflight("https://app.example.com", "/v1/notifications").await.unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());

    // The actual request from the page, with the subscriber's token, and the inbox too.
    let mine = token(&app, "u-1").await;
    for (method, path, body) in
        [("PUT", "/v1/subscribers/u-1/devices/web", Some(fcm("cors-token"))), ("GET", "/v1/inbox/count", None)]
    {
        let mut request = app
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), app.url(path))
            .bearer_auth(&mine)
            .header("origin", "https://app.example.com");
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{method} {path}: {}", response.status());
        assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example.com");
    }
}

#[tokio::test]
async fn concurrent_registrations_of_one_token_leave_it_on_one_device() {
    let app = TestApp::api_only().await;
    let subscribers: Vec<String> = (0..6).map(|i| format!("s-{i}")).collect();
    for s in &subscribers {
        put_subscriber(&app, &app.api_key, s).await;
    }
    let answers = futures_util::future::join_all(subscribers.iter().map(|s| {
        let path = format!("/v1/subscribers/{s}/devices/phone");
        let app = &app;
        async move { app.call("PUT", &path, Some(&fcm("raced-token"))).await }
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
    }
    let holders: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE tenant_id = $1")
        .bind(app.tenant_id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(holders, 1);
    let events = removals(&app, app.tenant_id).await;
    assert_eq!(events.len(), subscribers.len() - 1, "{events:?}");
    assert!(events.iter().all(|e| e.2["reason"] == "moved"));
}
