//! The Meta WhatsApp Cloud API client against a wiremock stand-in: the exact request, and
//! how each answer is sorted on its error code (docs/providers.md §7).

mod common;

use std::time::Duration;

use std::sync::Arc;

use common::{built, failed, job, refusing_base_url, sent, with};
use domain::Provider;
use domain::{Channel, FailureKind};
use providers::meta::UNIT;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{bearer_token, body_json, method, path},
};

const MESSAGES: &str = "/v21.0/106540352242922/messages";
const TO: &str = "+15551234567";

fn config(base_url: &str) -> Value {
    json!({"access_token": "meta-token", "phone_number_id": "106540352242922", "base_url": base_url})
}

fn accepted(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": "15551234567", "wa_id": "15551234567"}],
        "messages": [{"id": id}],
    }))
}

fn error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"error": {
        "message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": format!("details of {code}")},
        "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
    }}))
}

async fn answer_with(response: ResponseTemplate) -> (MockServer, Arc<dyn Provider>) {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(MESSAGES)).respond_with(response).mount(&server).await;
    let provider = built(&UNIT, config(&server.uri())).await;
    (server, provider)
}

fn text_job() -> domain::DeliveryJob {
    job(Channel::Whatsapp, TO, "chat", Some("hello"), json!({}))
}

#[tokio::test]
async fn a_text_message_is_posted_with_the_bearer_token_and_its_wamid_is_the_message_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(bearer_token("meta-token"))
        .and(body_json(json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": "15551234567",
            "type": "text", "text": {"body": "hello"},
        })))
        .respond_with(accepted("wamid.TEST"))
        .expect(1)
        .mount(&server)
        .await;
    let provider = built(&UNIT, config(&server.uri())).await;
    assert_eq!(provider.name(), "meta");
    assert_eq!(sent(provider.send(&text_job()).await).provider_message_id, "wamid.TEST");
}

#[tokio::test]
async fn a_mapped_type_is_sent_as_its_template_with_parameters_from_data() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_json(json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": "15551234567",
            "type": "template",
            "template": {"name": "order_shipped", "language": {"code": "en_US"}, "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "A-1"}, {"type": "text", "text": "2"}]},
            ]},
        })))
        .respond_with(accepted("wamid.T2"))
        .expect(1)
        .mount(&server)
        .await;
    let template = json!({"name": "order_shipped", "language": "en_US", "body_parameters": ["order", "days"]});
    let job = job(Channel::Whatsapp, TO, "order.shipped", Some("unused"), json!({"order": "A-1", "days": 2}));
    let mapping = json!({"template_by_tenant": {job.tenant_id.to_string(): {"order.shipped": template}},
        "api_version": "v21.0"});
    let provider = built(&UNIT, with(config(&server.uri()), mapping)).await;
    assert_eq!(sent(provider.send(&job).await).provider_message_id, "wamid.T2");
}

#[tokio::test]
async fn another_tenant_never_gets_a_tenants_template() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_json(json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": "15551234567",
            "type": "text", "text": {"body": "B's text"},
        })))
        .respond_with(accepted("wamid.B"))
        .expect(1)
        .mount(&server)
        .await;
    let (a, b) = (
        job(Channel::Whatsapp, TO, "order.shipped", Some("A's text"), json!({})),
        job(Channel::Whatsapp, TO, "order.shipped", Some("B's text"), json!({})),
    );
    let template = json!({"name": "acme_order_shipped", "language": "en_US", "body_parameters": []});
    let mapping = json!({"template_by_tenant": {a.tenant_id.to_string(): {"order.shipped": template}}});
    let provider = built(&UNIT, with(config(&server.uri()), mapping)).await;
    // B, with no template of its own, sends its own text, never A's template.
    assert_eq!(sent(provider.send(&b).await).provider_message_id, "wamid.B");
    // Without text it cannot go at all: it fails for good, and nothing is sent.
    let textless = domain::DeliveryJob { content: domain::Content::default(), ..b };
    let failure = failed(provider.send(&textless).await, FailureKind::Permanent, "template_not_configured");
    assert!(failure.message.contains("order.shipped"), "{}", failure.message);
}

#[tokio::test]
async fn an_undeliverable_message_is_permanent() {
    let (_server, provider) = answer_with(error(400, 131026, "Message undeliverable")).await;
    let failure = failed(provider.send(&text_job()).await, FailureKind::Permanent, "131026");
    assert_eq!(failure.message, "Message undeliverable: details of 131026");
}

#[tokio::test]
async fn the_throughput_limit_is_retryable_with_retry_after() {
    let (_server, provider) = answer_with(error(400, 130429, "Rate limit hit").insert_header("Retry-After", "2")).await;
    let failure = failed(provider.send(&text_job()).await, FailureKind::Retryable, "130429");
    assert_eq!(failure.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn a_plain_429_is_retryable_with_retry_after() {
    let (_server, provider) = answer_with(ResponseTemplate::new(429).insert_header("Retry-After", "2")).await;
    let failure = failed(provider.send(&text_job()).await, FailureKind::Retryable, "http_429");
    assert_eq!(failure.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn an_expired_token_is_a_configuration_error() {
    let (_server, provider) = answer_with(error(401, 190, "Error validating access token")).await;
    failed(provider.send(&text_job()).await, FailureKind::Config, "190");
}

#[tokio::test]
async fn a_server_error_without_a_body_is_ambiguous() {
    let (_server, provider) = answer_with(ResponseTemplate::new(500)).await;
    failed(provider.send(&text_job()).await, FailureKind::Ambiguous, "http_500");
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let provider = built(&UNIT, config(&refusing_base_url())).await;
    failed(provider.send(&text_job()).await, FailureKind::Retryable, "connect");
}

#[tokio::test]
async fn the_recipient_is_kept_out_of_the_error_message() {
    let (_server, provider) = answer_with(error(400, 131026, "Recipient 15551234567 cannot be reached")).await;
    let failure = failed(provider.send(&text_job()).await, FailureKind::Permanent, "131026");
    assert!(!failure.message.contains("5551234567"), "{}", failure.message);
}
