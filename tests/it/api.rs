//! The producer API's answers to good and bad requests.

use serde_json::{Value, json};

use crate::harness::{TestApp, email};

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["code"].is_string());
    (status, body)
}

async fn rejected_field(app: &TestApp, body: Value) -> String {
    let response =
        app.http.post(app.url("/v1/notifications")).bearer_auth(&app.api_key).json(&body).send().await.unwrap();
    let (status, problem) = problem(response).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "validation_failed");
    problem["errors"][0]["field"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn accepts_a_notification_and_answers_with_its_deliveries() {
    let app = TestApp::api_only().await;
    let (status, body) = app
        .post(&json!({"type": "order.shipped", "to": [{"email": "a@example.com", "phone": "+15551234567"}],
            "content": {"subject": "Shipped", "text": "On its way"}, "correlation_id": "order-1"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    let deliveries = body["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0]["channel"], "email");
    assert_eq!(deliveries[0]["recipient"], "a@example.com");
    assert_eq!(deliveries[1]["channel"], "sms");

    // Committed with one outbox row per delivery before the answer.
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 2);
    let id = body["id"].as_str().unwrap().parse().unwrap();
    let n = app.get(id).await;
    assert_eq!(n["type"], "order.shipped");
    assert_eq!(n["correlation_id"], "order-1");
    assert_eq!(n["deliveries"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn without_a_valid_key_the_answer_is_401() {
    let app = TestApp::api_only().await;
    let no_key = app.http.post(app.url("/v1/notifications")).json(&email("a@example.com")).send().await.unwrap();
    assert_eq!(no_key.headers()["www-authenticate"], "Bearer");
    assert_eq!(problem(no_key).await.0, 401);
    let wrong = app
        .http
        .get(app.url(&format!("/v1/notifications/{}", uuid::Uuid::now_v7())))
        .bearer_auth("nk_not_a_key")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(wrong).await.0, 401);
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn another_tenants_notification_is_404() {
    let app = TestApp::api_only().await;
    let id = app.accept(&email("a@example.com")).await;
    let other = app.env.store.create_tenant("other").await.unwrap();
    let response =
        app.http.get(app.url(&format!("/v1/notifications/{id}"))).bearer_auth(&other.api_key).send().await.unwrap();
    assert_eq!(problem(response).await.0, 404);
    let not_an_id = app.http.get(app.url("/v1/notifications/nope")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(problem(not_an_id).await.0, 404);
}

#[tokio::test]
async fn bad_input_is_422_naming_the_field_and_writes_nothing() {
    let app = TestApp::api_only().await;
    assert_eq!(rejected_field(&app, email("not-an-email")).await, "to[0].email");
    assert_eq!(
        rejected_field(&app, json!({"type": "t", "to": [{"phone": "5551234"}], "content": {"text": "x"}})).await,
        "to[0].phone"
    );
    assert_eq!(
        rejected_field(&app, json!({"type": "t", "to": [{"email": "a@example.com"}], "channels": ["fax"]})).await,
        "channels[0]"
    );
    assert_eq!(rejected_field(&app, json!({"type": "t", "to": [], "content": {"text": "x"}})).await, "to");
    assert_eq!(rejected_field(&app, json!({"to": [{"email": "a@example.com"}]})).await, "type");
    assert_eq!(
        rejected_field(&app, json!({"type": "t", "to": [{"email": "a@example.com"}], "colour": "red"})).await,
        "colour"
    );
    assert_eq!(
        rejected_field(
            &app,
            json!({"type": "t", "to": [{"email": "a@example.com"}], "content": {"text": "no subject"}})
        )
        .await,
        "content.subject"
    );
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn malformed_json_is_400_and_a_huge_body_is_413() {
    let app = TestApp::api_only().await;
    let send = |body: Vec<u8>| {
        app.http
            .post(app.url("/v1/notifications"))
            .bearer_auth(&app.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, body) = problem(send(b"{\"type\": \"t\", \"to\": [".to_vec()).await.unwrap()).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (400, "malformed_json"));

    let mut huge = email("a@example.com");
    huge["content"]["text"] = Value::String("x".repeat(300 * 1024));
    let (status, body) = problem(send(serde_json::to_vec(&huge).unwrap()).await.unwrap()).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (413, "payload_too_large"));

    let form = app
        .http
        .post(app.url("/v1/notifications"))
        .bearer_auth(&app.api_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("type=t")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(form).await.0, 415);
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::api_only().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = app.http.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["database"], "ok");
}

#[tokio::test]
async fn metrics_count_requests_by_route_not_by_id() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = TestApp::api_with(|c| c.ops_listen = Some(([127, 0, 0, 1], port).into())).await;
    let id = app.accept(&email("a@example.com")).await;
    app.get(id).await;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let text = crate::harness::eventually("the side port", || async {
        app.http.get(&metrics).send().await.ok()?.text().await.ok()
    })
    .await;
    assert!(
        text.contains(r#"notify_http_requests_total{method="POST",route="/v1/notifications",status="202"}"#),
        "{text}"
    );
    assert!(text.contains(r#"route="/v1/notifications/{id}""#), "{text}");
    assert!(!text.contains(&id.to_string()), "no ids in labels");
    assert!(text.lines().any(|l| l.starts_with("notify_notifications_accepted_total ")), "{text}");
}
