//! The tenant's classification of errors (seed 000): a notification that names only what
//! went wrong reaches the audience its error class (or its type) is classified with, at
//! the class's priority or its severity's; severity, error code and class are stored,
//! shown and filterable.

use serde_json::{Value, json};

use crate::harness::TestApp;

/// A notification with inline email content and no recipients, plus `fields`.
fn report(kind: &str, fields: Value) -> Value {
    let mut body = json!({"type": kind, "channels": ["email"], "content": {"subject": "Vendor", "text": "Vendor Name is missing"}});
    body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    body
}

async fn put(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, answer) = app.call("PUT", path, Some(&body)).await;
    assert!(status == 200 || status == 201, "PUT {path}: {status} {answer}");
    answer
}

/// Accepts `body`; its recipients and the notification as `GET` shows it.
async fn accept(app: &TestApp, body: Value) -> (Vec<String>, Value) {
    let (status, answer) = app.call("POST", "/v1/notifications", Some(&body)).await;
    assert_eq!(status, 202, "{answer}");
    let recipients =
        answer["deliveries"].as_array().unwrap().iter().map(|d| d["recipient"].as_str().unwrap().to_owned());
    let (status, view) = app.call("GET", &format!("/v1/notifications/{}", answer["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 200);
    (recipients.collect(), view)
}

fn ids(page: &Value) -> Vec<&str> {
    page["items"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_notification_that_names_only_its_error_reaches_the_classified_audience() {
    let app = TestApp::api_only().await;
    put(&app, "/v1/subscribers/agent", json!({"email": "agent@example.com"})).await;
    put(&app, "/v1/subscribers/buyer", json!({"email": "buyer@example.com"})).await;
    put(&app, "/v1/topics/support/subscribers", json!({"add": ["agent"]})).await;
    put(&app, "/v1/topics/customer/subscribers", json!({"add": ["buyer"]})).await;
    let table = json!({"classes": {"system": {"audience": "support", "priority": "urgent"}, "mapping": {"audience": "customer"}}});
    assert_eq!(put(&app, "/v1/classifications", table.clone()).await, table);
    assert_eq!(app.call("GET", "/v1/classifications", None).await, (200, table));
    put(&app, "/v1/types/vendor.mapping", json!({"channels": ["email"], "error_class": "mapping"})).await;
    put(&app, "/v1/types/vendor.note", json!({"channels": ["email"], "audience": "support"})).await;

    // The error class alone: its audience and its priority, over the severity's.
    let (to, system) = accept(
        &app,
        report("vendor.error", json!({"error_class": "system", "severity": "low", "error_code": "VENDOR_DOWN"})),
    )
    .await;
    assert_eq!(to, ["agent@example.com"]);
    assert_eq!(
        (&system["priority"], &system["severity"], &system["error_code"], &system["error_class"]),
        (&json!("urgent"), &json!("low"), &json!("VENDOR_DOWN"), &json!("system"))
    );
    // The type's error class, whose classification has no priority: the severity's.
    let (to, mapping) = accept(&app, report("vendor.mapping", json!({"severity": "high"}))).await;
    assert_eq!(
        (to, &mapping["priority"], &mapping["error_class"]),
        (vec!["buyer@example.com".to_owned()], &json!("high"), &json!("mapping"))
    );
    // The type's audience, with neither class nor severity: normal.
    let (to, note) = accept(&app, report("vendor.note", json!({}))).await;
    assert_eq!(
        (to, &note["priority"], &note["severity"]),
        (vec!["agent@example.com".to_owned()], &json!("normal"), &Value::Null)
    );
    // A priority given wins; recipients given are the recipients, the class still stored.
    let (to, given) = accept(
        &app,
        report(
            "vendor.error",
            json!({"error_class": "system", "priority": "low", "to": [{"email": "ops@example.com"}]}),
        ),
    )
    .await;
    assert_eq!(
        (to, &given["priority"], &given["error_class"]),
        (vec!["ops@example.com".to_owned()], &json!("low"), &json!("system"))
    );

    // Recipients named and no error class: nothing is classified (no statement is spent on
    // it); the type's error class is stored, and the priority is the severity's.
    let (to, named) =
        accept(&app, report("vendor.mapping", json!({"severity": "critical", "to": [{"email": "ops@example.com"}]})))
            .await;
    assert_eq!(
        (to, &named["priority"], &named["error_class"]),
        (vec!["ops@example.com".to_owned()], &json!("urgent"), &json!("mapping"))
    );

    // Nothing to go on: refused, naming `to`, and nothing written.
    for body in [report("vendor.error", json!({})), report("vendor.error", json!({"error_class": "unclassified"}))] {
        let (status, problem) = app.call("POST", "/v1/notifications", Some(&body)).await;
        assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!("to")), "{problem}");
    }
    let (_, all) = app.call("GET", "/v1/notifications", None).await;
    assert_eq!(ids(&all).len(), 5);

    // Filterable by each.
    for (query, expected) in [
        ("severity=low", vec![&system]),
        ("error_code=VENDOR_DOWN", vec![&system]),
        ("error_class=mapping", vec![&named, &mapping]),
        ("error_class=system", vec![&given, &system]),
    ] {
        let (status, page) = app.call("GET", &format!("/v1/notifications?{query}"), None).await;
        assert_eq!(status, 200, "{page}");
        let expected: Vec<&str> = expected.iter().map(|n| n["id"].as_str().unwrap()).collect();
        assert_eq!(ids(&page), expected, "{query}");
        assert_eq!(page["items"][0]["error_class"], expected_class(query), "{query}: the summary shows it");
    }
    let (status, problem) = app.call("GET", "/v1/notifications?severity=dire", None).await;
    assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!("severity")));
}

fn expected_class(query: &str) -> Value {
    match query {
        "error_class=mapping" => json!("mapping"),
        _ => json!("system"),
    }
}

#[tokio::test]
async fn a_classification_table_is_checked_and_replaced_whole() {
    let app = TestApp::api_only().await;
    put(&app, "/v1/classifications", json!({"classes": {"auth": {"audience": "support"}}})).await;
    for (body, field) in [
        (json!({"classes": {"no spaces": {"audience": "support"}}}), "classes.no spaces"),
        (json!({"classes": {"auth": {"audience": "everyone"}}}), "classes.auth.audience"),
        (json!({"classes": {"auth": ["support"]}}), "classes.auth"),
    ] {
        let (status, problem) = app.call("PUT", "/v1/classifications", Some(&body)).await;
        assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!(field)), "{body}: {problem}");
    }
    let replaced = json!({"classes": {"validation": {"audience": "customer", "priority": "low"}}});
    put(&app, "/v1/classifications", replaced.clone()).await;
    assert_eq!(app.call("GET", "/v1/classifications", None).await, (200, replaced));
    put(&app, "/v1/classifications", json!({})).await;
    assert_eq!(app.call("GET", "/v1/classifications", None).await, (200, json!({"classes": {}})));
}
