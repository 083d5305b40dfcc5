//! Posting signed events to a tenant's endpoint, against a local receiver: the signature
//! verifies with the Standard Webhooks reference library, each answer is sorted, and no
//! request reaches an internal address unless the operator allowed its subnet.

use std::time::Duration;

use domain::webhook::WebhookSecret;
use ipnet::IpNet;
use providers::webhook_endpoint::{EndpointClient, Post, Verdict};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

const ID: &str = "msg_0195e1b2c3d4e5f60718293a4b5c6d7e";
const BODY: &[u8] = br#"{"type":"delivery.sent","timestamp":"2026-12-07T10:00:00.000Z","data":{"delivery_id":"d"}}"#;

fn loopback() -> Vec<IpNet> {
    vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
}

fn client(allowed: Vec<IpNet>) -> EndpointClient {
    EndpointClient::new(Duration::from_secs(5), allowed).unwrap()
}

async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(status)).mount(&server).await;
    server
}

#[tokio::test]
async fn a_signed_event_arrives_and_verifies_with_either_secret_during_a_rotation() {
    let server = receiver(204).await;
    let (new, old) = (WebhookSecret::generate(), WebhookSecret::generate());
    let url = format!("{}/hook", server.uri());
    let attempt = client(loopback()).send(&Post { url: &url, id: ID, body: BODY, secrets: &[&new, &old] }).await;
    assert_eq!((attempt.status, attempt.verdict), (Some(204), Verdict::Sent));

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.body, BODY, "the exact bytes signed");
    assert_eq!(request.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(request.headers.get("webhook-id").unwrap(), ID);
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, request.headers.get(name).unwrap().to_str().unwrap().parse().unwrap());
    }
    for secret in [&new, &old] {
        standardwebhooks::Webhook::new(secret.expose()).unwrap().verify(&request.body, &headers).unwrap();
    }
    let other = WebhookSecret::generate();
    assert!(standardwebhooks::Webhook::new(other.expose()).unwrap().verify(&request.body, &headers).is_err());
}

#[tokio::test]
async fn answers_are_sorted_gone_retry_with_retry_after_and_redirects_not_followed() {
    let secret = WebhookSecret::generate();
    let post = |url: &str| (url.to_owned(), secret.clone());
    for (status, header, expected) in [
        (200, None, Verdict::Sent),
        (410, None, Verdict::Gone),
        (404, None, Verdict::Retry { retry_after: None }),
        (500, None, Verdict::Retry { retry_after: None }),
        (429, Some("7"), Verdict::Retry { retry_after: Some(Duration::from_secs(7)) }),
        (503, Some("120"), Verdict::Retry { retry_after: Some(Duration::from_secs(120)) }),
    ] {
        let server = MockServer::start().await;
        let mut answer = ResponseTemplate::new(status).set_body_string("receiver says hello");
        if let Some(seconds) = header {
            answer = answer.insert_header("retry-after", seconds);
        }
        Mock::given(method("POST")).respond_with(answer).mount(&server).await;
        let (url, secret) = post(&format!("{}/hook", server.uri()));
        let attempt = client(loopback()).send(&Post { url: &url, id: ID, body: BODY, secrets: &[&secret] }).await;
        assert_eq!((attempt.status, &attempt.verdict), (Some(status), &expected), "{status}");
        assert_eq!(attempt.excerpt.as_deref(), Some("receiver says hello"));
    }

    // A redirect to the metadata service is a failed attempt, and nothing follows it.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "http://169.254.169.254/latest/meta-data/"))
        .mount(&server)
        .await;
    let url = format!("{}/hook", server.uri());
    let attempt = client(loopback()).send(&Post { url: &url, id: ID, body: BODY, secrets: &[&secret] }).await;
    assert_eq!((attempt.status, attempt.verdict), (Some(302), Verdict::Retry { retry_after: None }));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn internal_addresses_are_refused_without_the_operators_allowance() {
    let server = receiver(200).await;
    let port = server.address().port();
    let secret = WebhookSecret::generate();
    let strict = client(vec![]);
    for url in [
        // A name that resolves to 127.0.0.1.
        format!("http://localhost:{port}/hook"),
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_owned(),
    ] {
        let attempt = strict.send(&Post { url: &url, id: ID, body: BODY, secrets: &[&secret] }).await;
        assert_eq!((attempt.status, &attempt.verdict), (None, &Verdict::Refused), "{url}: {attempt:?}");
    }
    assert!(server.received_requests().await.unwrap().is_empty(), "nothing reached the receiver");

    // Allowed, the same name reaches it; the metadata address stays out of an allowance
    // for loopback.
    let allowed = client(vec!["127.0.0.0/8".parse().unwrap()]);
    let url = format!("http://localhost:{port}/hook");
    let attempt = allowed.send(&Post { url: &url, id: ID, body: BODY, secrets: &[&secret] }).await;
    assert_eq!(attempt.verdict, Verdict::Sent, "{attempt:?}");
    let url = "http://169.254.169.254/latest/meta-data/";
    assert_eq!(allowed.send(&Post { url, id: ID, body: BODY, secrets: &[&secret] }).await.verdict, Verdict::Refused);
}

#[tokio::test]
async fn a_receiver_that_hangs_is_a_retry_after_the_timeout_and_a_huge_answer_is_cut() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/huge"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(4 * 1024 * 1024)))
        .mount(&server)
        .await;
    let secret = WebhookSecret::generate();
    let quick = EndpointClient::new(Duration::from_millis(300), loopback()).unwrap();
    let url = format!("{}/slow", server.uri());
    let attempt = quick.send(&Post { url: &url, id: ID, body: BODY, secrets: &[&secret] }).await;
    assert_eq!((attempt.status, &attempt.verdict), (None, &Verdict::Retry { retry_after: None }), "{attempt:?}");
    assert!(attempt.latency < Duration::from_secs(5), "{attempt:?}");

    let url = format!("{}/huge", server.uri());
    let attempt = client(loopback()).send(&Post { url: &url, id: ID, body: BODY, secrets: &[&secret] }).await;
    assert_eq!(attempt.verdict, Verdict::Sent);
    assert_eq!(attempt.excerpt.unwrap().len(), 1000);
}
