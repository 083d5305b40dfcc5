//! Subscribers, their preferences and erasure; topics; notification types; tenant settings.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestApp;

/// The fields a `422` names, in order.
fn fields(status: u16, body: &Value) -> Vec<String> {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "validation_failed", "{body}");
    body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

/// A call with another key than the test tenant's.
async fn call_as(app: &TestApp, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app.http.request(method.parse().unwrap(), app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put_subscriber(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, answer) = app.call("PUT", &format!("/v1/subscribers/{id}"), Some(&body)).await;
    assert!(matches!(status, 200 | 201), "PUT {id}: {status} {answer}");
    answer
}

#[tokio::test]
async fn a_subscriber_is_created_replaced_read_and_checked() {
    let app = TestApp::api_only().await;
    let full = json!({"email": "ada@example.com", "phone": "+15551234567", "whatsapp": "+15557654321",
        "locale": "pt_br", "timezone": "America/Sao_Paulo", "data": {"first_name": "Ada"}});
    let (status, created) = app.call("PUT", "/v1/subscribers/u-1", Some(&full)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "u-1");
    assert_eq!(created["locale"], "pt-BR", "stored in normal form");
    assert_eq!(created["timezone"], "America/Sao_Paulo");
    assert_eq!(created["data"], json!({"first_name": "Ada"}));
    let (status, read) = app.call("GET", "/v1/subscribers/u-1", None).await;
    assert_eq!((status, &read), (200, &created));

    // PUT replaces: what is left out is cleared; preferences stay.
    let (status, _) =
        app.call("PUT", "/v1/subscribers/u-1/preferences", Some(&json!({"channels": {"sms": false}}))).await;
    assert_eq!(status, 200);
    let (status, replaced) = app.call("PUT", "/v1/subscribers/u-1", Some(&json!({"email": "ada@example.org"}))).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["email"], "ada@example.org");
    assert_eq!(replaced["phone"], Value::Null);
    assert_eq!(replaced["data"], json!({}));
    assert_eq!(replaced["created_at"], created["created_at"]);
    let (_, preferences) = app.call("GET", "/v1/subscribers/u-1/preferences", None).await;
    assert_eq!(preferences["channels"], json!({"sms": false}));

    // An empty body is a subscriber without addresses.
    let (status, _) = app.call("PUT", "/v1/subscribers/bare", Some(&json!({}))).await;
    assert_eq!(status, 201);

    let bad = json!({"email": "nope", "phone": "555", "whatsapp": "+0", "locale": "english",
        "timezone": "Europe/Atlantis"});
    let (status, body) = app.call("PUT", "/v1/subscribers/u-2", Some(&bad)).await;
    assert_eq!(fields(status, &body), ["email", "phone", "whatsapp", "locale", "timezone"]);
    let big = json!({"data": {"blob": "x".repeat(65 * 1024)}});
    let (status, body) = app.call("PUT", "/v1/subscribers/u-2", Some(&big)).await;
    assert_eq!(fields(status, &body), ["data"]);
    let (status, body) = app.call("PUT", "/v1/subscribers/u-2", Some(&json!({"mail": "a@example.com"}))).await;
    assert_eq!(fields(status, &body), ["mail"]);
    let (status, body) = app.call("PUT", &format!("/v1/subscribers/{}", "x".repeat(201)), Some(&json!({}))).await;
    assert_eq!(fields(status, &body), ["id"]);
    let (status, body) = app.call("PUT", "/v1/subscribers/a%2Fb", Some(&json!({}))).await;
    assert_eq!(fields(status, &body), ["id"]);
    let (status, _) = app.call("GET", "/v1/subscribers/u-2", None).await;
    assert_eq!(status, 404, "nothing was stored");
    let (status, _) = app.call("DELETE", "/v1/subscribers/u-2", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn preferences_round_trip_and_are_checked() {
    let app = TestApp::api_only().await;
    let (status, _) = app.call("GET", "/v1/subscribers/u-1/preferences", None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call("PUT", "/v1/subscribers/u-1/preferences", Some(&json!({}))).await;
    assert_eq!(status, 404);

    put_subscriber(&app, "u-1", json!({"email": "ada@example.com"})).await;
    let (status, defaults) = app.call("GET", "/v1/subscribers/u-1/preferences", None).await;
    assert_eq!(status, 200);
    assert_eq!(defaults, json!({"channels": {}, "types": {}, "categories": {}, "quiet_hours": null}));

    let document = json!({"channels": {"sms": false, "email": true},
        "types": {"invoice.overdue": {"sms": true}}, "categories": {"marketing": {"email": false}},
        "quiet_hours": {"start": "22:00", "end": "07:00"}});
    let (status, stored) = app.call("PUT", "/v1/subscribers/u-1/preferences", Some(&document)).await;
    assert_eq!((status, &stored), (200, &document));
    let (_, read) = app.call("GET", "/v1/subscribers/u-1/preferences", None).await;
    assert_eq!(read, document);

    let path = "/v1/subscribers/u-1/preferences";
    let (status, body) = app.call("PUT", path, Some(&json!({"quiet_hours": {"start": "25:00", "end": "7:00"}}))).await;
    assert_eq!(fields(status, &body), ["quiet_hours.start", "quiet_hours.end"]);
    let (status, body) = app.call("PUT", path, Some(&json!({"quiet_hours": {"start": "22:00", "end": "22:00"}}))).await;
    assert_eq!(fields(status, &body), ["quiet_hours.end"]);
    let (status, body) = app.call("PUT", path, Some(&json!({"types": {"bad key": {"sms": false}}}))).await;
    assert_eq!(fields(status, &body), ["types.bad key"]);
    let (status, body) = app.call("PUT", path, Some(&json!({"channels": {"fax": false}}))).await;
    assert!(fields(status, &body)[0].starts_with("channels"), "{body}");
    let (status, body) = app.call("PUT", path, Some(&json!({"quiet": true}))).await;
    assert_eq!(fields(status, &body), ["quiet"]);
    let (_, unchanged) = app.call("GET", path, None).await;
    assert_eq!(unchanged, document, "a refused document changes nothing");
}

#[tokio::test]
async fn topic_members_are_added_removed_and_listed_in_pages() {
    let app = TestApp::api_only().await;
    for id in ["a", "b", "c", "d"] {
        put_subscriber(&app, id, json!({})).await;
    }
    let path = "/v1/topics/support/subscribers";
    let (status, body) = app.call("PUT", path, Some(&json!({"add": ["c", "a", "b", "a"]}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"topic": "support", "added": 3, "removed": 0}));
    let (_, body) = app.call("PUT", path, Some(&json!({"add": ["a", "d"], "remove": ["c", "zz"]}))).await;
    assert_eq!(body, json!({"topic": "support", "added": 1, "removed": 1}));

    let (status, first) = app.call("GET", &format!("{path}?limit=2"), None).await;
    assert_eq!(status, 200);
    assert_eq!(first["items"], json!(["a", "b"]));
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app.call("GET", &format!("{path}?limit=2&cursor={cursor}"), None).await;
    assert_eq!(second["items"], json!(["d"]));
    assert!(second.get("next_cursor").is_none(), "{second}");
    let (_, all) = app.call("GET", path, None).await;
    assert_eq!(all["items"], json!(["a", "b", "d"]));
    let (_, empty) = app.call("GET", "/v1/topics/nobody/subscribers", None).await;
    assert_eq!(empty["items"], json!([]));

    // Unknown ids in `add` are named, and nothing changes.
    let (status, body) =
        app.call("PUT", path, Some(&json!({"add": ["c", "ghost", "x", "ghost"], "remove": ["a"]}))).await;
    assert_eq!(fields(status, &body), ["add[1]", "add[2]", "add[3]"]);
    let (_, all) = app.call("GET", path, None).await;
    assert_eq!(all["items"], json!(["a", "b", "d"]));

    let (status, body) = app.call("PUT", path, Some(&json!({"add": ["a"], "remove": ["b", "a"]}))).await;
    assert_eq!(fields(status, &body), ["remove[1]"]);
    let (status, body) = app.call("PUT", path, Some(&json!({"add": ["", "ok"]}))).await;
    assert_eq!(fields(status, &body), ["add[0]"]);
    let many: Vec<String> = (0..10_001).map(|i| format!("s-{i}")).collect();
    let (status, body) = app.call("PUT", path, Some(&json!({"remove": many}))).await;
    assert_eq!(fields(status, &body), ["add"]);
    let (status, body) = app.call("PUT", "/v1/topics/bad%20key/subscribers", Some(&json!({"add": ["a"]}))).await;
    assert_eq!(fields(status, &body), ["key"]);
    let (status, body) = app.call("GET", &format!("{path}?limit=0"), None).await;
    assert_eq!(fields(status, &body), ["limit"]);
    let (status, body) = app.call("GET", &format!("{path}?cursor=zz"), None).await;
    assert_eq!(fields(status, &body), ["cursor"]);
    let (status, body) = app.call("GET", &format!("{path}?page=2"), None).await;
    assert_eq!(fields(status, &body), ["page"]);
}

#[tokio::test]
async fn ten_thousand_members_are_added_in_one_request() {
    let app = TestApp::api_only().await;
    sqlx::query("INSERT INTO subscribers (tenant_id, id) SELECT $1, 'm-' || i FROM generate_series(0, 9999) i")
        .bind(app.tenant_id)
        .execute(app.env.store.pool())
        .await
        .unwrap();
    let ids: Vec<String> = (0..10_000).map(|i| format!("m-{i}")).collect();
    let (status, body) = app.call("PUT", "/v1/topics/all/subscribers", Some(&json!({"add": ids}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["added"], 10_000);
    let (_, page) = app.call("GET", "/v1/topics/all/subscribers?limit=1000", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1000);
    let (status, body) = app.call("PUT", "/v1/topics/all/subscribers", Some(&json!({"remove": ids}))).await;
    assert_eq!((status, &body["removed"]), (200, &json!(10_000)));
}

#[tokio::test]
async fn types_are_put_read_listed_and_checked() {
    let app = TestApp::api_only().await;
    let definition = json!({"channels": ["email", "sms"], "critical": true, "novu_workflow": "invoice-overdue",
        "retry": {"max_attempts": 6, "initial_delay": "30s"}, "category": "billing", "preferences": {"sms": false}});
    let (status, created) = app.call("PUT", "/v1/types/invoice.overdue", Some(&definition)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["key"], "invoice.overdue");
    assert_eq!(created["channels"], json!(["email", "sms"]));
    assert_eq!(created["critical"], true);
    assert_eq!(created["retry"]["max_attempts"], 6);
    assert_eq!(created["retry"]["initial_delay"], "30s");
    assert_eq!(created["preferences"], json!({"sms": false}));
    let (status, read) = app.call("GET", "/v1/types/invoice.overdue", None).await;
    assert_eq!((status, &read), (200, &created));

    let (status, replaced) = app.call("PUT", "/v1/types/invoice.overdue", Some(&json!({"channels": ["email"]}))).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["critical"], false);
    assert_eq!(replaced["retry"], Value::Null);
    assert_eq!(replaced["preferences"], json!({}));
    // A key with `/` is sent percent-encoded.
    let (status, _) = app.call("PUT", "/v1/types/billing%2Freminder", Some(&json!({"channels": ["sms"]}))).await;
    assert_eq!(status, 201);
    let (status, _) = app.call("GET", "/v1/types/billing%2Freminder", None).await;
    assert_eq!(status, 200);
    let (_, list) = app.call("GET", "/v1/types", None).await;
    let keys: Vec<&str> = list["items"].as_array().unwrap().iter().map(|t| t["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["billing/reminder", "invoice.overdue"]);

    let (status, body) = app.call("PUT", "/v1/types/t", Some(&json!({"channels": []}))).await;
    assert_eq!(fields(status, &body), ["channels"]);
    let bad = json!({"channels": ["email", "email"], "retry": {"max_attempts": 0}, "category": "a b"});
    let (status, body) = app.call("PUT", "/v1/types/t", Some(&bad)).await;
    assert_eq!(fields(status, &body), ["channels[1]", "retry.max_attempts", "category"]);
    let (status, body) = app.call("PUT", "/v1/types/t", Some(&json!({"channels": ["fax"]}))).await;
    assert_eq!(fields(status, &body), ["channels[0]"]);
    let (status, body) = app.call("PUT", "/v1/types/t", Some(&json!({"channels": ["email"], "retries": 3}))).await;
    assert_eq!(fields(status, &body), ["retries"]);
    let (status, body) = app.call("PUT", "/v1/types/t", Some(&json!({}))).await;
    assert_eq!(fields(status, &body), ["channels"]);
    let (status, body) = app.call("PUT", "/v1/types/bad%20key", Some(&json!({"channels": ["email"]}))).await;
    assert_eq!(fields(status, &body), ["key"]);
    let (status, _) = app.call("GET", "/v1/types/t", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn another_tenant_sees_none_of_it() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, "u-1", json!({"email": "ada@example.com"})).await;
    let (status, _) = app.call("PUT", "/v1/topics/support/subscribers", Some(&json!({"add": ["u-1"]}))).await;
    assert_eq!(status, 200);
    let (status, _) = app.call("PUT", "/v1/types/invoice.overdue", Some(&json!({"channels": ["email"]}))).await;
    assert_eq!(status, 201);

    let other = app.env.store.create_tenant("other").await.unwrap();
    let key = other.api_key.as_str();
    for (method, path) in [
        ("GET", "/v1/subscribers/u-1"),
        ("DELETE", "/v1/subscribers/u-1"),
        ("GET", "/v1/subscribers/u-1/preferences"),
        ("GET", "/v1/types/invoice.overdue"),
    ] {
        let (status, _) = call_as(&app, key, method, path, None).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _) = call_as(&app, key, "PUT", "/v1/subscribers/u-1/preferences", Some(json!({}))).await;
    assert_eq!(status, 404);
    let (status, body) =
        call_as(&app, key, "PUT", "/v1/topics/support/subscribers", Some(json!({"add": ["u-1"]}))).await;
    assert_eq!(fields(status, &body), ["add[0]"]);
    let (_, members) = call_as(&app, key, "GET", "/v1/topics/support/subscribers", None).await;
    assert_eq!(members["items"], json!([]));
    let (_, types) = call_as(&app, key, "GET", "/v1/types", None).await;
    assert_eq!(types["items"], json!([]));

    // The same id is another subscriber there.
    let (status, theirs) =
        call_as(&app, key, "PUT", "/v1/subscribers/u-1", Some(json!({"email": "someone@example.com"}))).await;
    assert_eq!(status, 201, "{theirs}");
    let (_, ours) = app.call("GET", "/v1/subscribers/u-1", None).await;
    assert_eq!(ours["email"], "ada@example.com");
    let (_, members) = app.call("GET", "/v1/topics/support/subscribers", None).await;
    assert_eq!(members["items"], json!(["u-1"]));
}

/// Inserts a notification with its deliveries, as the intake would: each delivery is
/// (channel, recipient, subscriber_id, status).
async fn insert_notification(app: &TestApp, tenant_id: Uuid, deliveries: &[(&str, &str, Option<&str>, &str)]) -> Uuid {
    let pool = app.env.store.pool();
    let id = Uuid::now_v7();
    let any_sent = deliveries.iter().any(|d| d.3 == "sent");
    sqlx::query(
        "INSERT INTO notifications (id, tenant_id, type, status, priority, data, content)
         VALUES ($1, $2, 'invoice.overdue', $3, 'normal', '{\"name\": \"Ada\"}',
                 '{\"subject\": \"Hello Ada\", \"text\": \"Your invoice\"}')",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(if any_sent { "processing" } else { "pending" })
    .execute(pool)
    .await
    .unwrap();
    for (channel, recipient, subscriber_id, status) in deliveries {
        let delivery = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO deliveries (id, tenant_id, notification_id, channel, recipient, status, attempts, provider,
                                     subscriber_id, content, last_error_message)
             VALUES ($1, $2, $3, $4, $5, $6, 1, 'sandbox', $7, '{\"subject\": \"Hello Ada\", \"text\": \"Hi\"}',
                     'mailbox ' || $5 || ' is full')",
        )
        .bind(delivery)
        .bind(tenant_id)
        .bind(id)
        .bind(channel)
        .bind(recipient)
        .bind(status)
        .bind(subscriber_id)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO delivery_attempts (tenant_id, delivery_id, number, provider, outcome, error_message,
                                            response_excerpt, latency_ms, started_at)
             VALUES ($1, $2, 1, 'sandbox', 'sent', 'to ' || $3, '{\"to\": \"' || $3 || '\"}', 12, now())",
        )
        .bind(tenant_id)
        .bind(delivery)
        .bind(recipient)
        .execute(pool)
        .await
        .unwrap();
        if *status == "pending" {
            sqlx::query(
                "INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority)
                 VALUES ($1, $2, $3, $4, 1, 1)",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(delivery)
            .bind(channel)
            .execute(pool)
            .await
            .unwrap();
        }
    }
    id
}

fn recipients_and_statuses(n: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = n["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["recipient"].as_str().unwrap().to_owned(), d["status"].as_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn erasing_a_subscriber_redacts_its_history_and_keeps_ids_and_statuses() {
    let app = TestApp::api_only().await;
    let pool = app.env.store.pool();
    put_subscriber(&app, "u-1", json!({"email": "ada@example.com", "phone": "+15551234567"})).await;
    put_subscriber(&app, "u-2", json!({"email": "bob@example.com"})).await;
    let (status, _) = app.call("PUT", "/v1/topics/support/subscribers", Some(&json!({"add": ["u-1", "u-2"]}))).await;
    assert_eq!(status, 200);

    // To Ada alone, by subscriber id: one sent email, one SMS still waiting in the outbox.
    let alone = insert_notification(
        &app,
        app.tenant_id,
        &[("email", "ada@example.com", Some("u-1"), "sent"), ("sms", "+15551234567", Some("u-1"), "pending")],
    )
    .await;
    // Inline addresses, Ada's in another case, with Bob's.
    let shared = insert_notification(
        &app,
        app.tenant_id,
        &[("email", "ADA@Example.com", None, "failed"), ("email", "bob@example.com", None, "sent")],
    )
    .await;
    // Another tenant's delivery to the same address is not ours to erase.
    let other = app.env.store.create_tenant("other").await.unwrap();
    let foreign = insert_notification(&app, other.tenant_id, &[("email", "ada@example.com", None, "sent")]).await;
    sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, notification_id, response)
         SELECT $1, 'k-1', '\\x00', $2, jsonb_build_object('id', $2, 'deliveries',
             (SELECT jsonb_agg(jsonb_build_object('id', id, 'recipient', recipient)) FROM deliveries
              WHERE notification_id = $2))",
    )
    .bind(app.tenant_id)
    .bind(alone)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO suppressions (tenant_id, channel, address, reason, source)
         VALUES ($1, 'email', 'ada@example.com', 'bounce', 'ses'), ($1, 'email', 'bob@example.com', 'bounce', 'ses')",
    )
    .bind(app.tenant_id)
    .execute(pool)
    .await
    .unwrap();
    let before_alone = app.get(alone).await;
    let before_shared = app.get(shared).await;

    let (status, body) = app.call("DELETE", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 204, "{body}");

    // Gone, with its preferences and memberships.
    for path in ["/v1/subscribers/u-1", "/v1/subscribers/u-1/preferences"] {
        let (status, _) = app.call("GET", path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, members) = app.call("GET", "/v1/topics/support/subscribers", None).await;
    assert_eq!(members["items"], json!(["u-2"]));
    let (status, _) = app.call("DELETE", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 404);

    // History keeps ids and finished statuses; the waiting SMS is cancelled.
    let after = app.get(alone).await;
    let ids = |n: &Value| n["deliveries"].as_array().unwrap().iter().map(|d| d["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before_alone));
    assert_eq!(
        recipients_and_statuses(&after),
        [("[erased]".to_owned(), "cancelled".to_owned()), ("[erased]".to_owned(), "sent".to_owned())]
    );
    assert_eq!(after["status"], "sent", "the aggregate follows the cancelled SMS");
    assert_eq!(after["data"], json!({}), "a notification to Ada alone loses its data");
    assert_eq!(after["content"], json!({}));
    for d in after["deliveries"].as_array().unwrap() {
        assert_eq!(d["content"], Value::Null, "{d}");
        assert_eq!(d["last_error_message"], Value::Null, "{d}");
        for a in d["attempts"].as_array().unwrap() {
            assert_eq!(a["error_message"], Value::Null, "{a}");
            assert_eq!(a["outcome"], "sent");
        }
    }
    let shared_after = app.get(shared).await;
    assert_eq!(ids(&shared_after), ids(&before_shared));
    assert_eq!(
        recipients_and_statuses(&shared_after),
        [("[erased]".to_owned(), "failed".to_owned()), ("bob@example.com".to_owned(), "sent".to_owned())]
    );
    assert_eq!(shared_after["status"], before_shared["status"]);
    assert_eq!(shared_after["data"], json!({"name": "Ada"}), "shared with Bob: kept");
    let bobs = shared_after["deliveries"].as_array().unwrap().iter().find(|d| d["recipient"] == "bob@example.com");
    assert_eq!(bobs.unwrap()["last_error_message"], "mailbox bob@example.com is full");

    // What the API does not show.
    let (excerpts,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
         WHERE d.recipient = '[erased]' AND (a.response_excerpt IS NOT NULL OR a.error_message IS NOT NULL)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(excerpts, 0);
    let (outbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(pool).await.unwrap();
    assert_eq!(outbox, 0, "the cancelled SMS is not published");
    let (response,): (Value,) =
        sqlx::query_as("SELECT response FROM idempotency_keys WHERE key = 'k-1'").fetch_one(pool).await.unwrap();
    assert!(response["deliveries"].as_array().unwrap().iter().all(|d| d["recipient"] == "[erased]"), "{response}");
    let (suppressed,): (Vec<String>,) =
        sqlx::query_as("SELECT array_agg(address ORDER BY address) FROM suppressions WHERE tenant_id = $1")
            .bind(app.tenant_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(suppressed, ["bob@example.com"]);
    let (leaks,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id
         WHERE d.tenant_id = $1 AND (d::text ILIKE '%ada@example.com%' OR a::text ILIKE '%ada@example.com%'
                                     OR d::text LIKE '%+15551234567%' OR a::text LIKE '%+15551234567%')",
    )
    .bind(app.tenant_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0);

    // The other tenant's history is untouched.
    let (recipient,): (String,) = sqlx::query_as("SELECT recipient FROM deliveries WHERE notification_id = $1")
        .bind(foreign)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(recipient, "ada@example.com");

    // Audited, naming the subscriber and the caller.
    let (actor, detail): (String, Value) = sqlx::query_as(
        "SELECT actor, detail FROM audit_events
         WHERE tenant_id = $1 AND subscriber_id = 'u-1' AND action = 'subscriber_erased' AND notification_id IS NULL",
    )
    .bind(app.tenant_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(actor.starts_with("api_key:"), "{actor}");
    assert_eq!(detail["deliveries_redacted"], 3, "{detail}");
    assert_eq!(detail["deliveries_cancelled"], 1, "{detail}");
    assert_eq!(detail["notifications_redacted"], 1, "{detail}");
    assert_eq!(detail["suppressions_removed"], 1, "{detail}");
}

#[tokio::test]
async fn tenant_settings_are_set_one_at_a_time() {
    let app = TestApp::api_only().await;
    let store = &app.env.store;
    let read = || async {
        let row: (String, bool) = sqlx::query_as("SELECT default_locale, adhoc_types FROM tenants WHERE id = $1")
            .bind(app.tenant_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
        row
    };
    assert_eq!(read().await, ("en".to_owned(), true));
    assert!(store.set_tenant_settings(app.tenant_id, Some("de"), None, None).await.unwrap());
    assert_eq!(read().await, ("de".to_owned(), true));
    assert!(store.set_tenant_settings(app.tenant_id, None, Some(false), None).await.unwrap());
    assert_eq!(read().await, ("de".to_owned(), false));
    assert!(!store.set_tenant_settings(Uuid::now_v7(), Some("fr"), None, None).await.unwrap());
}
