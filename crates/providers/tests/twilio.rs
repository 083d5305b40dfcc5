//! The Twilio client against a wiremock stand-in: the exact request, and how each answer
//! is sorted (docs/providers.md §6).

mod common;

use std::time::Duration;

use common::{built, built_with, failed, job, refusing_base_url, sent, with};
use domain::Provider;
use domain::{Channel, FailureKind};
use providers::twilio::{SMS_UNIT, WHATSAPP_UNIT};
use serde_json::{Value, json};
use std::sync::Arc;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{basic_auth, body_string, method, path},
};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
const TO: &str = "+15005550006";

fn config(base_url: &str) -> Value {
    json!({"account_sid": ACCOUNT, "auth_token": "test_auth_token", "from": "+15005550000", "base_url": base_url})
}

async fn sms(server: &MockServer) -> Arc<dyn Provider> {
    built(&SMS_UNIT, config(&server.uri())).await
}

fn created(sid: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "sid": sid, "status": "queued", "num_segments": "1", "error_code": null, "error_message": null,
        "to": TO, "from": "+15005550000", "body": "hi there",
    }))
}

fn error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    }))
}

async fn answer_with(response: ResponseTemplate) -> (MockServer, Arc<dyn Provider>) {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(MESSAGES)).respond_with(response).mount(&server).await;
    let provider = sms(&server).await;
    (server, provider)
}

#[tokio::test]
async fn an_sms_is_a_form_post_with_basic_auth_and_its_sid_is_the_message_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(basic_auth(ACCOUNT, "test_auth_token"))
        .respond_with(created("SM00000000000000000000000000000001"))
        .expect(1)
        .mount(&server)
        .await;
    let provider =
        built(&SMS_UNIT, with(config(&server.uri()), json!({"status_callback": "https://example.com/cb"}))).await;
    assert_eq!(provider.name(), "twilio");

    let receipt = sent(provider.send(&job(Channel::Sms, TO, "otp", Some("hi there"), json!({}))).await);
    assert_eq!(receipt.provider_message_id, "SM00000000000000000000000000000001");
    let excerpt = receipt.response_excerpt.unwrap();
    assert_eq!(excerpt, "status=queued num_segments=1");

    let requests = server.received_requests().await.unwrap();
    let request = &requests[0];
    assert_eq!(request.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(
        String::from_utf8_lossy(&request.body),
        "To=%2B15005550006&From=%2B15005550000&Body=hi+there&StatusCallback=https%3A%2F%2Fexample.com%2Fcb"
    );
}

#[tokio::test]
async fn an_api_key_and_a_messaging_service_replace_the_token_and_the_number() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(basic_auth("SK0123", "key-secret"))
        .and(body_string("To=%2B15005550006&MessagingServiceSid=MG0123&Body=hi"))
        .respond_with(created("SM2"))
        .expect(1)
        .mount(&server)
        .await;
    let config = with(
        config(&server.uri()),
        json!({"auth_token": null, "api_key_sid": "SK0123", "api_key_secret": "key-secret", "from": null,
            "messaging_service_sid": "MG0123"}),
    );
    let provider = built(&SMS_UNIT, config).await;
    sent(provider.send(&job(Channel::Sms, TO, "otp", Some("hi"), json!({}))).await);
}

#[tokio::test]
async fn whatsapp_addresses_carry_the_prefix_and_a_tenants_mapped_type_is_sent_as_its_template() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(MESSAGES)).respond_with(created("SM3")).mount(&server).await;
    let template = job(Channel::Whatsapp, TO, "order.shipped", Some("ignored"), json!({"1": "A-1", "2": "Friday"}));
    let mapping = json!({"content_sid_by_tenant": {template.tenant_id.to_string(): {"order.shipped": "HX0123"}}});
    let provider = built(&WHATSAPP_UNIT, with(config(&server.uri()), mapping)).await;

    let free_form = domain::DeliveryJob { kind: "chat".into(), content: text("hello"), ..template.clone() };
    sent(provider.send(&free_form).await);
    sent(provider.send(&template).await);

    let bodies = bodies(&server).await;
    assert_eq!(bodies[0], "To=whatsapp%3A%2B15005550006&From=whatsapp%3A%2B15005550000&Body=hello");
    assert_eq!(
        bodies[1],
        "To=whatsapp%3A%2B15005550006&From=whatsapp%3A%2B15005550000&ContentSid=HX0123\
         &ContentVariables=%7B%221%22%3A%22A-1%22%2C%222%22%3A%22Friday%22%7D"
    );
}

#[tokio::test]
async fn another_tenant_never_gets_a_tenants_template() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(MESSAGES)).respond_with(created("SM4")).mount(&server).await;
    let (a, b) = (
        job(Channel::Whatsapp, TO, "order.shipped", Some("A's text"), json!({"1": "A-1"})),
        job(Channel::Whatsapp, TO, "order.shipped", Some("B's text"), json!({"1": "B-1"})),
    );
    let mapping = json!({"content_sid_by_tenant": {a.tenant_id.to_string(): {"order.shipped": "HX-A"}}});
    let provider = built(&WHATSAPP_UNIT, with(config(&server.uri()), mapping)).await;
    sent(provider.send(&b).await);
    sent(provider.send(&a).await);
    // B, with no template of its own, sends its own text, never A's template.
    let bodies = bodies(&server).await;
    assert_eq!(bodies[0], "To=whatsapp%3A%2B15005550006&From=whatsapp%3A%2B15005550000&Body=B%27s+text");
    assert!(bodies[1].contains("ContentSid=HX-A"), "{}", bodies[1]);

    // Without text, B's WhatsApp message cannot go at all: it fails for good, sending nothing.
    let textless = domain::DeliveryJob { content: domain::Content::default(), ..b.clone() };
    let failure = failed(provider.send(&textless).await, FailureKind::Permanent, "template_not_configured");
    assert!(failure.message.contains("order.shipped"), "{}", failure.message);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    // An SMS without text is just a message without a body.
    let sms = sms(&server).await;
    failed(
        sms.send(&domain::DeliveryJob { channel: Channel::Sms, ..textless }).await,
        FailureKind::Permanent,
        "missing_body",
    );
}

fn text(text: &str) -> domain::Content {
    domain::Content { text: Some(text.to_owned()), ..Default::default() }
}

async fn bodies(server: &MockServer) -> Vec<String> {
    server.received_requests().await.unwrap().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect()
}

#[tokio::test]
async fn an_invalid_number_is_permanent_and_its_message_does_not_hold_the_number() {
    let (_server, provider) =
        answer_with(error(400, 21211, "The 'To' number +15005550006 is not a valid phone number.")).await;
    let failure = failed(
        provider.send(&job(Channel::Sms, TO, "otp", Some("hi"), json!({}))).await,
        FailureKind::Permanent,
        "21211",
    );
    assert_eq!(failure.message, "The 'To' number <recipient> is not a valid phone number.");
    assert_eq!(failure.retry_after, None);
}

#[tokio::test]
async fn too_many_requests_is_retryable_after_the_providers_delay() {
    let (_server, provider) =
        answer_with(error(429, 20429, "Too Many Requests").insert_header("Retry-After", "2")).await;
    let failure = failed(
        provider.send(&job(Channel::Sms, TO, "otp", Some("hi"), json!({}))).await,
        FailureKind::Retryable,
        "20429",
    );
    assert_eq!(failure.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn a_server_error_is_ambiguous() {
    let (_server, provider) = answer_with(ResponseTemplate::new(500).set_body_string("<html>oops</html>")).await;
    let failure = failed(
        provider.send(&job(Channel::Sms, TO, "otp", Some("hi"), json!({}))).await,
        FailureKind::Ambiguous,
        "http_500",
    );
    assert_eq!(failure.message, "Twilio answered 500 Internal Server Error");
}

#[tokio::test]
async fn bad_credentials_are_a_configuration_error() {
    let (_server, provider) = answer_with(error(401, 20003, "Authenticate")).await;
    failed(provider.send(&job(Channel::Sms, TO, "otp", Some("hi"), json!({}))).await, FailureKind::Config, "20003");
}

#[tokio::test]
async fn the_rfc_9457_error_shape_is_read_too() {
    let (_server, provider) = answer_with(ResponseTemplate::new(400).set_body_json(json!({
        "type": "https://www.twilio.com/docs/errors/21610", "title": "Unsubscribed recipient", "status": 400,
        "code": 21610, "detail": "Attempt to send to unsubscribed recipient",
    })))
    .await;
    let failure = failed(
        provider.send(&job(Channel::Sms, TO, "otp", Some("hi"), json!({}))).await,
        FailureKind::Permanent,
        "21610",
    );
    assert_eq!(failure.message, "Attempt to send to unsubscribed recipient");
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let provider = built(&SMS_UNIT, config(&refusing_base_url())).await;
    failed(
        provider.send(&job(Channel::Sms, TO, "otp", Some("hi"), json!({}))).await,
        FailureKind::Retryable,
        "connect",
    );
}

#[tokio::test]
async fn no_answer_in_time_is_ambiguous() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(created("SM4").set_delay(Duration::from_secs(2)))
        .mount(&server)
        .await;
    let provider = built_with(&SMS_UNIT, config(&server.uri()), Duration::from_millis(200)).await;
    failed(
        provider.send(&job(Channel::Sms, TO, "otp", Some("hi"), json!({}))).await,
        FailureKind::Ambiguous,
        "timeout",
    );
}
