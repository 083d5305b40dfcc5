//! The Novu client against a wiremock stand-in: the exact trigger, and how each answer is
//! sorted (docs/providers.md §8).

mod common;

use std::time::Duration;

use std::sync::Arc;

use common::{built, failed, job, refusing_base_url, sent, with};
use domain::Provider;
use domain::{Channel, DeliveryJob, FailureKind};
use providers::novu::UNIT;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_json, header, method, path},
};

const TRIGGER: &str = "/v1/events/trigger";

fn config(base_url: &str) -> Value {
    json!({"api_key": "test-key", "base_url": base_url})
}

fn trigger_job() -> DeliveryJob {
    job(Channel::Novu, "subscriber-42", "order.shipped", None, json!({"order": "A-1"}))
}

fn answered(status: &str, transaction_id: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({"data": {
        "acknowledged": true, "status": status, "transactionId": transaction_id,
    }}))
}

async fn answer_with(response: ResponseTemplate) -> (MockServer, Arc<dyn Provider>) {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(TRIGGER)).respond_with(response).mount(&server).await;
    let provider = built(&UNIT, config(&server.uri())).await;
    (server, provider)
}

#[tokio::test]
async fn a_trigger_carries_the_delivery_id_as_transaction_id_and_idempotency_key() {
    let server = MockServer::start().await;
    let job = trigger_job();
    let id = job.delivery_id.to_string();
    Mock::given(method("POST"))
        .and(path(TRIGGER))
        .and(header("authorization", "ApiKey test-key"))
        .and(header("idempotency-key", id.as_str()))
        .and(body_json(json!({
            "name": "order-shipped", "to": {"subscriberId": format!("{}:subscriber-42", job.tenant_id)},
            "payload": {"order": "A-1"}, "transactionId": id, "tenant": {"identifier": job.tenant_id.to_string()},
        })))
        .respond_with(answered("processed", &id))
        .expect(1)
        .mount(&server)
        .await;
    let mapping = json!({"workflow_by_tenant": {job.tenant_id.to_string(): {"order.shipped": "order-shipped"}}});
    let provider = built(&UNIT, with(config(&server.uri()), mapping)).await;
    assert_eq!(provider.name(), "novu");
    let receipt = sent(provider.send(&job).await);
    assert_eq!(receipt.provider_message_id, id);
}

#[tokio::test]
async fn without_a_mapping_the_type_is_the_workflow() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TRIGGER))
        .respond_with(answered("processed", "tx-from-novu"))
        .expect(1)
        .mount(&server)
        .await;
    let provider = built(&UNIT, config(&server.uri())).await;
    assert_eq!(sent(provider.send(&trigger_job()).await).provider_message_id, "tx-from-novu");
    let request = &server.received_requests().await.unwrap()[0];
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["name"], "order.shipped");
}

async fn bodies(server: &MockServer) -> Vec<serde_json::Value> {
    let requests = server.received_requests().await.unwrap();
    requests.iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

#[tokio::test]
async fn two_tenants_with_the_same_subscriber_id_reach_two_novu_subscribers() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(TRIGGER)).respond_with(answered("processed", "tx")).mount(&server).await;
    let provider = built(&UNIT, config(&server.uri())).await;
    let (a, b) = (trigger_job(), trigger_job());
    assert_ne!(a.tenant_id, b.tenant_id);
    sent(provider.send(&a).await);
    sent(provider.send(&b).await);
    let scopes: Vec<_> = bodies(&server).await.iter().map(|b| (b["to"].clone(), b["tenant"].clone())).collect();
    assert_eq!(
        scopes,
        [
            (json!({"subscriberId": format!("{}:subscriber-42", a.tenant_id)}), json!({"identifier": a.tenant_id})),
            (json!({"subscriberId": format!("{}:subscriber-42", b.tenant_id)}), json!({"identifier": b.tenant_id})),
        ]
    );
}

#[tokio::test]
async fn a_tenants_workflow_mapping_applies_to_that_tenant_alone() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(TRIGGER)).respond_with(answered("processed", "tx")).mount(&server).await;
    let (mapped, other) = (trigger_job(), trigger_job());
    let mapping =
        json!({"workflow_by_tenant": {mapped.tenant_id.to_string(): {"order.shipped": "acme-order-shipped"}}});
    let provider = built(&UNIT, with(config(&server.uri()), mapping)).await;
    sent(provider.send(&mapped).await);
    sent(provider.send(&other).await);
    // The type's own workflow (its `novu_workflow`) comes before the mapping.
    let own = DeliveryJob { workflow: Some("own-workflow".into()), ..mapped.clone() };
    sent(provider.send(&own).await);
    let names: Vec<_> = bodies(&server).await.iter().map(|b| b["name"].clone()).collect();
    assert_eq!(names, [json!("acme-order-shipped"), json!("order.shipped"), json!("own-workflow")]);
}

#[tokio::test]
async fn a_trigger_that_was_not_processed_is_permanent_with_its_status_as_code() {
    let (_server, provider) = answer_with(answered("no_tenant_found", "tx")).await;
    failed(provider.send(&trigger_job()).await, FailureKind::Permanent, "no_tenant_found");
}

#[tokio::test]
async fn a_key_in_flight_and_the_rate_limit_are_retryable_after_the_providers_delay() {
    for status in [409, 429] {
        let (_server, provider) = answer_with(
            ResponseTemplate::new(status)
                .insert_header("Retry-After", "2")
                .set_body_json(json!({"statusCode": status, "message": "later"})),
        )
        .await;
        let failure = failed(provider.send(&trigger_job()).await, FailureKind::Retryable, &format!("http_{status}"));
        assert_eq!(failure.retry_after, Some(Duration::from_secs(2)));
    }
}

#[tokio::test]
async fn a_bad_key_is_a_configuration_error_and_a_bad_request_permanent() {
    let (_server, provider) = answer_with(ResponseTemplate::new(401)).await;
    failed(provider.send(&trigger_job()).await, FailureKind::Config, "http_401");
    let (_server, provider) = answer_with(
        ResponseTemplate::new(422).set_body_json(json!({"statusCode": 422, "message": ["name must be a string"]})),
    )
    .await;
    let failure = failed(provider.send(&trigger_job()).await, FailureKind::Permanent, "http_422");
    assert_eq!(failure.message, "name must be a string");
}

#[tokio::test]
async fn a_server_error_is_ambiguous() {
    let (_server, provider) = answer_with(ResponseTemplate::new(500)).await;
    failed(provider.send(&trigger_job()).await, FailureKind::Ambiguous, "http_500");
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let provider = built(&UNIT, config(&refusing_base_url())).await;
    failed(provider.send(&trigger_job()).await, FailureKind::Retryable, "connect");
}
