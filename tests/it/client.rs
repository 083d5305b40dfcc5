//! The Rust client (`crates/notify-client`) against the real API: typed requests,
//! idempotency keys, retries of `429` after `Retry-After`, problems as typed errors, and
//! seed 000's `notify(message, severity)` from a task's context.

use notify_client::{
    Audience, Client, Content, Error, NewNotification, NotifyContext, NotifyOptions, Recipient, Retries, Severity,
    notify, notify_with, with_notify_context,
};
use serde_json::{Value, json};

use crate::harness::TestApp;

fn email(to: &str) -> NewNotification {
    NewNotification {
        kind: "order.shipped".into(),
        to: vec![Recipient { email: Some(to.into()), ..Recipient::default() }],
        content: Some(Content {
            subject: Some("Shipped".into()),
            text: Some("On its way".into()),
            ..Content::default()
        }),
        ..NewNotification::default()
    }
}

fn client_of(app: &TestApp) -> Client {
    Client::new(app.url(""), &app.api_key).unwrap()
}

#[tokio::test]
async fn sends_typed_requests_safely_retried_and_reads_problems() {
    // One notification a second: a burst of three is refused twice and retried.
    let app = TestApp::api_with(|c| c.rate_limit = notify_api::Rate { per_second: 1, burst: 1 }).await;
    let client = client_of(&app);
    let mut ids = Vec::new();
    for i in 0..3 {
        let accepted = client.send(&email(&format!("u{i}@example.com"))).await.unwrap();
        assert_eq!(accepted.deliveries[0].recipient, format!("u{i}@example.com"));
        ids.push(accepted.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "three notifications");
    let (_, written) = app.call("GET", "/v1/notifications", None).await;
    assert_eq!(written["items"].as_array().unwrap().len(), 3, "each written once, however often it was sent");

    // A key of the caller's answers the first request's result again.
    let app = TestApp::api_only().await;
    let client = client_of(&app);
    let keyed = NewNotification { idempotency_key: Some("order-7-shipped".into()), ..email("a@example.com") };
    let first = client.send(&keyed).await.unwrap();
    assert_eq!(client.send(&keyed).await.unwrap().id, first.id);

    // Not retried: a refusal, as the API's problem.
    match client.send(&email("not an address")).await {
        Err(Error::Problem(p)) => {
            assert_eq!((p.status, p.code.as_str()), (422, "validation_failed"));
            assert_eq!(p.errors[0].field, "to[0].email");
        }
        other => panic!("{other:?}"),
    }
    let unknown =
        Client::new(app.url(""), "nk_unknown").unwrap().with_retries(Retries { attempts: 1, ..Retries::default() });
    assert!(matches!(unknown.send(&email("a@example.com")).await, Err(Error::Problem(p)) if p.status == 401));
}

#[tokio::test]
async fn notify_turns_a_business_error_into_a_notification_of_the_context() {
    let app = TestApp::api_only().await;
    for (path, body) in [
        ("/v1/subscribers/agent", json!({"email": "agent@example.com"})),
        ("/v1/subscribers/buyer", json!({"email": "buyer@example.com"})),
        ("/v1/topics/support/subscribers", json!({"add": ["agent"]})),
        ("/v1/topics/customer/subscribers", json!({"add": ["buyer"]})),
        ("/v1/classifications", json!({"classes": {"mapping": {"audience": "customer", "priority": "low"}}})),
    ] {
        let (status, answer) = app.call("PUT", path, Some(&body)).await;
        assert!(status == 200 || status == 201, "{path}: {answer}");
    }
    assert!(matches!(notify("outside", Severity::Low).await, Err(Error::NoContext)));

    let context = NotifyContext::new(client_of(&app)).record_id("PO-7").data("vendor", "ACME");
    let (unclassified, classified, addressed) = with_notify_context(context.clone(), async {
        // Nothing classifies it: the severity's audience.
        let unclassified = notify("Vendor Name is missing", Severity::High).await.unwrap();
        let options = NotifyOptions {
            error_class: Some("mapping".into()),
            error_code: Some("VENDOR_NAME".into()),
            ..Default::default()
        };
        let classified = notify_with("Vendor Name is missing", Severity::High, options).await.unwrap();
        let addressed = with_notify_context(context.audience(Audience::Support), notify("Paid twice", Severity::Low))
            .await
            .unwrap();
        (unclassified, classified, addressed)
    })
    .await;
    assert_eq!(unclassified.deliveries[0].recipient, "agent@example.com");
    assert_eq!(classified.deliveries[0].recipient, "buyer@example.com");
    assert_eq!(addressed.deliveries[0].recipient, "agent@example.com");

    let view = |id: uuid::Uuid| {
        let app = &app;
        async move { app.call("GET", &format!("/v1/notifications/{id}"), None).await.1 }
    };
    let n: Value = view(unclassified.id).await;
    assert_eq!(
        (&n["type"], &n["priority"], &n["severity"], &n["correlation_id"], &n["data"]),
        (
            &json!("error"),
            &json!("high"),
            &json!("high"),
            &json!("PO-7"),
            &json!({"message": "Vendor Name is missing", "record_id": "PO-7", "vendor": "ACME"})
        )
    );
    let n: Value = view(classified.id).await;
    assert_eq!(
        (&n["priority"], &n["error_class"], &n["error_code"]),
        (&json!("low"), &json!("mapping"), &json!("VENDOR_NAME"))
    );
}
