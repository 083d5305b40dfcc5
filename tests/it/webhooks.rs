//! Outbound webhooks, the tenant's side: endpoints through the API (their secret shown
//! once, sealed at rest, rotated with an overlap), and the events written for them in the
//! transaction of each change they report, and only then.

use std::collections::BTreeSet;

use domain::webhook::WebhookSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestApp, email, test_secrets};

const URL: &str = "https://hooks.example.com/notify";

async fn create(app: &TestApp, body: Value) -> Value {
    let (status, created) = app.call("POST", "/v1/webhooks", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// The endpoint's secret as stored, opened.
async fn stored_secrets(app: &TestApp, id: &str) -> (String, Option<String>) {
    let endpoint = app.env.store.get_webhook_endpoint(app.tenant_id, id.parse().unwrap()).await.unwrap().unwrap();
    let keyring = test_secrets().keyring().unwrap().unwrap();
    let purpose = store::webhooks::purpose(endpoint.id);
    let open = |sealed: &str| String::from_utf8(keyring.open(&app.tenant_id, &purpose, sealed).unwrap()).unwrap();
    (open(&endpoint.secret), endpoint.previous_secret.as_deref().map(open))
}

#[tokio::test]
async fn an_endpoint_round_trips_and_its_secret_is_shown_only_when_made() {
    let app = TestApp::api_only().await;
    let created = create(
        &app,
        json!({"url": URL, "events": ["delivery.sent", "notification.completed"], "types": ["order.shipped"],
               "description": "orders"}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(WebhookSecret::parse(&secret).is_ok(), "{secret}");
    assert_eq!(created["events"], json!(["delivery.sent", "notification.completed"]));
    assert_eq!(created["types"], json!(["order.shipped"]));
    assert_eq!((created["enabled"].clone(), created["include_addresses"].clone()), (json!(true), json!(false)));

    // Sealed at rest, never shown again.
    let row: (String,) = sqlx::query_as("SELECT row_to_json(w)::text FROM webhook_endpoints w WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert!(!row.0.contains(&secret) && row.0.contains("v1.test."), "{}", row.0);
    assert_eq!(stored_secrets(&app, &id).await, (secret.clone(), None));
    let (status, one) = app.call("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, 200);
    let (_, all) = app.call("GET", "/v1/webhooks", None).await;
    assert_eq!(all, json!([one]));
    assert!(one.get("secret").is_none() && !all.to_string().contains(&secret), "{all}");

    // A patch changes what it names; `types: null` takes every type again.
    let (status, changed) =
        app.call("PATCH", &format!("/v1/webhooks/{id}"), Some(&json!({"types": null, "enabled": false}))).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!((changed["types"].clone(), changed["enabled"].clone()), (Value::Null, json!(false)));
    assert_eq!(changed["events"], created["events"]);
    assert_eq!(changed["description"], "orders");

    assert_eq!(app.call("DELETE", &format!("/v1/webhooks/{id}"), None).await.0, 204);
    assert_eq!(app.call("GET", &format!("/v1/webhooks/{id}"), None).await.0, 404);
    assert_eq!(app.call("DELETE", &format!("/v1/webhooks/{id}"), None).await.0, 404);
}

#[tokio::test]
async fn invalid_endpoints_are_422_naming_the_field_and_nothing_is_stored() {
    let app = TestApp::api_only().await;
    for (body, field) in [
        (json!({"url": "http://hooks.example.com/"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": URL, "events": ["delivery.sent", "delivery.opened"]}), "events[1]"),
        (json!({"url": URL, "events": []}), "events"),
        (json!({"url": URL, "types": ["no spaces allowed"]}), "types[0]"),
        (json!({"url": URL, "description": "x".repeat(501)}), "description"),
    ] {
        let (status, problem) = app.call("POST", "/v1/webhooks", Some(&body)).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, problem) = app.call("POST", "/v1/webhooks", Some(&json!({"url": URL, "secret": "mine"}))).await;
    assert_eq!(status, 422, "{problem}");
    assert!(app.env.store.list_webhook_endpoints(app.tenant_id).await.unwrap().is_empty());

    let id = create(&app, json!({"url": URL})).await["id"].as_str().unwrap().to_owned();
    let (status, problem) =
        app.call("PATCH", &format!("/v1/webhooks/{id}"), Some(&json!({"url": "ftp://files.example.com/"}))).await;
    assert_eq!((status, problem["errors"][0]["field"].clone()), (422, json!("url")), "{problem}");
    let (_, unchanged) = app.call("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(unchanged["url"], URL);
}

#[tokio::test]
async fn http_endpoints_are_accepted_where_the_operator_allows_them() {
    let app = TestApp::api_with(|c| c.webhooks.allow_http = true).await;
    create(&app, json!({"url": "http://127.0.0.1:9000/hook"})).await;
}

#[tokio::test]
async fn another_tenants_endpoint_is_not_found() {
    let app = TestApp::api_only().await;
    let id = create(&app, json!({"url": URL})).await["id"].as_str().unwrap().to_owned();
    let other = app.env.store.create_tenant("other").await.unwrap();
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/webhooks/{id}")),
        (reqwest::Method::PATCH, format!("/v1/webhooks/{id}")),
        (reqwest::Method::DELETE, format!("/v1/webhooks/{id}")),
        (reqwest::Method::POST, format!("/v1/webhooks/{id}/rotate-secret")),
    ] {
        let response =
            app.http.request(method, app.url(&path)).bearer_auth(&other.api_key).json(&json!({})).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = app.http.get(app.url("/v1/webhooks")).bearer_auth(&other.api_key).send().await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap(), json!([]));
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_beside_the_new_one_for_a_day() {
    let app = TestApp::api_only().await;
    let created = create(&app, json!({"url": URL})).await;
    let id = created["id"].as_str().unwrap();
    let (status, rotated) = app.call("POST", &format!("/v1/webhooks/{id}/rotate-secret"), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, created["secret"].as_str().unwrap());
    assert_eq!(stored_secrets(&app, id).await, (new.to_owned(), Some(created["secret"].as_str().unwrap().to_owned())));
    let until = time::OffsetDateTime::parse(
        rotated["previous_secret_until"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = until - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::hours(23) && left <= time::Duration::hours(24), "{left}");
}

/// The event types written for the tenant, in order.
async fn event_types(app: &TestApp) -> Vec<String> {
    app.env.store.webhook_events(app.tenant_id).await.unwrap().into_iter().map(|e| e.r#type).collect()
}

#[tokio::test]
async fn each_committed_change_writes_its_event_and_a_message_for_each_endpoint_that_takes_it() {
    let (app, _services) = TestApp::spawn().await;
    let all = create(&app, json!({"url": URL})).await;
    let sent_only = create(&app, json!({"url": URL, "events": ["delivery.sent"]})).await;
    let other_type = create(&app, json!({"url": URL, "types": ["order.shipped"]})).await;
    let disabled = create(&app, json!({"url": URL, "enabled": false})).await;

    let id = app.accept(&email("ada@example.com")).await;
    app.wait_for_status(id, "sent").await;
    let n = app.get(id).await;
    let delivery = n["deliveries"][0]["id"].as_str().unwrap().to_owned();
    // The status `sent` committed with both of its events.
    assert_eq!(event_types(&app).await, ["notification.accepted", "delivery.sent", "notification.completed"]);

    let events = app.env.store.webhook_events(app.tenant_id).await.unwrap();
    let sent = &events[1].payload.0;
    assert_eq!(sent["type"], "delivery.sent");
    let data = &sent["data"];
    assert_eq!(data["notification_id"], id.to_string());
    assert_eq!(data["delivery_id"], delivery);
    assert_eq!((data["channel"].clone(), data["status"].clone()), (json!("email"), json!("sent")));
    assert_eq!(data["provider_message_id"], n["deliveries"][0]["provider_message_id"]);
    assert_eq!(data["notification_type"], "test.email");
    assert!(data["updated_at"].is_string() && data["notification_updated_at"].is_string(), "{data}");
    // No address: the endpoint did not ask for them.
    assert!(!sent.to_string().contains("ada@example.com"), "{sent}");
    let completed = &events[2].payload.0["data"];
    assert_eq!(completed["status"], "sent");
    assert_eq!(completed["channels"], json!({"email": {"sent": 1}}));
    let sequences: Vec<i64> = events.iter().map(|e| e.payload.0["data"]["sequence"].as_i64().unwrap()).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");

    let pending = |endpoint: &Value| {
        let endpoint: Uuid = endpoint["id"].as_str().unwrap().parse().unwrap();
        let store = app.env.store.clone();
        let tenant = app.tenant_id;
        async move {
            store
                .pending_webhook_events(tenant, endpoint)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.r#type)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(pending(&all).await, ["notification.accepted", "delivery.sent", "notification.completed"]);
    assert_eq!(pending(&sent_only).await, ["delivery.sent"]);
    assert!(pending(&other_type).await.is_empty());
    // Kept for a replay, not sent.
    assert!(pending(&disabled).await.is_empty());
}

#[tokio::test]
async fn a_change_rolled_back_writes_no_event_a_tenant_without_endpoints_gets_none_and_old_ones_are_purged() {
    let app = TestApp::api_only().await;
    let id = app.accept(&email("ada@example.com")).await;
    let delivery: Uuid = sqlx::query_scalar("SELECT id FROM deliveries WHERE notification_id = $1")
        .bind(id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert!(event_types(&app).await.is_empty(), "no endpoint yet");

    create(&app, json!({"url": URL})).await;
    let mut tx = app.env.store.pool().begin().await.unwrap();
    sqlx::query("UPDATE deliveries SET status = 'sent', updated_at = now() WHERE id = $1")
        .bind(delivery)
        .execute(&mut *tx)
        .await
        .unwrap();
    let inside: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(inside, 1, "the event is written with the change");
    tx.rollback().await.unwrap();
    assert!(event_types(&app).await.is_empty());

    // The same change committed writes it.
    sqlx::query("UPDATE deliveries SET status = 'failed', last_error_code = 'invalid_address', updated_at = now() WHERE id = $1")
        .bind(delivery)
        .execute(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(event_types(&app).await, ["delivery.failed"]);
    let events = app.env.store.webhook_events(app.tenant_id).await.unwrap();
    assert_eq!(events[0].payload.0["data"]["error_code"], "invalid_address");
    let kinds: BTreeSet<String> = events.iter().map(|e| e.r#type.clone()).collect();
    assert!(kinds.iter().all(|k| domain::webhook::EVENT_TYPES.contains(&k.as_str())));

    // Kept for their retention, then purged.
    let store = &app.env.store;
    assert_eq!(store.purge_webhook_events(store::webhooks::EVENT_RETENTION).await.unwrap(), 0);
    assert_eq!(store.purge_webhook_events(std::time::Duration::ZERO).await.unwrap(), 1);
    assert!(event_types(&app).await.is_empty());
}

#[tokio::test]
async fn a_key_rotation_reseals_current_and_previous_secrets_so_the_old_key_can_go() {
    let k1 = crate::integrations::keys("k1", &[("k1", 1)]);
    let app = TestApp::api_with(|c| c.secrets = k1).await;
    let plain = create(&app, json!({"url": URL})).await;
    let rotated = create(&app, json!({"url": URL})).await;
    let id = rotated["id"].as_str().unwrap();
    let (_, new) = app.call("POST", &format!("/v1/webhooks/{id}/rotate-secret"), None).await;

    let both = crate::integrations::keys("k2", &[("k1", 1), ("k2", 2)]).keyring().unwrap().unwrap();
    let done = notify_api::rotation::rotate(&app.env.store, &both, 1).await.unwrap();
    assert_eq!(done.webhooks, notify_api::rotation::Counts { resealed: 2, ..Default::default() });
    let again = notify_api::rotation::rotate(&app.env.store, &both, 1).await.unwrap();
    assert_eq!(again.webhooks, notify_api::rotation::Counts::default(), "idempotent");

    let k2 = crate::integrations::keys("k2", &[("k2", 2)]).keyring().unwrap().unwrap();
    let open = |endpoint: &store::WebhookEndpoint, sealed: &str| {
        assert!(sealed.starts_with("v1.k2."), "{sealed}");
        let purpose = store::webhooks::purpose(endpoint.id);
        String::from_utf8(k2.open(&app.tenant_id, &purpose, sealed).unwrap()).unwrap()
    };
    let read = |id: &str| app.env.store.get_webhook_endpoint(app.tenant_id, id.parse().unwrap());
    let first = read(plain["id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(open(&first, &first.secret), plain["secret"].as_str().unwrap());
    let second = read(id).await.unwrap().unwrap();
    assert_eq!(open(&second, &second.secret), new["secret"].as_str().unwrap());
    assert_eq!(open(&second, second.previous_secret.as_deref().unwrap()), rotated["secret"].as_str().unwrap());
}

#[tokio::test]
async fn the_relay_carries_each_message_to_the_webhooks_queue_and_leaves_no_outbox_row() {
    let (app, _services) = TestApp::spawn().await;
    let endpoint = create(&app, json!({"url": URL, "events": ["delivery.sent", "notification.completed"]})).await;
    let endpoint: Uuid = endpoint["id"].as_str().unwrap().parse().unwrap();
    let id = app.accept(&email("ada@example.com")).await;
    app.wait_for_status(id, "sent").await;
    let expected: BTreeSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM webhook_messages WHERE endpoint_id = $1 AND tenant_id = $2")
            .bind(endpoint)
            .bind(app.tenant_id)
            .fetch_all(app.env.store.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(expected.len(), 2);

    let (_conn, amqp) = app.amqp().await;
    let queue = queue::topology::route_queue_name(domain::Route::Webhooks);
    assert_eq!(queue, "notify.webhooks");
    let carried = std::sync::Mutex::new(BTreeSet::new());
    crate::harness::eventually("both messages in notify.webhooks", || async {
        let options = lapin::options::BasicGetOptions { no_ack: true };
        if let Some(message) = amqp.basic_get(queue.as_str().into(), options).await.unwrap() {
            let message = domain::WebhookMessage::parse(&message.delivery.data).unwrap();
            assert_eq!((message.tenant_id, message.attempt), (app.tenant_id, 1));
            carried.lock().unwrap().insert(message.message_id);
        }
        (carried.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    let carried = carried.into_inner().unwrap();
    assert_eq!(carried, expected);
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 0);
}
