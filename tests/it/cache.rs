//! The API's cache of callers, tenant settings, types and compiled templates: a change is
//! seen by the next request on the replica that made it, by other replicas and after
//! changes from other processes once the change notification arrived, and nothing stale
//! is served after the LISTEN connection dropped.

use serde_json::{Value, json};

use crate::harness::{NOTIFIED, TestApp, eventually, within};

/// Waits until the API at `api` serves from its cache (its LISTEN is up): before that it
/// reads everything from the database, and the tests below would pass without a cache.
async fn wait_listening(app: &TestApp, api: &str) {
    eventually("the API's cache listening", || async {
        let ready: Value = app.http.get(format!("{api}/readyz")).send().await.ok()?.json().await.ok()?;
        (ready["cache"] == "listening").then_some(())
    })
    .await
}

async fn put(app: &TestApp, api: &str, path: &str, body: Value) {
    let response = app.http.put(format!("{api}{path}")).bearer_auth(&app.api_key).json(&body).send().await.unwrap();
    let status = response.status();
    assert!(status.is_success(), "PUT {path}: {status} {}", response.text().await.unwrap());
}

/// The type `order.shipped` on `channels`, with an email template saying `email` and an
/// SMS template, through the API at `api`.
async fn order_type(app: &TestApp, api: &str, channels: &[&str], email: &str) {
    put(app, api, "/v1/types/order.shipped", json!({"channels": channels})).await;
    put(app, api, "/v1/templates/order.shipped/email", json!({"subject": "Order {{ order }}", "text": email})).await;
    put(app, api, "/v1/templates/order.shipped/sms", json!({"text": "SMS: order {{ order }} shipped"})).await;
}

/// POSTs an `order.shipped` notification (no inline content) to the API at `api`; returns
/// each delivery's channel and rendered text, in channel order.
async fn rendered(app: &TestApp, api: &str) -> Vec<(String, String)> {
    let body = json!({"type": "order.shipped", "to": [{"email": "ada@example.com", "phone": "+15551230001"}],
                      "data": {"order": "991"}});
    let response =
        app.http.post(format!("{api}/v1/notifications")).bearer_auth(&app.api_key).json(&body).send().await.unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    let deliveries = app.deliveries_with_content(answer["id"].as_str().unwrap().parse().unwrap()).await;
    let mut out: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| (d["channel"].as_str().unwrap().to_owned(), d["content"]["text"].as_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

fn email_only(text: &str) -> Vec<(String, String)> {
    vec![("email".to_owned(), text.to_owned())]
}

fn email_and_sms(text: &str) -> Vec<(String, String)> {
    vec![("email".to_owned(), text.to_owned()), ("sms".to_owned(), "SMS: order 991 shipped".to_owned())]
}

/// Runs `sql` (with the tenant as `$1`) with triggers off (`session_replication_role =
/// replica`): a change no replica is told of, as if its notification were lost.
async fn unnotified(app: &TestApp, sql: &str) {
    let mut tx = app.env.store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
    sqlx::query(sql).bind(app.tenant_id).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_change_from_another_process_is_seen_right_after() {
    let app = TestApp::api_only().await;
    wait_listening(&app, &app.api_url).await;

    // A key revoked through the store, as `notify-admin revoke-key` does, while the
    // API has it cached.
    let (key_id, key) = app.env.store.create_api_key(app.tenant_id).await.unwrap().unwrap();
    let post = || app.http.post(app.url("/v1/notifications")).bearer_auth(&key).json(&crate::harness::email("a@x.io"));
    for _ in 0..2 {
        assert_eq!(post().send().await.unwrap().status(), 202);
    }
    assert!(app.env.store.revoke_api_key(key_id).await.unwrap());
    within(NOTIFIED, "the revoked key refused", || async {
        (post().send().await.unwrap().status() == 401).then_some(())
    })
    .await;
    assert_eq!(app.post(&crate::harness::email("a@x.io")).await.0, 202, "the tenant's other key still works");

    // A tenant setting changed by hand in SQL: the cached answer that `made.up` is no type
    // of the tenant, allowed as ad hoc, gives way.
    let adhoc = json!({"type": "made.up", "to": [{"email": "a@x.io"}], "content": {"subject": "s", "text": "t"}});
    assert_eq!(app.post(&adhoc).await.0, 202);
    sqlx::query("UPDATE tenants SET adhoc_types = false WHERE id = $1")
        .bind(app.tenant_id)
        .execute(app.env.store.pool())
        .await
        .unwrap();
    let refused = within(NOTIFIED, "ad hoc types refused", || async {
        let (status, answer) = app.post(&adhoc).await;
        (status == 422).then_some(answer)
    })
    .await;
    assert_eq!(refused["errors"][0]["field"], "type");
}

#[tokio::test]
async fn a_type_or_template_put_is_seen_by_the_next_notification_of_the_same_replica() {
    let app = TestApp::api_only().await;
    // No notifications at all: only the replica's own eviction on its write is left.
    for table in ["tenants", "api_keys", "notification_types", "templates"] {
        sqlx::query(&format!("ALTER TABLE {table} DISABLE TRIGGER notify_cache"))
            .execute(app.env.store.pool())
            .await
            .unwrap();
    }
    wait_listening(&app, &app.api_url).await;
    let api = &app.api_url;
    order_type(&app, api, &["email"], "Order {{ order }} shipped").await;
    assert_eq!(rendered(&app, api).await, email_only("Order 991 shipped"));
    assert_eq!(rendered(&app, api).await, email_only("Order 991 shipped"), "served from the cache");

    put(&app, api, "/v1/templates/order.shipped/email", json!({"subject": "Order", "text": "On its way: {{ order }}"}))
        .await;
    assert_eq!(rendered(&app, api).await, email_only("On its way: 991"));

    put(&app, api, "/v1/types/order.shipped", json!({"channels": ["email", "sms"]})).await;
    assert_eq!(rendered(&app, api).await, email_and_sms("On its way: 991"));

    let delete = app.http.delete(app.url("/v1/templates/order.shipped/sms")).bearer_auth(&app.api_key);
    assert_eq!(delete.send().await.unwrap().status(), 204);
    let (status, answer) = app
        .post(&json!({"type": "order.shipped", "to": [{"email": "a@x.io", "phone": "+15551230001"}],
                      "data": {"order": "1"}}))
        .await;
    assert_eq!(status, 422, "the SMS template is gone: {answer}");
}

#[tokio::test]
async fn a_change_through_one_replica_is_seen_by_the_other() {
    let app = TestApp::api_only().await;
    let (other, _other) = app.second_api(|_| {}).await;
    wait_listening(&app, &app.api_url).await;
    wait_listening(&app, &other).await;
    order_type(&app, &app.api_url, &["email"], "Order {{ order }} shipped").await;
    assert_eq!(rendered(&app, &other).await, email_only("Order 991 shipped"));

    put(&app, &app.api_url, "/v1/templates/order.shipped/email", json!({"subject": "Order", "text": "v2 {{ order }}"}))
        .await;
    within(NOTIFIED, "the other replica rendering the new template", || async {
        (rendered(&app, &other).await == email_only("v2 991")).then_some(())
    })
    .await;

    put(&app, &app.api_url, "/v1/types/order.shipped", json!({"channels": ["email", "sms"]})).await;
    within(NOTIFIED, "the other replica sending on the type's new channels", || async {
        (rendered(&app, &other).await == email_and_sms("v2 991")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn nothing_stale_is_served_after_the_listen_connection_dropped() {
    let app = TestApp::api_only().await;
    wait_listening(&app, &app.api_url).await;
    let api = &app.api_url;
    order_type(&app, api, &["email"], "Order {{ order }} shipped").await;
    assert_eq!(rendered(&app, api).await, email_only("Order 991 shipped"));

    // A change whose notification is lost: the cached template is still served.
    unnotified(
        &app,
        r#"UPDATE templates SET content = '{"subject": "Order", "text": "missed {{ order }}"}'
           WHERE tenant_id = $1 AND channel = 'email'"#,
    )
    .await;
    assert_eq!(rendered(&app, api).await, email_only("Order 991 shipped"));

    // The LISTEN connection drops: whatever it may have missed is dropped with it.
    let (terminated,): (i64,) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(store::CACHE_LISTENER_NAME)
    .fetch_one(app.env.store.pool())
    .await
    .unwrap();
    assert_eq!(terminated, 1);
    eventually("the change made while unheard served", || async {
        (rendered(&app, api).await == email_only("missed 991")).then_some(())
    })
    .await;

    // LISTEN is back, and changes from elsewhere are heard again.
    wait_listening(&app, api).await;
    assert_eq!(rendered(&app, api).await, email_only("missed 991"));
    let content = serde_json::from_value(json!({"subject": "Order", "text": "heard {{ order }}"})).unwrap();
    let put = app.env.store.put_template(app.tenant_id, "order.shipped", domain::Channel::Email, "en", &content);
    assert!(put.await.unwrap().is_some());
    within(NOTIFIED, "the change after the reconnect served", || async {
        (rendered(&app, api).await == email_only("heard 991")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_cache_keeps_tenants_apart() {
    let app = TestApp::api_only().await;
    wait_listening(&app, &app.api_url).await;
    order_type(&app, &app.api_url, &["email"], "Order {{ order }} shipped").await;
    assert_eq!(rendered(&app, &app.api_url).await, email_only("Order 991 shipped"));
    // Another tenant naming the same type has none: its notification is ad hoc and
    // needs inline content.
    let other = app.env.store.create_tenant("other").await.unwrap();
    let body = json!({"type": "order.shipped", "to": [{"email": "a@x.io"}], "data": {"order": "1"}});
    let response = app.http.post(app.url("/v1/notifications")).bearer_auth(&other.api_key).json(&body).send().await;
    assert_eq!(response.unwrap().status(), 422);
}
