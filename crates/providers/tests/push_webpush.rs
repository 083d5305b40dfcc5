//! Web Push through its unit, against wiremock as the push service. The browser's side is
//! played by an independent implementation: the `ece` crate (Mozilla's, on openssl) makes
//! the subscription's key pair and decrypts the body as the browser would, and the VAPID
//! JWT is verified with the public key the `Authorization` header names, which must be
//! the operator's key.

mod common;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    encoding::{AsBigEndian, EcPrivateKeyBin},
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{failed, job, refusing_base_url, sent};
use domain::{
    Channel, DeliveryJob, FailureKind, Priority, Provider, SendOutcome,
    push::{Platform, PushDevice},
};
use figment::{Figment, providers::Serialized};
use providers::{
    Context, Integration, IntegrationRules, ProviderUnit, Source,
    http::SharedClient,
    push::webpush::{self, UNIT},
};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{method, path},
};

const SUBJECT: &str = "mailto:ops@notify.example";
/// The secret part of every endpoint of these tests: it must never show in a failure.
const ENDPOINT_SECRET: &str = "sUbScRiPtIoN-0123456789abcdef";

/// The operator's VAPID key pair: the private scalar as `web-push` tools print it, and
/// the public key the browser subscribed with.
struct Vapid {
    private: String,
    public: Vec<u8>,
}

fn vapid() -> Vapid {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a key pair");
    let scalar = AsBigEndian::<EcPrivateKeyBin<'_>>::as_be_bytes(&pair.private_key()).expect("its scalar");
    Vapid { private: URL_SAFE_NO_PAD.encode(scalar.as_ref()), public: pair.public_key().as_ref().to_vec() }
}

/// A browser: its subscription's key pair and auth secret, made by `ece`.
struct Browser {
    keys: Box<dyn ece::LocalKeyPair>,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Self {
        let (keys, auth) = ece::generate_keypair_and_auth_secret().expect("ece makes keys");
        Self { keys, auth }
    }

    /// `PushSubscription.toJSON()` for `endpoint`.
    fn subscription(&self, endpoint: &str) -> String {
        json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(self.keys.pub_as_raw().expect("raw public key")),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
        .to_string()
    }

    /// What the service worker reads: the body decrypted, as JSON.
    fn decrypt(&self, body: &[u8]) -> Value {
        let components = self.keys.raw_components().expect("raw components");
        let plaintext = ece::decrypt(&components, &self.auth, body).expect("the body decrypts");
        serde_json::from_slice(&plaintext).expect("the plaintext is JSON")
    }
}

/// The unit built from the operator's `[push.webpush]`, `allow_private_hosts` on (wiremock
/// listens on 127.0.0.1).
async fn operator(vapid: &Vapid, extra: Value) -> Arc<dyn Provider> {
    let mut section = json!({"vapid_private_key": vapid.private, "subject": SUBJECT});
    section.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let config = json!({"push": {"webpush": section}, "integrations": {"allow_private_hosts": true}});
    let figment = Figment::from(Serialized::defaults(config));
    let settings = UNIT.settings(Source::Config(&figment)).expect("valid settings");
    build(&*settings).await
}

async fn build(settings: &dyn providers::ProviderSettings) -> Arc<dyn Provider> {
    let http = SharedClient::new(Duration::from_secs(5));
    let ctx = Context { http: &http, provider_timeout: Duration::from_secs(5) };
    settings.build(&ctx).await.expect("the provider builds")
}

fn integration_settings(
    settings: &Value,
    rules: &IntegrationRules,
) -> Result<Box<dyn providers::ProviderSettings>, String> {
    let integration = Integration { tenant_id: Uuid::now_v7(), settings, rules };
    UNIT.settings(Source::Integration(&integration)).map_err(|e| e.to_string())
}

fn push_job(token: String) -> DeliveryJob {
    let mut job = job(Channel::Push, "browser-1", "order.shipped", None, json!({}));
    job.content.title = Some("Your order shipped".into());
    job.content.body = Some("It arrives Tuesday".into());
    job.device = Some(PushDevice { id: "browser-1".into(), platform: Platform::Webpush, token, app: None });
    job
}

fn endpoint(server: &MockServer) -> String {
    format!("{}/wpush/v2/{ENDPOINT_SECRET}", server.uri())
}

async fn push_service(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(format!("/wpush/v2/{ENDPOINT_SECRET}")))
        .respond_with(response)
        .mount(server)
        .await;
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording is on")
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Authorization: vapid t=<jwt>, k=<key>`, split.
fn vapid_header(request: &Request) -> (String, String) {
    let value = header(request, "authorization").expect("an Authorization header");
    let rest = value.strip_prefix("vapid ").expect("the vapid scheme");
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=').expect("name=value");
        match name {
            "t" => t = Some(value.to_owned()),
            "k" => k = Some(value.to_owned()),
            other => panic!("unexpected parameter {other}"),
        }
    }
    (t.expect("t"), k.expect("k"))
}

/// Verifies the VAPID JWT with the key `k` names, for `aud`; returns its claims.
fn verified_claims(jwt: &str, k: &str, aud: &str) -> Value {
    let point = URL_SAFE_NO_PAD.decode(k).expect("k is base64url");
    assert_eq!((point.len(), point[0]), (65, 4), "k is an uncompressed P-256 point");
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..]),
    )
    .expect("a P-256 key");
    let header = jsonwebtoken::decode_header(jwt).expect("a JWT header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[aud]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation).expect("the JWT verifies").claims
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn a_push_is_encrypted_for_the_browser_and_signed_for_its_push_service() {
    let server = MockServer::start().await;
    push_service(&server, ResponseTemplate::new(201).insert_header("location", "/m/msg-1")).await;
    let vapid = vapid();
    let provider = operator(&vapid, json!({"ttl": "1h"})).await;
    assert_eq!(provider.name(), "webpush");
    let browser = Browser::new();
    let mut job = push_job(browser.subscription(&endpoint(&server)));
    job.priority = Priority::High;
    job.content.image = Some("https://cdn.example/box.png".into());
    job.content.action_url = Some("https://shop.example/orders/1".into());
    job.content.badge = Some(3);
    job.content.sound = Some("default".into());
    job.content.data = Some(BTreeMap::from([("order".to_owned(), "1".to_owned())]));
    assert!(provider.serves(&job));

    let receipt = sent(provider.send(&job).await);
    // Only the last segment of a `Location` on the endpoint's origin is kept.
    assert_eq!(receipt.provider_message_id, "msg-1");

    let requests = requests(&server).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(header(request, "ttl"), Some("3600"));
    assert_eq!(header(request, "urgency"), Some("high"));
    let topic = job.notification_id.simple().to_string();
    assert_eq!(header(request, "topic"), Some(topic.as_str()));
    assert_eq!(header(request, "content-encoding"), Some("aes128gcm"));
    assert_eq!(header(request, "content-type"), Some("application/octet-stream"));
    assert!(request.body.len() <= 4096, "{} bytes", request.body.len());

    assert_eq!(
        browser.decrypt(&request.body),
        json!({
            "title": "Your order shipped",
            "body": "It arrives Tuesday",
            "image": "https://cdn.example/box.png",
            "action_url": "https://shop.example/orders/1",
            "badge": 3,
            "sound": "default",
            "data": {"order": "1"},
            "notification_id": job.notification_id.to_string(),
            "delivery_id": job.delivery_id.to_string(),
        })
    );

    let (jwt, k) = vapid_header(request);
    assert_eq!(k, URL_SAFE_NO_PAD.encode(&vapid.public), "k is the operator's public key");
    // The audience is the endpoint's origin, with its non-default port.
    let claims = verified_claims(&jwt, &k, &server.uri());
    assert_eq!(claims["aud"], server.uri());
    assert_eq!(claims["sub"], SUBJECT);
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp > now() && exp <= now() + 24 * 60 * 60, "exp {exp} within 24 h");
}

#[tokio::test]
async fn absent_fields_are_left_out_and_the_defaults_apply() {
    let server = MockServer::start().await;
    push_service(&server, ResponseTemplate::new(201)).await;
    let provider = operator(&vapid(), json!({})).await;
    let browser = Browser::new();
    let mut job = push_job(browser.subscription(&endpoint(&server)));
    job.content.title = None;
    job.priority = Priority::Low;
    // Without `Location`, the delivery id names the message.
    assert_eq!(sent(provider.send(&job).await).provider_message_id, job.delivery_id.to_string());
    let request = &requests(&server).await[0];
    assert_eq!(header(request, "ttl"), Some("86400"));
    assert_eq!(header(request, "urgency"), Some("low"));
    assert_eq!(
        browser.decrypt(&request.body),
        json!({
            "body": "It arrives Tuesday",
            "notification_id": job.notification_id.to_string(),
            "delivery_id": job.delivery_id.to_string(),
        })
    );

    job.priority = Priority::Normal;
    sent(provider.send(&job).await);
    assert_eq!(header(&requests(&server).await[1], "urgency"), Some("normal"));
}

#[tokio::test]
async fn the_vapid_token_is_reused_per_push_service_and_each_has_its_own_audience() {
    let (one, two) = (MockServer::start().await, MockServer::start().await);
    push_service(&one, ResponseTemplate::new(201)).await;
    push_service(&two, ResponseTemplate::new(201)).await;
    let provider = operator(&vapid(), json!({})).await;
    let browser = Browser::new();
    for server in [&one, &one, &two] {
        sent(provider.send(&push_job(browser.subscription(&endpoint(server)))).await);
    }
    let first = requests(&one).await;
    let (t1, k) = vapid_header(&first[0]);
    assert_eq!(vapid_header(&first[1]).0, t1, "the same token for the same push service");
    let (t2, _) = vapid_header(&requests(&two).await[0]);
    assert_ne!(t1, t2);
    assert_eq!(verified_claims(&t2, &k, &two.uri())["aud"], two.uri());
    // Each message has its own salt and ephemeral key.
    assert_ne!(first[0].body[..86], first[1].body[..86]);
}

#[tokio::test]
async fn every_answer_is_sorted_and_no_failure_names_the_endpoint() {
    let cases = [
        (404, None, FailureKind::Permanent, true),
        (410, None, FailureKind::Permanent, true),
        (400, None, FailureKind::Permanent, false),
        (413, None, FailureKind::Permanent, false),
        // One subscription's refusal (an earlier VAPID key, an endpoint a user controls):
        // this message fails, the provider is not paused, the device stays.
        (401, None, FailureKind::Permanent, false),
        (403, None, FailureKind::Permanent, false),
        (429, Some(7), FailureKind::Retryable, false),
        (500, None, FailureKind::Ambiguous, false),
        (503, Some(30), FailureKind::Ambiguous, false),
        (301, None, FailureKind::Permanent, false),
    ];
    let server = MockServer::start().await;
    let provider = operator(&vapid(), json!({})).await;
    let browser = Browser::new();
    let job = push_job(browser.subscription(&endpoint(&server)));
    for (status, retry_after, kind, gone) in cases {
        server.reset().await;
        let mut response = ResponseTemplate::new(status).set_body_json(json!({
            "code": status, "errno": 106, "error": "Gone",
            "message": format!("Request did not validate: no such subscription {}", endpoint(&server)),
        }));
        if let Some(seconds) = retry_after {
            response = response.insert_header("retry-after", seconds.to_string().as_str());
        }
        push_service(&server, response).await;
        let failure = failed(provider.send(&job).await, kind, &format!("webpush_{status}"));
        assert_eq!(failure.address_gone, gone, "{status}");
        assert_eq!(failure.retry_after, retry_after.map(Duration::from_secs), "{status}");
        assert!(!failure.message.contains(ENDPOINT_SECRET), "{failure:?}");
        // The status and the known code only: the push service's text is not kept.
        assert!(!failure.message.contains("no such subscription"), "{failure:?}");
        assert!(failure.message.contains(&status.to_string()) && failure.message.contains("errno 106"), "{failure:?}");
    }
}

#[tokio::test]
async fn a_push_service_that_cannot_be_reached_is_retried() {
    let provider = operator(&vapid(), json!({})).await;
    let endpoint = format!("{}/wpush/{ENDPOINT_SECRET}", refusing_base_url());
    let failure = failed(
        provider.send(&push_job(Browser::new().subscription(&endpoint))).await,
        FailureKind::Retryable,
        "connect",
    );
    assert!(!failure.message.contains(ENDPOINT_SECRET), "{failure:?}");
}

#[tokio::test]
async fn a_subscription_that_does_not_parse_or_a_push_too_large_fails_without_a_request() {
    let server = MockServer::start().await;
    push_service(&server, ResponseTemplate::new(201)).await;
    let provider = operator(&vapid(), json!({})).await;
    let browser = Browser::new();
    let good: Value = serde_json::from_str(&browser.subscription(&endpoint(&server))).unwrap();
    let mut short_key = good.clone();
    short_key["keys"]["p256dh"] = json!(URL_SAFE_NO_PAD.encode([4u8; 33]));
    // 65 bytes starting 0x04, but not a point on the curve.
    let mut off_curve = good.clone();
    off_curve["keys"]["p256dh"] = json!(URL_SAFE_NO_PAD.encode([[4u8].as_slice(), &[0xff; 64]].concat()));
    let mut no_auth = good.clone();
    no_auth["keys"].as_object_mut().unwrap().remove("auth");
    for token in ["not json".to_owned(), short_key.to_string(), off_curve.to_string(), no_auth.to_string()] {
        let failure =
            failed(provider.send(&push_job(token.clone())).await, FailureKind::Permanent, "invalid_subscription");
        assert!(!failure.address_gone && !failure.message.contains(ENDPOINT_SECRET), "{failure:?}");
    }

    let mut large = push_job(good.to_string());
    large.content.body = Some("x".repeat(webpush::MAX_PLAINTEXT));
    failed(provider.send(&large).await, FailureKind::Permanent, "payload_too_large");
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn a_private_endpoint_is_refused_unless_the_operator_allows_private_hosts() {
    let server = MockServer::start().await;
    push_service(&server, ResponseTemplate::new(201)).await;
    let vapid = vapid();
    let settings = json!({"vapid_private_key": vapid.private, "subject": SUBJECT});
    let browser = Browser::new();
    let port = server.address().port();

    let strict = IntegrationRules::default();
    let provider = build(&*integration_settings(&settings, &strict).unwrap()).await;
    for endpoint in [
        endpoint(&server),
        format!("https://127.0.0.1:{port}/wpush/v2/{ENDPOINT_SECRET}"),
        format!("https://localhost:{port}/wpush/v2/{ENDPOINT_SECRET}"),
        format!("https://[::1]:{port}/wpush/v2/{ENDPOINT_SECRET}"),
    ] {
        let failure = failed(
            provider.send(&push_job(browser.subscription(&endpoint))).await,
            FailureKind::Permanent,
            "invalid_subscription",
        );
        assert!(!failure.message.contains(ENDPOINT_SECRET), "{failure:?}");
    }
    assert!(requests(&server).await.is_empty());

    let lax = IntegrationRules { allow_private_hosts: true, ..Default::default() };
    let provider = build(&*integration_settings(&settings, &lax).unwrap()).await;
    sent(provider.send(&push_job(browser.subscription(&endpoint(&server)))).await);
}

#[tokio::test]
async fn only_webpush_devices_are_served() {
    let provider = operator(&vapid(), json!({})).await;
    let mut job = push_job(Browser::new().subscription("https://push.example/x"));
    assert!(provider.serves(&job));
    job.device.as_mut().unwrap().platform = Platform::Fcm;
    assert!(!provider.serves(&job));
    failed(provider.send(&job).await, FailureKind::Permanent, "no_device");
    job.device = None;
    assert!(!provider.serves(&job));
}

#[tokio::test]
async fn settings_are_checked_and_the_check_names_the_public_key() {
    let vapid = vapid();
    let rules = IntegrationRules::default();
    let good = json!({"vapid_private_key": vapid.private, "subject": SUBJECT});
    let settings = integration_settings(&good, &rules).expect("valid");
    let http = SharedClient::for_tenants(Duration::from_secs(5), &rules);
    let checked = settings.check(&Context { http: &http, provider_timeout: Duration::from_secs(5) }).await;
    assert!(checked.ok, "{checked:?}");
    assert!(checked.detail.contains(&URL_SAFE_NO_PAD.encode(&vapid.public)), "{checked:?}");
    assert!(!format!("{settings:?}").contains(&vapid.private), "the key is not printed");

    assert!(
        integration_settings(
            &json!({"vapid_private_key": vapid.private, "subject": "https://notify.example/contact"}),
            &rules
        )
        .is_ok()
    );
    for (bad, key) in [
        (json!({"subject": SUBJECT}), "settings.vapid_private_key"),
        (json!({"vapid_private_key": "bm90IGEga2V5", "subject": SUBJECT}), "settings.vapid_private_key"),
        (json!({"vapid_private_key": vapid.private}), "settings.subject"),
        (json!({"vapid_private_key": vapid.private, "subject": "ops@notify.example"}), "settings.subject"),
        (json!({"vapid_private_key": vapid.private, "subject": "http://notify.example"}), "settings.subject"),
        (json!({"vapid_private_key": vapid.private, "subject": "mailto:ops@localhost"}), "settings.subject"),
        (json!({"vapid_private_key": vapid.private, "subject": "mailto:ops@notify.invalid"}), "settings.subject"),
        (json!({"vapid_private_key": vapid.private, "subject": "https://localhost/contact"}), "settings.subject"),
        (json!({"vapid_private_key": vapid.private, "subject": SUBJECT, "ttl": "30d"}), "settings.ttl"),
        (json!({"vapid_private_key": vapid.private, "subject": SUBJECT, "ttl": "soon"}), "settings.ttl"),
        (json!({"vapid_private_key": vapid.private, "subject": SUBJECT, "base_url": "http://x"}), "settings.base_url"),
        (json!({"vapid_private_key": vapid.private, "subject": SUBJECT, "endpoint": "http://x"}), "settings.endpoint"),
    ] {
        let err = integration_settings(&bad, &rules).expect_err(&bad.to_string());
        assert!(err.contains(key), "{bad}: {err}");
        assert!(!err.contains(&vapid.private), "{err}");
    }

    // The unit is in the catalog, under the push channel.
    let unit = providers::find(Channel::Push, "webpush").expect("in the catalog");
    assert_eq!(unit.secrets(), ["vapid_private_key"]);
    // The operator's section is required as a whole.
    let empty = Figment::new();
    let err = UNIT.settings(Source::Config(&empty)).unwrap_err().to_string();
    assert!(err.contains("push.webpush") && err.contains("NOTIFY_PUSH__WEBPUSH__"), "{err}");
}

#[tokio::test]
async fn a_send_outcome_is_never_sent_twice_by_one_call() {
    // One call, one request: the provider itself never retries (the worker does).
    let server = MockServer::start().await;
    push_service(&server, ResponseTemplate::new(503)).await;
    let provider = operator(&vapid(), json!({})).await;
    let outcome = provider.send(&push_job(Browser::new().subscription(&endpoint(&server)))).await;
    assert!(matches!(outcome, SendOutcome::Failed(_)));
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn two_tenants_sign_with_their_own_keys() {
    let server = MockServer::start().await;
    push_service(&server, ResponseTemplate::new(201)).await;
    let rules = IntegrationRules { allow_private_hosts: true, ..Default::default() };
    let (a, b) = (vapid(), vapid());
    let browser = Browser::new();
    for key in [&a, &b] {
        let settings = json!({"vapid_private_key": key.private, "subject": SUBJECT});
        let provider = build(&*integration_settings(&settings, &rules).unwrap()).await;
        sent(provider.send(&push_job(browser.subscription(&endpoint(&server)))).await);
    }
    let requests = requests(&server).await;
    for (request, key) in requests.iter().zip([&a, &b]) {
        let (jwt, k) = vapid_header(request);
        assert_eq!(k, URL_SAFE_NO_PAD.encode(&key.public));
        verified_claims(&jwt, &k, &server.uri());
    }
    // A's token does not verify with B's key.
    let (jwt_a, _) = vapid_header(&requests[0]);
    let k_b = URL_SAFE_NO_PAD.encode(&b.public);
    let point = URL_SAFE_NO_PAD.decode(&k_b).unwrap();
    let key_b = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..]),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[server.uri()]);
    assert!(jsonwebtoken::decode::<Value>(&jwt_a, &key_b, &validation).is_err());
}

#[tokio::test]
async fn the_largest_push_fills_a_4096_byte_body_that_still_decrypts() {
    let server = MockServer::start().await;
    push_service(&server, ResponseTemplate::new(201)).await;
    let provider = operator(&vapid(), json!({})).await;
    let browser = Browser::new();
    let mut job = push_job(browser.subscription(&endpoint(&server)));
    job.content.body = Some(String::new());
    let overhead = webpush::payload(&job).len();
    job.content.body = Some("x".repeat(webpush::MAX_PLAINTEXT - overhead));
    assert_eq!(webpush::payload(&job).len(), webpush::MAX_PLAINTEXT);
    sent(provider.send(&job).await);
    let request = &requests(&server).await[0];
    assert_eq!(request.body.len(), 4096);
    assert_eq!(browser.decrypt(&request.body)["body"].as_str().map(str::len), Some(webpush::MAX_PLAINTEXT - overhead));

    // One byte more is refused before sending.
    job.content.body = Some("x".repeat(webpush::MAX_PLAINTEXT - overhead + 1));
    failed(provider.send(&job).await, FailureKind::Permanent, "payload_too_large");
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn a_location_quoting_the_subscription_or_off_its_origin_is_not_kept() {
    let server = MockServer::start().await;
    let provider = operator(&vapid(), json!({})).await;
    let browser = Browser::new();
    let job = push_job(browser.subscription(&endpoint(&server)));
    for location in [
        format!("/wpush/v2/{ENDPOINT_SECRET}"),
        format!("/m/{ENDPOINT_SECRET}:1"),
        "https://elsewhere.example/m/1".into(),
    ] {
        server.reset().await;
        push_service(&server, ResponseTemplate::new(201).insert_header("location", location.as_str())).await;
        let receipt = sent(provider.send(&job).await);
        assert_eq!(receipt.provider_message_id, job.delivery_id.to_string(), "{location}");
    }
}

#[tokio::test]
async fn a_tenants_provider_sends_through_the_contexts_guarded_client() {
    // The push service answers in 1 s: the context's client (a 200 ms limit) gives up, a
    // client of the provider's own (the 5 s `provider_timeout`) would wait.
    let server = MockServer::start().await;
    push_service(&server, ResponseTemplate::new(201).set_delay(Duration::from_secs(1))).await;
    let rules = IntegrationRules { allow_private_hosts: true, ..Default::default() };
    let key = vapid();
    let settings =
        integration_settings(&json!({"vapid_private_key": key.private, "subject": SUBJECT}), &rules).unwrap();
    let job = push_job(Browser::new().subscription(&endpoint(&server)));

    let tenants = SharedClient::for_tenants(Duration::from_millis(200), &rules);
    let ctx = Context { http: &tenants, provider_timeout: Duration::from_secs(5) };
    let provider = settings.build(&ctx).await.expect("the provider builds");
    failed(provider.send(&job).await, FailureKind::Ambiguous, "timeout");

    // The operator's (unguarded) client is never used: the provider builds a guarded one.
    let operators = SharedClient::new(Duration::from_millis(200));
    let ctx = Context { http: &operators, provider_timeout: Duration::from_secs(5) };
    let provider = settings.build(&ctx).await.expect("the provider builds");
    sent(provider.send(&job).await);
}
