//! The HTTP providers end to end: API -> outbox -> relay -> RabbitMQ -> worker -> a
//! wiremock stand-in for Twilio, Meta or Novu, and back into the delivery's attempts.

use std::time::Duration;

use domain::{Channel, RetryPolicy};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{basic_auth, bearer_token, header, method, path},
};

use crate::harness::{TestApp, WorkerOptions, eventually, fast_retry};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
const PHONE: &str = "+15551234567";

/// The settings of `[<channel>.twilio]` calling the stand-in.
fn twilio(server: &MockServer) -> Value {
    json!({"account_sid": ACCOUNT, "auth_token": "test_auth_token", "from": "+15005550000", "base_url": server.uri()})
}

fn created(sid: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({"sid": sid, "status": "queued", "num_segments": "1"}))
}

fn too_many_requests(retry_after: &str) -> ResponseTemplate {
    ResponseTemplate::new(429).insert_header("Retry-After", retry_after).set_body_json(json!({
        "code": 20429, "message": "Too Many Requests", "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }))
}

/// Answers the first request with `first`, every later one with `then`.
async fn first_then(server: &MockServer, first: ResponseTemplate, then: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("POST")).and(path(MESSAGES)).respond_with(then).mount(server).await;
}

fn sms(text: &str) -> Value {
    json!({"type": "otp", "to": [{"phone": PHONE}], "content": {"text": text}})
}

async fn bodies(server: &MockServer) -> Vec<String> {
    let requests = server.received_requests().await.expect("wiremock records requests");
    requests.iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect()
}

async fn sms_worker_app(
    providers: &[&str],
    twilio: Value,
    retry: RetryPolicy,
) -> (TestApp, Vec<crate::harness::Service>) {
    let app = TestApp::api_only().await;
    let relay = app.start_relay(100).await;
    let worker = app
        .start_worker(
            Channel::Sms,
            WorkerOptions {
                providers: providers.iter().map(|p| (*p).to_owned()).collect(),
                retry,
                settings: json!({"twilio": twilio}),
                ..Default::default()
            },
        )
        .await;
    (app, vec![relay, worker])
}

fn time_of(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a timestamp"), &Rfc3339).expect("RFC 3339")
}

#[tokio::test]
async fn an_sms_is_sent_through_twilio() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(basic_auth(ACCOUNT, "test_auth_token"))
        .respond_with(created("SM00000000000000000000000000000001"))
        .expect(1)
        .mount(&server)
        .await;
    let (app, _services) = sms_worker_app(&["twilio", "sandbox"], twilio(&server), fast_retry(4)).await;

    let id = app.accept(&sms("Your code is 1234")).await;
    let n = app.wait_for_status(id, "sent").await;
    let d = &n["deliveries"][0];
    assert_eq!(d["provider"], "twilio");
    assert_eq!(d["provider_message_id"], "SM00000000000000000000000000000001");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(bodies(&server).await, ["To=%2B15551234567&From=%2B15005550000&Body=Your+code+is+1234"]);
    assert!(app.sandbox_messages(Channel::Sms).is_empty(), "the sandbox, second in line, sent nothing");
}

#[tokio::test]
async fn a_throttled_twilio_hands_the_same_attempt_to_the_next_provider() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(MESSAGES)).respond_with(too_many_requests("30")).mount(&server).await;
    let (app, _services) = sms_worker_app(&["twilio", "sandbox"], twilio(&server), fast_retry(4)).await;

    let id = app.accept(&sms("hi")).await;
    let n = app.wait_for_status(id, "sent").await;
    let d = &n["deliveries"][0];
    assert_eq!(d["provider"], "sandbox");
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!((&attempts[0]["provider"], &attempts[0]["outcome"]), (&json!("sandbox"), &json!("sent")));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert_eq!(app.sends_of(Channel::Sms, d["id"].as_str().unwrap()), 1);
}

#[tokio::test]
async fn a_throttled_send_is_retried_no_sooner_than_retry_after() {
    let server = MockServer::start().await;
    first_then(&server, too_many_requests("1"), created("SM2")).await;
    // The policy's own delay is far shorter than Retry-After, which is a floor.
    let retry = RetryPolicy { max_delay: Duration::from_secs(5), ..fast_retry(3) };
    let (app, _services) = sms_worker_app(&["twilio"], twilio(&server), retry).await;

    let id = app.accept(&sms("hi")).await;
    let n = app.wait_for_status(id, "sent").await;
    let d = &n["deliveries"][0];
    assert_eq!((&d["provider"], &d["provider_message_id"]), (&json!("twilio"), &json!("SM2")));
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!((&attempts[0]["outcome"], &attempts[0]["error_code"]), (&json!("retryable"), &json!("20429")));
    assert_eq!(attempts[1]["outcome"], "sent");
    let waited = time_of(&attempts[1]["started_at"]) - time_of(&attempts[0]["finished_at"]);
    assert!(waited >= time::Duration::seconds(1), "the retry came {waited} after the 429");
}

#[tokio::test]
async fn a_server_error_is_retried_and_then_sent() {
    let server = MockServer::start().await;
    first_then(&server, ResponseTemplate::new(503), created("SM3")).await;
    let (app, _services) = sms_worker_app(&["twilio"], twilio(&server), fast_retry(4)).await;

    let id = app.accept(&sms("hi")).await;
    let n = app.wait_for_status(id, "sent").await;
    let attempts = n["deliveries"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!((&attempts[0]["outcome"], &attempts[0]["error_code"]), (&json!("ambiguous"), &json!("http_503")));
    assert_eq!(attempts[1]["outcome"], "sent");
    assert_eq!(n["deliveries"][0]["provider_message_id"], "SM3");
}

#[tokio::test]
async fn a_permanent_twilio_error_fails_the_delivery_without_quoting_the_number() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211, "message": format!("The 'To' number {PHONE} is not a valid phone number."),
            "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400,
        })))
        .mount(&server)
        .await;
    let (app, _services) = sms_worker_app(&["twilio", "sandbox"], twilio(&server), fast_retry(4)).await;

    let id = app.accept(&sms("hi")).await;
    let n = app.wait_for_status(id, "failed").await;
    let d = &n["deliveries"][0];
    assert_eq!((&d["attempt_count"], &d["last_error_code"]), (&json!(1), &json!("21211")));
    let message = d["last_error_message"].as_str().unwrap();
    assert!(!message.contains("5551234567"), "{message}");
    assert!(app.sandbox_messages(Channel::Sms).is_empty(), "a permanent failure does not fail over");
}

#[tokio::test]
async fn whatsapp_is_sent_through_meta() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v21.0/106540352242922/messages"))
        .and(bearer_token("meta-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp", "contacts": [{"input": "15551234567", "wa_id": "15551234567"}],
            "messages": [{"id": "wamid.TEST"}],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let meta = json!({"access_token": "meta-token", "phone_number_id": "106540352242922", "base_url": server.uri()});
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let options =
        WorkerOptions { providers: vec!["meta".into()], settings: json!({"meta": meta}), ..Default::default() };
    let _worker = app.start_worker(Channel::Whatsapp, options).await;

    let id = app.accept(&json!({"type": "chat", "to": [{"whatsapp": PHONE}], "content": {"text": "hello"}})).await;
    let n = app.wait_for_status(id, "sent").await;
    let d = &n["deliveries"][0];
    assert_eq!((&d["provider"], &d["provider_message_id"]), (&json!("meta"), &json!("wamid.TEST")));
    let request = &server.received_requests().await.unwrap()[0];
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "15551234567",
            "type": "text", "text": {"body": "hello"}})
    );
}

#[tokio::test]
async fn whatsapp_is_sent_through_twilio_with_whatsapp_addresses() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(MESSAGES)).respond_with(created("SM4")).expect(1).mount(&server).await;
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let mut twilio = twilio(&server);
    twilio["from"] = json!("whatsapp:+14155238886");
    let options =
        WorkerOptions { providers: vec!["twilio".into()], settings: json!({"twilio": twilio}), ..Default::default() };
    let _worker = app.start_worker(Channel::Whatsapp, options).await;

    let id = app.accept(&json!({"type": "chat", "to": [{"whatsapp": PHONE}], "content": {"text": "hello"}})).await;
    let n = app.wait_for_status(id, "sent").await;
    assert_eq!(
        (&n["deliveries"][0]["provider"], &n["deliveries"][0]["provider_message_id"]),
        (&json!("twilio"), &json!("SM4"))
    );
    assert_eq!(bodies(&server).await, ["To=whatsapp%3A%2B15551234567&From=whatsapp%3A%2B14155238886&Body=hello"]);
}

/// Novu's answer to a trigger: `status`, echoing the trigger's transaction id.
fn novu_answers(status: &'static str) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync + 'static {
    move |request: &Request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        ResponseTemplate::new(201).set_body_json(json!({"data": {
            "acknowledged": true, "status": status, "transactionId": body["transactionId"],
        }}))
    }
}

async fn novu_app(server: &MockServer) -> (TestApp, Vec<crate::harness::Service>) {
    let app = TestApp::api_only().await;
    let relay = app.start_relay(100).await;
    let novu = json!({
        "api_key": "test-key",
        "workflow_by_tenant": {app.tenant_id.to_string(): {"order.shipped": "order-shipped"}},
        "base_url": server.uri(),
    });
    let options =
        WorkerOptions { providers: vec!["novu".into()], settings: json!({"novu": novu}), ..Default::default() };
    let worker = app.start_worker(Channel::Novu, options).await;
    (app, vec![relay, worker])
}

fn novu_notification() -> Value {
    json!({"type": "order.shipped", "to": [{"subscriber_id": "subscriber-42"}], "data": {"order": "A-1"}})
}

#[tokio::test]
async fn a_novu_trigger_carries_the_delivery_id_as_transaction_id_and_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/events/trigger"))
        .and(header("authorization", "ApiKey test-key"))
        .respond_with(novu_answers("processed"))
        .expect(1)
        .mount(&server)
        .await;
    let (app, _services) = novu_app(&server).await;

    let id = app.accept(&novu_notification()).await;
    let n = app.wait_for_status(id, "sent").await;
    let d = &n["deliveries"][0];
    let delivery_id = d["id"].as_str().unwrap();
    assert_eq!((&d["provider"], d["provider_message_id"].as_str()), (&json!("novu"), Some(delivery_id)));
    let request = &server.received_requests().await.unwrap()[0];
    assert_eq!(request.headers["idempotency-key"], delivery_id);
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({"name": "order-shipped", "to": {"subscriberId": format!("{}:subscriber-42", app.tenant_id)},
            "payload": {"order": "A-1"}, "transactionId": delivery_id, "tenant": {"identifier": app.tenant_id}})
    );
}

#[tokio::test]
async fn two_tenants_naming_the_same_subscriber_reach_two_novu_subscribers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/events/trigger"))
        .respond_with(novu_answers("processed"))
        .expect(2)
        .mount(&server)
        .await;
    let (app, _services) = novu_app(&server).await;
    let other = app.env.store.create_tenant("other").await.unwrap();

    let mine = app.accept(&novu_notification()).await;
    let response = app
        .http
        .post(app.url("/v1/notifications"))
        .bearer_auth(&other.api_key)
        .json(&novu_notification())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    app.wait_for_status(mine, "sent").await;
    eventually("both triggers", || async { (server.received_requests().await?.len() == 2).then_some(()) }).await;

    let mut triggers: Vec<(Value, Value, Value)> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .map(|b| (b["tenant"]["identifier"].clone(), b["to"]["subscriberId"].clone(), b["name"].clone()))
        .collect();
    triggers.sort_by_key(|t| t.0.as_str().map(str::to_owned));
    let mut expected = vec![
        (json!(app.tenant_id), json!(format!("{}:subscriber-42", app.tenant_id)), json!("order-shipped")),
        // The mapping is the first tenant's: the other one's type is its own workflow key.
        (json!(other.tenant_id), json!(format!("{}:subscriber-42", other.tenant_id)), json!("order.shipped")),
    ];
    expected.sort_by_key(|t| t.0.as_str().map(str::to_owned));
    assert_eq!(triggers, expected);
}

#[tokio::test]
async fn a_novu_trigger_that_finds_no_tenant_fails_after_one_attempt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/events/trigger"))
        .respond_with(novu_answers("no_tenant_found"))
        .mount(&server)
        .await;
    let (app, _services) = novu_app(&server).await;

    let id = app.accept(&novu_notification()).await;
    let n = app.wait_for_status(id, "failed").await;
    let d = &n["deliveries"][0];
    assert_eq!((&d["status"], &d["attempt_count"]), (&json!("failed"), &json!(1)));
    assert_eq!(d["last_error_code"], "no_tenant_found");
    assert_eq!(d["attempts"][0]["outcome"], "permanent");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}
