//! The APNs provider built through its unit, against local HTTP/2 stand-ins: wiremock over
//! h2c (behind a relay that proves every connection opens with the HTTP/2 preface) for the
//! request, the provider token and every answer, and one real TLS server (hyper, rustls,
//! a certificate made for the test and trusted through `ca_cert`) for ALPN `h2`.

mod common;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{failed, job, sent, with};
use domain::{
    Channel, DeliveryJob, FailureKind, Priority, Provider,
    push::{Platform, PushDevice},
};
use figment::{Figment, providers::Serialized};
use providers::{
    Context, Integration, IntegrationRules, ProviderSettings, ProviderUnit, Source, http::SharedClient, push::apns,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{header, method, path},
};

const KEY_ID: &str = "KEY1234567";
const TEAM_ID: &str = "TEAM123456";
const TOPIC: &str = "com.example.app";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A team's signing key as Apple hands it out (`.p8`: PKCS#8 PEM), and its public key.
struct TeamKey {
    pem: String,
    public: Vec<u8>,
}

fn team_key() -> TeamKey {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key");
    let der = pair.to_pkcs8v1().expect("PKCS#8");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
    TeamKey { pem, public: pair.public_key().as_ref().to_vec() }
}

/// The provider token of `authorization` (`bearer <jwt>`), its signature checked with
/// `public`: its header and claims.
fn verified_token(authorization: &str, public: &[u8]) -> (Value, Value) {
    let jwt = authorization.strip_prefix("bearer ").expect("a bearer token");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url signature");
    aws_lc_rs::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the token is signed with the team's key");
    let part = |p: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    (part(parts[0]), part(parts[1]))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn device_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn push_job(token: &str, app: Option<&str>) -> DeliveryJob {
    let mut job = job(Channel::Push, "phone-1", "order.shipped", None, json!({}));
    job.content.title = Some("Shipped".into());
    job.content.body = Some("Your order is on its way".into());
    job.device = Some(PushDevice {
        id: "phone-1".into(),
        platform: Platform::Apns,
        token: token.to_owned(),
        app: app.map(str::to_owned),
    });
    job
}

fn settings(key: &TeamKey, base_url: &str) -> Value {
    json!({"key": key.pem, "key_id": KEY_ID, "team_id": TEAM_ID, "topic": TOPIC, "base_url": base_url})
}

fn operator_settings(settings: Value) -> Result<Box<dyn ProviderSettings>, bootstrap::ConfigError> {
    let figment = Figment::from(Serialized::defaults(json!({"push": {"apns": settings}})));
    apns::UNIT.settings(Source::Config(&figment))
}

fn tenant_settings(
    settings: Value,
    rules: &IntegrationRules,
) -> Result<Box<dyn ProviderSettings>, bootstrap::ConfigError> {
    let integration = Integration { tenant_id: Uuid::now_v7(), settings: &settings, rules };
    apns::UNIT.settings(Source::Integration(&integration))
}

async fn build(settings: &dyn ProviderSettings) -> Arc<dyn Provider> {
    let http = SharedClient::new(Duration::from_secs(5));
    let ctx = Context { http: &http, provider_timeout: Duration::from_secs(5) };
    settings.build(&ctx).await.expect("the provider builds")
}

async fn provider(settings: Value) -> Arc<dyn Provider> {
    build(&*operator_settings(settings).expect("valid settings")).await
}

/// A TCP relay in front of `target` that keeps the first bytes each connection sends: the
/// proof that the client spoke HTTP/2 from the first byte (h2c prior knowledge), and of how
/// many connections it opened.
struct Relay {
    url: String,
    openings: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn relay(target: &str) -> Relay {
    let target = target.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let openings = Arc::new(Mutex::new(Vec::new()));
    let seen = openings.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut first = vec![0; PREFACE.len()];
                if inbound.read_exact(&mut first).await.is_err() {
                    return;
                }
                seen.lock().unwrap().push(first.clone());
                let mut outbound = TcpStream::connect(&target).await.unwrap();
                outbound.write_all(&first).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    Relay { url, openings }
}

fn ok(apns_id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).insert_header("apns-id", apns_id)
}

fn refusal(status: u16, reason: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"reason": reason}))
}

fn header_of<'a>(request: &'a Request, name: &str) -> &'a str {
    request.headers.get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap()
}

#[tokio::test]
async fn a_push_goes_over_h2c_with_apples_headers_payload_and_a_signed_provider_token() {
    let server = MockServer::start().await;
    let token = device_token(0xab);
    Mock::given(method("POST"))
        .and(path(format!("/3/device/{token}")))
        .and(header("apns-topic", TOPIC))
        .and(header("apns-push-type", "alert"))
        .respond_with(ok("EC1BF194-B3B2-424A-89A9-5A918A6E6B5D"))
        .expect(2)
        .mount(&server)
        .await;
    let relay = relay(&server.uri()).await;
    let key = team_key();
    let apns = provider(settings(&key, &relay.url)).await;

    let mut job = push_job(&token, None);
    job.priority = Priority::High;
    job.content.badge = Some(2);
    job.content.sound = Some("default".into());
    job.content.action_url = Some("https://example.com/orders/1".into());
    job.content.data = Some([("order".to_owned(), "1".to_owned())].into());
    assert!(apns.serves(&job));
    let before = now();
    let receipt = sent(apns.send(&job).await);
    assert_eq!(receipt.provider_message_id, "EC1BF194-B3B2-424A-89A9-5A918A6E6B5D");
    sent(apns.send(&push_job(&token, None)).await);

    let requests = server.received_requests().await.unwrap();
    let first = &requests[0];
    assert_eq!(header_of(first, "apns-priority"), "10");
    assert_eq!(header_of(first, "apns-collapse-id"), job.notification_id.simple().to_string());
    assert_eq!(header_of(first, "apns-id"), job.delivery_id.hyphenated().to_string());
    assert_eq!(header_of(first, "content-type"), "application/json");
    let expiration: u64 = header_of(first, "apns-expiration").parse().unwrap();
    assert!((before + 86_400..=now() + 86_400).contains(&expiration), "{expiration}");
    assert_eq!(
        first.body_json::<Value>().unwrap(),
        json!({
            "aps": {"alert": {"title": "Shipped", "body": "Your order is on its way"}, "badge": 2, "sound": "default"},
            "action_url": "https://example.com/orders/1",
            "data": {"order": "1"},
        })
    );
    let (jwt_header, claims) = verified_token(header_of(first, "authorization"), &key.public);
    assert_eq!((jwt_header["alg"].as_str(), jwt_header["kid"].as_str()), (Some("ES256"), Some(KEY_ID)));
    assert_eq!(claims["iss"], TEAM_ID);
    let iat = claims["iat"].as_u64().expect("iat");
    assert!((before..=now()).contains(&iat), "{claims}");
    assert!(claims.get("exp").is_none(), "APNs tokens carry no exp: {claims}");

    // The token is reused, on the one HTTP/2 connection.
    assert_eq!(header_of(&requests[1], "authorization"), header_of(first, "authorization"));
    let openings = relay.openings.lock().unwrap().clone();
    assert_eq!(openings.len(), 1, "one connection for both sends");
    assert_eq!(openings[0], PREFACE, "the connection opens with the HTTP/2 preface");
}

#[tokio::test]
async fn the_devices_app_is_the_topic_and_priority_and_ttl_shape_the_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let key = team_key();
    let apns = provider(with(settings(&key, &server.uri()), json!({"ttl": "0s", "push_type": "background"}))).await;

    let mut job = push_job(&device_token(1), Some("com.example.other"));
    job.priority = Priority::Urgent;
    // Without an `apns-id` in the answer, the one we sent names the push.
    assert_eq!(sent(apns.send(&job).await).provider_message_id, job.delivery_id.hyphenated().to_string());
    let request = &server.received_requests().await.unwrap()[0];
    assert_eq!(header_of(request, "apns-topic"), "com.example.other");
    assert_eq!(header_of(request, "apns-push-type"), "background");
    assert_eq!(header_of(request, "apns-priority"), "5", "a background push goes at 5");
    assert_eq!(header_of(request, "apns-expiration"), "0");
    assert_eq!(request.body_json::<Value>().unwrap()["aps"], json!({"content-available": 1}));

    let alerts = provider(settings(&key, &server.uri())).await;
    let mut low = push_job(&device_token(2), None);
    low.priority = Priority::Low;
    sent(alerts.send(&low).await);
    let request = &server.received_requests().await.unwrap()[1];
    assert_eq!((header_of(request, "apns-priority"), header_of(request, "apns-topic")), ("5", TOPIC));
}

#[tokio::test]
async fn every_answer_is_sorted_and_dead_devices_are_gone() {
    use FailureKind::*;
    let cases: &[(u16, &str, FailureKind, bool)] = &[
        (400, "BadDeviceToken", Permanent, true),
        // Sent to the configured `topic` (the device named no app): the setting may be
        // wrong, the device is kept (see the test below for one that named its app).
        (400, "DeviceTokenNotForTopic", Permanent, false),
        (410, "Unregistered", Permanent, true),
        (410, "ExpiredToken", Permanent, true),
        (400, "BadCollapseId", Permanent, false),
        (400, "TopicDisallowed", Permanent, false),
        (404, "BadPath", Permanent, false),
        (413, "PayloadTooLarge", Permanent, false),
        (403, "BadCertificateEnvironment", Config, false),
        (403, "Forbidden", Config, false),
        (403, "MissingProviderToken", Config, false),
        (429, "TooManyProviderTokenUpdates", Config, false),
        (429, "TooManyRequests", Retryable, false),
        (500, "InternalServerError", Ambiguous, false),
        (503, "ServiceUnavailable", Ambiguous, false),
    ];
    let key = team_key();
    for (n, &(status, reason, kind, gone)) in cases.iter().enumerate() {
        let server = MockServer::start().await;
        let token = device_token(n as u8);
        let body = json!({"reason": reason, "timestamp": 1_700_000_000_000_u64});
        let template = ResponseTemplate::new(status).set_body_json(body).insert_header("retry-after", "7");
        Mock::given(method("POST")).respond_with(template).expect(1).mount(&server).await;
        let apns = provider(settings(&key, &server.uri())).await;
        let failure = failed(apns.send(&push_job(&token, None)).await, kind, reason);
        assert_eq!(failure.address_gone, gone, "{reason}");
        assert!(!failure.message.contains(&token), "{failure:?}");
        if matches!(kind, Retryable | Ambiguous) {
            assert_eq!(failure.retry_after, Some(Duration::from_secs(7)), "{reason}");
        }
    }

    // Not APNs' answer: sorted by its status alone.
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(502).set_body_string("<html>")).mount(&server).await;
    let apns = provider(settings(&key, &server.uri())).await;
    failed(apns.send(&push_job(&device_token(1), None)).await, Ambiguous, "http_502");

    // Nobody listening: nothing was sent.
    let apns = provider(settings(&key, &common::refusing_base_url())).await;
    failed(apns.send(&push_job(&device_token(1), None)).await, Retryable, "connect");
}

#[tokio::test]
async fn a_refused_provider_token_is_signed_anew_and_sent_once_more_then_is_config() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(refusal(403, "ExpiredProviderToken"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).respond_with(ok("A")).mount(&server).await;
    let key = team_key();
    let apns = provider(settings(&key, &server.uri())).await;
    sent(apns.send(&push_job(&device_token(1), None)).await);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let (first, second) = (header_of(&requests[0], "authorization"), header_of(&requests[1], "authorization"));
    assert_ne!(first, second, "a new token after the refusal");
    verified_token(second, &key.public);
    // The new token is kept for the next sends.
    sent(apns.send(&push_job(&device_token(2), None)).await);
    assert_eq!(header_of(&server.received_requests().await.unwrap()[2], "authorization"), second);

    // Refused again with the new token: the key, key id or team is wrong.
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(refusal(403, "InvalidProviderToken")).expect(2).mount(&server).await;
    let apns = provider(settings(&key, &server.uri())).await;
    failed(apns.send(&push_job(&device_token(1), None)).await, FailureKind::Config, "InvalidProviderToken");
}

#[tokio::test]
async fn what_cannot_be_sent_fails_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ok("A")).expect(0).mount(&server).await;
    let key = team_key();
    let apns = provider(settings(&key, &server.uri())).await;

    let mut big = push_job(&device_token(1), None);
    big.content.body = Some("x".repeat(4100));
    failed(apns.send(&big).await, FailureKind::Permanent, "PayloadTooLarge");

    let bad = failed(apns.send(&push_job("not-hex", None)).await, FailureKind::Permanent, "BadDeviceToken");
    assert!(bad.address_gone);

    let no_topic = provider(with(settings(&key, &server.uri()), json!({"topic": null}))).await;
    failed(no_topic.send(&push_job(&device_token(1), None)).await, FailureKind::Permanent, "MissingTopic");

    // Not an APNs device: not this provider's.
    let mut fcm = push_job(&device_token(1), None);
    fcm.device.as_mut().unwrap().platform = Platform::Fcm;
    assert!(!apns.serves(&fcm));
    let mut none = push_job(&device_token(1), None);
    none.device = None;
    assert!(!apns.serves(&none));
    failed(apns.send(&none).await, FailureKind::Permanent, "no_device");
}

#[test]
fn settings_are_checked_and_a_tenant_cannot_choose_hosts_or_roots() {
    let key = team_key();
    let base = settings(&key, "http://127.0.0.1:1");
    let invalid_key = |settings: Value| match operator_settings(settings) {
        Err(bootstrap::ConfigError::Invalid { key, .. } | bootstrap::ConfigError::Missing { key, .. }) => key,
        Err(other) => panic!("{other}"),
        Ok(settings) => panic!("accepted: {settings:?}"),
    };
    assert_eq!(invalid_key(with(base.clone(), json!({"key_id": null}))), "push.apns.key_id");
    assert_eq!(invalid_key(with(base.clone(), json!({"team_id": "short"}))), "push.apns.team_id");
    assert_eq!(
        invalid_key(with(base.clone(), json!({"key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}))),
        "push.apns.key"
    );
    assert_eq!(invalid_key(with(base.clone(), json!({"push_type": "banner"}))), "push.apns.push_type");
    assert_eq!(invalid_key(with(base.clone(), json!({"environment": "staging"}))), "push.apns.environment");
    assert_eq!(invalid_key(with(base.clone(), json!({"topic": "com example"}))), "push.apns.topic");
    assert_eq!(invalid_key(with(base.clone(), json!({"ca_cert": "not a certificate"}))), "push.apns.ca_cert");
    assert_eq!(invalid_key(with(base.clone(), json!({"ttl": "soon"}))), "push.apns.ttl");
    // The key as one line (an environment variable) is read too; its Debug shows no key.
    let one_line = operator_settings(with(base.clone(), json!({"key": key.pem.replace('\n', "\\n")}))).unwrap();
    assert!(!format!("{one_line:?}").contains(&key.pem[40..80]));

    let rules = IntegrationRules::default();
    let tenant = json!({"key": key.pem, "key_id": KEY_ID, "team_id": TEAM_ID, "environment": "sandbox"});
    assert!(tenant_settings(tenant.clone(), &rules).is_ok());
    for refused in ["base_url", "ca_cert"] {
        let err = tenant_settings(with(tenant.clone(), json!({refused: "x"})), &rules).unwrap_err().to_string();
        assert!(err.contains(&format!("settings.{refused}")) && err.contains("cannot be set"), "{err}");
    }
    assert_eq!(apns::UNIT.secrets(), ["key"]);
    assert!(providers::find(Channel::Push, "apns").is_some());
}

#[tokio::test]
async fn tenants_sign_with_their_own_keys_and_their_client_keeps_off_private_hosts() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ok("A")).mount(&server).await;
    let rules = IntegrationRules {
        base_urls: [("apns".to_owned(), server.uri())].into(),
        allow_private_hosts: true,
        ..Default::default()
    };
    let (first_key, second_key) = (team_key(), team_key());
    let tenant = |key: &TeamKey, team: &str| json!({"key": key.pem, "key_id": KEY_ID, "team_id": team, "topic": TOPIC});
    let first = build(&*tenant_settings(tenant(&first_key, "TEAMAAAAAA"), &rules).unwrap()).await;
    let second = build(&*tenant_settings(tenant(&second_key, "TEAMBBBBBB"), &rules).unwrap()).await;
    sent(first.send(&push_job(&device_token(1), None)).await);
    sent(second.send(&push_job(&device_token(2), None)).await);
    let requests = server.received_requests().await.unwrap();
    let (_, claims) = verified_token(header_of(&requests[0], "authorization"), &first_key.public);
    assert_eq!(claims["iss"], "TEAMAAAAAA");
    let (_, claims) = verified_token(header_of(&requests[1], "authorization"), &second_key.public);
    assert_eq!(claims["iss"], "TEAMBBBBBB");

    // The operator's stand-in named by a host that resolves to loopback: refused to a
    // tenant's client unless private hosts are allowed, before anything connects.
    let port = server.address().port();
    let strict = IntegrationRules {
        base_urls: [("apns".to_owned(), format!("http://localhost:{port}"))].into(),
        ..Default::default()
    };
    let guarded = build(&*tenant_settings(tenant(&first_key, "TEAMAAAAAA"), &strict).unwrap()).await;
    failed(guarded.send(&push_job(&device_token(3), None)).await, FailureKind::Config, "private_host");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_check_proves_the_key_with_a_token_no_device_has() {
    let key = team_key();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/3/device/{}", "0".repeat(64))))
        .respond_with(refusal(400, "BadDeviceToken"))
        .mount(&server)
        .await;
    let http = SharedClient::new(Duration::from_secs(5));
    let ctx = Context { http: &http, provider_timeout: Duration::from_secs(5) };
    let checked = operator_settings(settings(&key, &server.uri())).unwrap().check(&ctx).await;
    assert!(checked.ok && checked.detail.contains(KEY_ID), "{checked:?}");

    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(refusal(403, "InvalidProviderToken")).mount(&server).await;
    let checked = operator_settings(settings(&key, &server.uri())).unwrap().check(&ctx).await;
    assert!(!checked.ok && checked.code.as_deref() == Some("InvalidProviderToken"), "{checked:?}");
}

/// A TLS server with ALPN `h2` only, under a certificate made for `localhost` now: what it
/// saw of each request (HTTP version, path, topic), and the certificate's PEM.
async fn tls_apns() -> (u16, String, Arc<Mutex<Vec<(hyper::Version, String, String)>>>) {
    use hyper::{Response, body::Incoming, service::service_fn};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_rustls::{
        TlsAcceptor,
        rustls::{
            ServerConfig,
            crypto::aws_lc_rs,
            pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
        },
    };

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |request: hyper::Request<Incoming>| {
                    let topic = request.headers().get("apns-topic").map(|v| v.to_str().unwrap().to_owned());
                    log.lock().unwrap().push((
                        request.version(),
                        request.uri().path().to_owned(),
                        topic.unwrap_or_default(),
                    ));
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder().status(200).header("apns-id", "TLS-ID").body(String::new()).unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, certified.cert.pem(), seen)
}

#[tokio::test]
async fn over_tls_it_negotiates_h2_with_a_root_trusted_through_ca_cert() {
    let (port, ca_cert, seen) = tls_apns().await;
    let key = team_key();
    let base_url = format!("https://localhost:{port}");
    let token = device_token(7);

    // Without the test's root the handshake fails: nothing was sent.
    let untrusted = provider(settings(&key, &base_url)).await;
    failed(untrusted.send(&push_job(&token, None)).await, FailureKind::Retryable, "connect");
    assert!(seen.lock().unwrap().is_empty());

    let apns = provider(with(settings(&key, &base_url), json!({"ca_cert": ca_cert}))).await;
    assert_eq!(sent(apns.send(&push_job(&token, None)).await).provider_message_id, "TLS-ID");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, [(hyper::Version::HTTP_2, format!("/3/device/{token}"), TOPIC.to_owned())]);
}

#[tokio::test]
async fn device_token_not_for_topic_removes_only_a_device_that_named_its_app() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(refusal(400, "DeviceTokenNotForTopic")).mount(&server).await;
    let apns = provider(settings(&team_key(), &server.uri())).await;
    let token = device_token(3);
    let named = failed(
        apns.send(&push_job(&token, Some("com.example.other"))).await,
        FailureKind::Permanent,
        "DeviceTokenNotForTopic",
    );
    assert!(named.address_gone, "{named:?}");
    let unnamed = failed(apns.send(&push_job(&token, None)).await, FailureKind::Permanent, "DeviceTokenNotForTopic");
    assert!(!unnamed.address_gone, "{unnamed:?}");
}

#[tokio::test]
async fn providers_rebuilt_from_the_same_settings_reuse_one_provider_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ok("A")).expect(3).mount(&server).await;
    let key = team_key();
    // Each rebuild reads the settings anew: the key's token is the process's, not the
    // provider's, so Apple never sees it refreshed more often than every 20 minutes.
    for n in 0..3 {
        let apns = provider(settings(&key, &server.uri())).await;
        sent(apns.send(&push_job(&device_token(n), None)).await);
    }
    let requests = server.received_requests().await.unwrap();
    let first = header_of(&requests[0], "authorization");
    verified_token(first, &key.public);
    assert!(requests.iter().all(|r| header_of(r, "authorization") == first), "one provider token");
    // Another key of the same team and key id (a rotated key) signs its own.
    let other = team_key();
    let server2 = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ok("B")).expect(1).mount(&server2).await;
    let apns = provider(settings(&other, &server2.uri())).await;
    sent(apns.send(&push_job(&device_token(9), None)).await);
    let rotated = server2.received_requests().await.unwrap();
    verified_token(header_of(&rotated[0], "authorization"), &other.public);
}
