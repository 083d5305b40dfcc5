//! The FCM HTTP v1 unit against a wiremock stand-in serving both Google's token endpoint
//! (`/token`, the JWT-bearer grant) and FCM (`/v1/projects/{p}/messages:send`): the grant's
//! assertion verified with the service account's public key, the exact message, the token
//! kept across sends and refreshed once for concurrent ones, after its expiry and after a
//! 401, every error class, and two service accounts kept apart. The RSA keys are generated
//! when the tests start (aws-lc-rs), never committed.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aws_lc_rs::{
    encoding::AsDer,
    rsa::{KeyPair, KeySize},
    signature::KeyPair as _,
};
use base64::Engine as _;
use common::{failed, job, sent};
use domain::{
    Channel, DeliveryJob, FailureKind, Priority, Provider,
    push::{Platform, PushDevice},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use providers::{
    Context, Integration, IntegrationRules, ProviderSettings, ProviderUnit, Source, http::SharedClient, push::fcm,
};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{header, method, path},
};

const PROJECT: &str = "demo-proj";
const OTHER_PROJECT: &str = "other-proj";
const DEVICE_TOKEN: &str = "fcm-device-token:APA91bSeCrEt_0123456789";

/// A service account's key pair: the PEM its JSON holds, the public key to verify with.
struct TestKey {
    pem: String,
    public: DecodingKey,
}

fn generate() -> TestKey {
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("an RSA key");
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("PKCS#8");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
    let public = pair.public_key();
    let public = DecodingKey::from_rsa_raw_components(
        public.modulus().big_endian_without_leading_zero(),
        public.exponent().big_endian_without_leading_zero(),
    );
    TestKey { pem, public }
}

/// Two keys, one per service account, made once for the whole binary.
fn keys() -> &'static [TestKey; 2] {
    static KEYS: OnceLock<[TestKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [generate(), generate()])
}

fn email(project: &str) -> String {
    format!("notify@{project}.iam.gserviceaccount.com")
}

/// A service account's JSON key file, as the console downloads it.
fn service_account(key: &TestKey, project: &str, token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": format!("kid-{project}"),
        "private_key": key.pem,
        "client_email": email(project),
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

/// The operator's `[push.fcm]`: the JSON names `/token` of the stand-in, FCM is the stand-in.
fn operator_settings(server: &MockServer, key: &TestKey, project: &str) -> Value {
    json!({
        "service_account": service_account(key, project, &format!("{}/token", server.uri())),
        "base_url": server.uri(),
    })
}

/// A server of its own, not one of wiremock's pool: the token cache is the process's,
/// keyed by the account and its token URI, so a pooled server (the same URI) would find
/// the token an earlier test was granted.
async fn fresh_server() -> MockServer {
    MockServer::builder().start().await
}

async fn fcm_provider(server: &MockServer) -> Arc<dyn Provider> {
    common::built(&fcm::UNIT, operator_settings(server, &keys()[0], PROJECT)).await
}

fn push_job(token: &str, app: Option<&str>) -> DeliveryJob {
    let mut job = job(Channel::Push, "phone-1", "comment.created", None, json!({}));
    job.content.title = Some("New comment".into());
    job.content.body = Some("Ada replied to your post".into());
    job.device = Some(PushDevice {
        id: "phone-1".into(),
        platform: Platform::Fcm,
        token: token.into(),
        app: app.map(str::to_owned),
    });
    job
}

/// Answers the grant with `tok-1`, `tok-2`, … (`expires_in` from `lifetimes`, the last one
/// repeated), after `delay`.
struct Tokens {
    issued: AtomicUsize,
    lifetimes: Vec<u64>,
    delay: Duration,
}

impl Respond for Tokens {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let lifetime = self.lifetimes.get(n).or(self.lifetimes.last()).copied().unwrap_or(3599);
        ResponseTemplate::new(200)
            .set_body_json(
                json!({"access_token": format!("tok-{}", n + 1), "expires_in": lifetime, "token_type": "Bearer"}),
            )
            .set_delay(self.delay)
    }
}

async fn mount_tokens(server: &MockServer, lifetimes: &[u64], delay: Duration) {
    let tokens = Tokens { issued: AtomicUsize::new(0), lifetimes: lifetimes.to_vec(), delay };
    Mock::given(method("POST")).and(path("/token")).respond_with(tokens).mount(server).await;
}

fn send_path(project: &str) -> String {
    format!("/v1/projects/{project}/messages:send")
}

/// FCM accepts any message sent with one of `tokens`.
async fn mount_send(server: &MockServer, project: &str, tokens: &[&str]) {
    for token in tokens {
        Mock::given(method("POST"))
            .and(path(send_path(project)))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"name": format!("projects/{project}/messages/0:1%{token}")})),
            )
            .mount(server)
            .await;
    }
}

async fn requests(server: &MockServer, at: &str) -> Vec<Request> {
    let all = server.received_requests().await.expect("recording is on");
    all.into_iter().filter(|r| r.url.path() == at).collect()
}

/// The form fields of a grant request.
fn form(request: &Request) -> BTreeMap<String, String> {
    let body = std::str::from_utf8(&request.body).expect("a form is text");
    let url = reqwest::Url::parse(&format!("http://form/?{body}")).expect("a form parses as a query");
    url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    iss: String,
    scope: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// The grant's assertion, its signature verified with `key`: its header's `kid` and claims.
fn assertion(request: &Request, key: &TestKey, token_uri: &str) -> (Option<String>, Claims) {
    let form = form(request);
    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[token_uri]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let data = jsonwebtoken::decode::<Claims>(&form["assertion"], &key.public, &validation)
        .expect("the assertion verifies with the service account's public key");
    (data.header.kid, data.claims)
}

fn message_of(request: &Request) -> Value {
    serde_json::from_slice::<Value>(&request.body).expect("a JSON body")["message"].clone()
}

#[tokio::test]
async fn a_push_is_the_v1_message_sent_with_a_token_the_signed_grant_obtained() {
    let server = fresh_server().await;
    mount_tokens(&server, &[3599], Duration::ZERO).await;
    mount_send(&server, PROJECT, &["tok-1"]).await;
    let provider = fcm_provider(&server).await;
    assert_eq!(provider.name(), "fcm");

    let mut job = push_job(DEVICE_TOKEN, Some(PROJECT));
    job.priority = Priority::High;
    job.content.image = Some("https://cdn.example.com/a.png".into());
    job.content.action_url = Some("https://app.example.com/posts/1".into());
    job.content.sound = Some("default".into());
    job.content.badge = Some(3);
    job.content.data = Some([("post_id".to_owned(), "1".to_owned())].into());
    assert!(provider.serves(&job));
    let receipt = sent(provider.send(&job).await);
    assert_eq!(receipt.provider_message_id, format!("projects/{PROJECT}/messages/0:1%tok-1"));

    let token_uri = format!("{}/token", server.uri());
    let grants = requests(&server, "/token").await;
    assert_eq!(grants.len(), 1);
    let (kid, claims) = assertion(&grants[0], &keys()[0], &token_uri);
    assert_eq!(kid.as_deref(), Some("kid-demo-proj"));
    assert_eq!(claims.iss, email(PROJECT));
    assert_eq!(claims.scope, fcm::SCOPE);
    assert_eq!(claims.aud, token_uri);
    assert_eq!(claims.exp, claims.iat + 3600);

    let sends = requests(&server, &send_path(PROJECT)).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].headers["content-type"], "application/json; charset=utf-8");
    let message = message_of(&sends[0]);
    let collapse = job.notification_id.simple().to_string();
    let expiration: u64 = message["apns"]["headers"]["apns-expiration"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 86_400 - 5..=now + 86_400).contains(&expiration), "{expiration} vs {now}");
    assert_eq!(
        message,
        json!({
            "token": DEVICE_TOKEN,
            "notification": {"title": "New comment", "body": "Ada replied to your post", "image": "https://cdn.example.com/a.png"},
            "data": {"post_id": "1", "action_url": "https://app.example.com/posts/1"},
            "android": {
                "collapse_key": collapse, "priority": "HIGH", "ttl": "86400s",
                "notification": {"sound": "default", "notification_count": 3},
            },
            "apns": {
                "headers": {"apns-priority": "10", "apns-collapse-id": collapse, "apns-expiration": expiration.to_string()},
                "payload": {"aps": {"sound": "default", "badge": 3, "mutable-content": 1}},
                "fcm_options": {"image": "https://cdn.example.com/a.png"},
            },
            "webpush": {
                "headers": {"TTL": "86400", "Urgency": "high", "Topic": collapse},
                "fcm_options": {"link": "https://app.example.com/posts/1"},
            },
        })
    );
}

#[tokio::test]
async fn priority_and_ttl_set_each_platforms_headers() {
    let server = fresh_server().await;
    mount_tokens(&server, &[3599], Duration::ZERO).await;
    mount_send(&server, PROJECT, &["tok-1"]).await;
    let settings = common::with(operator_settings(&server, &keys()[0], PROJECT), json!({"ttl": "1h"}));
    let provider = common::built(&fcm::UNIT, settings).await;
    for (priority, android, apns, urgency) in [
        (Priority::Low, "NORMAL", "5", "low"),
        (Priority::Normal, "NORMAL", "10", "normal"),
        (Priority::Urgent, "HIGH", "10", "high"),
    ] {
        let mut job = push_job(DEVICE_TOKEN, None);
        job.priority = priority;
        job.content.action_url = Some("myapp://posts/1".into());
        sent(provider.send(&job).await);
        let message = message_of(requests(&server, &send_path(PROJECT)).await.last().unwrap());
        assert_eq!(message["android"]["priority"], android, "{priority:?}");
        assert_eq!(message["android"]["ttl"], "3600s");
        assert_eq!(message["apns"]["headers"]["apns-priority"], apns, "{priority:?}");
        assert_eq!(message["webpush"]["headers"]["Urgency"], urgency, "{priority:?}");
        assert_eq!(message["webpush"]["headers"]["TTL"], "3600");
        // Not an https link: FCM would refuse the message, so only the data carries it.
        assert!(message["webpush"].get("fcm_options").is_none(), "{message}");
        assert_eq!(message["data"], json!({"action_url": "myapp://posts/1"}));
        assert!(message["apns"].get("payload").is_none() && message["android"].get("notification").is_none());
    }
}

#[tokio::test]
async fn the_token_is_kept_across_sends() {
    let server = fresh_server().await;
    mount_tokens(&server, &[3599], Duration::ZERO).await;
    mount_send(&server, PROJECT, &["tok-1"]).await;
    let provider = fcm_provider(&server).await;
    for _ in 0..3 {
        sent(provider.send(&push_job(DEVICE_TOKEN, None)).await);
    }
    assert_eq!(requests(&server, "/token").await.len(), 1);
    assert_eq!(requests(&server, &send_path(PROJECT)).await.len(), 3);
}

#[tokio::test]
async fn concurrent_sends_wait_for_one_grant() {
    let server = fresh_server().await;
    mount_tokens(&server, &[3599], Duration::from_millis(300)).await;
    mount_send(&server, PROJECT, &["tok-1"]).await;
    let provider = fcm_provider(&server).await;
    let jobs: Vec<DeliveryJob> = (0..12).map(|_| push_job(DEVICE_TOKEN, None)).collect();
    let outcomes = futures_util::future::join_all(jobs.iter().map(|job| provider.send(job))).await;
    for outcome in outcomes {
        sent(outcome);
    }
    assert_eq!(requests(&server, "/token").await.len(), 1);
    assert_eq!(requests(&server, &send_path(PROJECT)).await.len(), 12);
}

#[tokio::test]
async fn concurrent_sends_share_the_failure_of_the_one_grant() {
    let server = fresh_server().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(300)))
        .mount(&server)
        .await;
    let provider = fcm_provider(&server).await;
    let jobs: Vec<DeliveryJob> = (0..6).map(|_| push_job(DEVICE_TOKEN, None)).collect();
    for outcome in futures_util::future::join_all(jobs.iter().map(|job| provider.send(job))).await {
        failed(outcome, FailureKind::Retryable, "token_http_503");
    }
    assert_eq!(requests(&server, "/token").await.len(), 1);
    // A later send asks again.
    failed(provider.send(&jobs[0]).await, FailureKind::Retryable, "token_http_503");
    assert_eq!(requests(&server, "/token").await.len(), 2);
}

#[tokio::test]
async fn a_token_is_refreshed_once_it_is_within_five_minutes_of_its_expiry() {
    let server = fresh_server().await;
    // The first token lives 300 s: used for the send it was asked for, then replaced.
    mount_tokens(&server, &[300, 3599], Duration::ZERO).await;
    mount_send(&server, PROJECT, &["tok-1", "tok-2"]).await;
    let provider = fcm_provider(&server).await;
    let mut used = Vec::new();
    for _ in 0..3 {
        let receipt = sent(provider.send(&push_job(DEVICE_TOKEN, None)).await);
        used.push(receipt.provider_message_id.rsplit('%').next().unwrap().to_owned());
    }
    assert_eq!(used, ["tok-1", "tok-2", "tok-2"]);
    assert_eq!(requests(&server, "/token").await.len(), 2);
}

#[tokio::test]
async fn a_401_drops_the_token_and_the_send_is_retried_once_with_a_new_one() {
    let server = fresh_server().await;
    mount_tokens(&server, &[3599], Duration::ZERO).await;
    let unauthenticated = json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access token"}});
    Mock::given(method("POST"))
        .and(path(send_path(PROJECT)))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(&unauthenticated))
        .expect(1)
        .mount(&server)
        .await;
    mount_send(&server, PROJECT, &["tok-2"]).await;
    let provider = fcm_provider(&server).await;
    let receipt = sent(provider.send(&push_job(DEVICE_TOKEN, None)).await);
    assert!(receipt.provider_message_id.ends_with("%tok-2"));
    // The new token is kept.
    sent(provider.send(&push_job(DEVICE_TOKEN, None)).await);
    assert_eq!(requests(&server, "/token").await.len(), 2);
    assert_eq!(requests(&server, &send_path(PROJECT)).await.len(), 3);

    // Refused again with the new token: the account is wrong, not the token.
    let server = fresh_server().await;
    mount_tokens(&server, &[3599], Duration::ZERO).await;
    Mock::given(method("POST"))
        .and(path(send_path(PROJECT)))
        .respond_with(ResponseTemplate::new(401).set_body_json(&unauthenticated))
        .expect(2)
        .mount(&server)
        .await;
    let provider = fcm_provider(&server).await;
    failed(provider.send(&push_job(DEVICE_TOKEN, None)).await, FailureKind::Config, "UNAUTHENTICATED");
    assert_eq!(requests(&server, "/token").await.len(), 2);
}

fn fcm_error(http: u16, status: &str, code: Option<&str>, message: &str) -> Value {
    let mut details = Vec::new();
    if let Some(code) = code {
        details.push(json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}));
    }
    json!({"error": {"code": http, "message": message, "status": status, "details": details}})
}

#[tokio::test]
async fn every_error_is_sorted_and_a_dead_token_is_gone() {
    struct Case {
        status: u16,
        body: Option<Value>,
        retry_after: Option<&'static str>,
        kind: FailureKind,
        code: &'static str,
        gone: bool,
        delay: Option<u64>,
    }
    let case = |status, body, kind, code, gone| Case { status, body, retry_after: None, kind, code, gone, delay: None };
    use FailureKind::*;
    let mut bad_token = fcm_error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), "Invalid registration token");
    bad_token["error"]["details"].as_array_mut().unwrap().push(json!({
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}],
    }));
    let cases = [
        case(
            404,
            Some(fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"), "Requested entity was not found.")),
            Permanent,
            "UNREGISTERED",
            true,
        ),
        // A device that did not name its project: the account may be the wrong one, the
        // device is kept (see the test below for one that did).
        case(
            403,
            Some(fcm_error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), "SenderId mismatch")),
            Permanent,
            "SENDER_ID_MISMATCH",
            false,
        ),
        case(400, Some(bad_token), Permanent, "INVALID_ARGUMENT", true),
        case(
            400,
            Some(fcm_error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "Invalid value at 'message.data[0].value' (TYPE_STRING)",
            )),
            Permanent,
            "INVALID_ARGUMENT",
            false,
        ),
        // Google's status alone, the token quoted: gone, and the token kept out of the message.
        case(
            400,
            Some(fcm_error(
                400,
                "INVALID_ARGUMENT",
                None,
                &format!("The registration token {DEVICE_TOKEN} is not a valid FCM registration token"),
            )),
            Permanent,
            "INVALID_ARGUMENT",
            true,
        ),
        case(
            401,
            Some(fcm_error(
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "Auth error from APNS or Web Push Service",
            )),
            Config,
            "THIRD_PARTY_AUTH_ERROR",
            false,
        ),
        case(
            403,
            Some(fcm_error(403, "PERMISSION_DENIED", None, "Permission 'cloudmessaging.messages.create' denied")),
            Config,
            "PERMISSION_DENIED",
            false,
        ),
        Case {
            retry_after: Some("120"),
            delay: Some(120),
            ..case(
                429,
                Some(fcm_error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), "Quota exceeded")),
                Retryable,
                "QUOTA_EXCEEDED",
                false,
            )
        },
        // FCM asks for at least a minute after a quota error.
        Case { delay: Some(60), ..case(429, None, Retryable, "http_429", false) },
        Case {
            retry_after: Some("30"),
            delay: Some(30),
            ..case(
                503,
                Some(fcm_error(503, "UNAVAILABLE", Some("UNAVAILABLE"), "The service is currently unavailable.")),
                Ambiguous,
                "UNAVAILABLE",
                false,
            )
        },
        case(
            500,
            Some(fcm_error(500, "INTERNAL", Some("INTERNAL"), "Internal error encountered.")),
            Ambiguous,
            "INTERNAL",
            false,
        ),
        case(502, None, Ambiguous, "http_502", false),
        case(413, None, Permanent, "http_413", false),
        // No Google error at all: the base URL is not FCM's.
        case(404, None, Config, "http_404", false),
    ];
    for case in cases {
        let server = fresh_server().await;
        mount_tokens(&server, &[3599], Duration::ZERO).await;
        let mut response = ResponseTemplate::new(case.status);
        response = match &case.body {
            Some(body) => response.set_body_json(body),
            None => response.set_body_string("<html><body>Bad Gateway</body></html>"),
        };
        if let Some(retry_after) = case.retry_after {
            response = response.insert_header("retry-after", retry_after);
        }
        Mock::given(method("POST")).and(path(send_path(PROJECT))).respond_with(response).mount(&server).await;
        let provider = fcm_provider(&server).await;
        let failure = failed(provider.send(&push_job(DEVICE_TOKEN, None)).await, case.kind, case.code);
        assert_eq!(failure.address_gone, case.gone, "{failure:?}");
        assert_eq!(failure.retry_after, case.delay.map(Duration::from_secs), "{failure:?}");
        assert!(!failure.message.contains(DEVICE_TOKEN), "{failure:?}");
    }
}

#[tokio::test]
async fn a_refused_or_unreachable_grant_sends_nothing() {
    let server = fresh_server().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(send_path(PROJECT)))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let provider = fcm_provider(&server).await;
    let failure = failed(provider.send(&push_job(DEVICE_TOKEN, None)).await, FailureKind::Config, "invalid_grant");
    assert!(failure.message.contains("Invalid JWT Signature."), "{failure:?}");

    let busy = fresh_server().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "7"))
        .mount(&busy)
        .await;
    let provider = common::built(&fcm::UNIT, operator_settings(&busy, &keys()[0], PROJECT)).await;
    let failure = failed(provider.send(&push_job(DEVICE_TOKEN, None)).await, FailureKind::Retryable, "token_http_503");
    assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));

    // A slow token endpoint has a third of the send's time: nothing was sent, so retryable.
    let slow = fresh_server().await;
    mount_tokens(&slow, &[3599], Duration::from_secs(2)).await;
    let settings = operator_settings(&slow, &keys()[0], PROJECT);
    let provider = common::built_with(&fcm::UNIT, settings, Duration::from_secs(3)).await;
    failed(provider.send(&push_job(DEVICE_TOKEN, None)).await, FailureKind::Retryable, "token_timeout");

    // Nothing listens at the token URI: nothing was sent, so it is retryable.
    let settings = common::with(
        operator_settings(&server, &keys()[0], PROJECT),
        json!({"token_uri": format!("{}/token", common::refusing_base_url())}),
    );
    let provider = common::built(&fcm::UNIT, settings).await;
    failed(provider.send(&push_job(DEVICE_TOKEN, None)).await, FailureKind::Retryable, "token_connect");
}

#[tokio::test]
async fn two_service_accounts_each_use_their_own_token() {
    let server = fresh_server().await;
    // One token endpoint for both: it answers by the assertion's issuer.
    struct ByIssuer;
    impl Respond for ByIssuer {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            let claims: Claims = jsonwebtoken::dangerous::insecure_decode(&form(request)["assertion"]).unwrap().claims;
            let token = if claims.iss == email(PROJECT) { "tok-demo" } else { "tok-other" };
            ResponseTemplate::new(200).set_body_json(json!({"access_token": token, "expires_in": 3599}))
        }
    }
    Mock::given(method("POST")).and(path("/token")).respond_with(ByIssuer).mount(&server).await;
    mount_send(&server, PROJECT, &["tok-demo"]).await;
    mount_send(&server, OTHER_PROJECT, &["tok-other"]).await;

    let rules = IntegrationRules {
        base_urls: [("fcm".to_owned(), server.uri())].into(),
        allow_private_hosts: true,
        ..Default::default()
    };
    let token_uri = format!("{}/token", server.uri());
    // Each tenant's JSON names Google's token endpoint: the operator's stand-in is used.
    let tenant = |key: &'static TestKey, project: &'static str| {
        let rules = &rules;
        async move {
            let settings =
                json!({"service_account": service_account(key, project, "https://oauth2.googleapis.com/token")});
            let integration = Integration { tenant_id: Uuid::now_v7(), settings: &settings, rules };
            let settings = fcm::UNIT.settings(Source::Integration(&integration)).expect("valid settings");
            build(&*settings).await
        }
    };
    let demo = tenant(&keys()[0], PROJECT).await;
    let other = tenant(&keys()[1], OTHER_PROJECT).await;
    for _ in 0..2 {
        assert!(
            sent(demo.send(&push_job(DEVICE_TOKEN, Some(PROJECT))).await).provider_message_id.ends_with("%tok-demo")
        );
        assert!(sent(other.send(&push_job(DEVICE_TOKEN, None)).await).provider_message_id.ends_with("%tok-other"));
    }
    // A device of the other project is not this account's.
    assert!(!demo.serves(&push_job(DEVICE_TOKEN, Some(OTHER_PROJECT))));
    assert!(other.serves(&push_job(DEVICE_TOKEN, Some(OTHER_PROJECT))));

    let grants = requests(&server, "/token").await;
    assert_eq!(grants.len(), 2, "one grant per account, each kept");
    // Each assertion verifies with its own account's key only.
    let mut issuers = Vec::new();
    for grant in &grants {
        let claims: Claims = jsonwebtoken::dangerous::insecure_decode(&form(grant)["assertion"]).unwrap().claims;
        let (own, other) =
            if claims.iss == email(PROJECT) { (&keys()[0], &keys()[1]) } else { (&keys()[1], &keys()[0]) };
        let (kid, verified) = assertion(grant, own, &token_uri);
        assert_eq!(kid, Some(format!("kid-{}", if own.pem == keys()[0].pem { PROJECT } else { OTHER_PROJECT })));
        assert_eq!(verified.iss, claims.iss);
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&token_uri]);
        assert!(jsonwebtoken::decode::<Claims>(&form(grant)["assertion"], &other.public, &validation).is_err());
        issuers.push(claims.iss);
    }
    issuers.sort();
    assert_eq!(issuers, [email(PROJECT), email(OTHER_PROJECT)]);
}

async fn build(settings: &dyn ProviderSettings) -> Arc<dyn Provider> {
    let http = SharedClient::new(Duration::from_secs(5));
    let ctx = Context { http: &http, provider_timeout: Duration::from_secs(5) };
    settings.build(&ctx).await.expect("the provider builds")
}

#[tokio::test]
async fn the_check_is_a_grant_and_sends_nothing() {
    let server = fresh_server().await;
    mount_tokens(&server, &[3599], Duration::ZERO).await;
    Mock::given(method("POST"))
        .and(path(send_path(PROJECT)))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let rules = IntegrationRules {
        base_urls: [("fcm".to_owned(), server.uri())].into(),
        allow_private_hosts: true,
        ..Default::default()
    };
    let settings =
        json!({"service_account": service_account(&keys()[0], PROJECT, "https://oauth2.googleapis.com/token")});
    let integration = Integration { tenant_id: Uuid::now_v7(), settings: &settings, rules: &rules };
    let settings = fcm::UNIT.settings(Source::Integration(&integration)).expect("valid settings");
    let http = SharedClient::for_tenants(Duration::from_secs(5), &rules);
    let checked = settings.check(&Context { http: &http, provider_timeout: Duration::from_secs(5) }).await;
    assert!(checked.ok, "{checked:?}");
    assert!(checked.detail.contains(&email(PROJECT)) && checked.detail.contains(PROJECT), "{checked:?}");
    assert_eq!(requests(&server, "/token").await.len(), 1);

    let refusing = fresh_server().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(
                json!({"error": "invalid_client", "error_description": "The OAuth client was not found."}),
            ),
        )
        .mount(&refusing)
        .await;
    let rules = IntegrationRules {
        base_urls: [("fcm".to_owned(), refusing.uri())].into(),
        allow_private_hosts: true,
        ..Default::default()
    };
    let integration = Integration {
        tenant_id: Uuid::now_v7(),
        settings: &json!({"service_account": service_account(&keys()[0], PROJECT, "x")}),
        rules: &rules,
    };
    let settings = fcm::UNIT.settings(Source::Integration(&integration)).expect("valid settings");
    let checked = settings.check(&Context { http: &http, provider_timeout: Duration::from_secs(5) }).await;
    assert_eq!((checked.ok, checked.status, checked.code.as_deref()), (false, Some(401), Some("invalid_client")));
    assert!(checked.detail.contains("The OAuth client was not found."), "{checked:?}");
    assert!(!format!("{checked:?}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn a_job_without_an_fcm_device_is_not_served() {
    let server = fresh_server().await;
    let provider = fcm_provider(&server).await;
    let mut none = push_job(DEVICE_TOKEN, None);
    none.device = None;
    assert!(!provider.serves(&none));
    failed(provider.send(&none).await, FailureKind::Permanent, "no_device");
    let mut apns = push_job("ab".repeat(32).as_str(), None);
    apns.device.as_mut().unwrap().platform = Platform::Apns;
    assert!(!provider.serves(&apns));
    assert!(!provider.serves(&push_job(DEVICE_TOKEN, Some(OTHER_PROJECT))));
    assert!(provider.serves(&push_job(DEVICE_TOKEN, Some(PROJECT))));
    assert!(requests(&server, "/token").await.is_empty(), "nothing was asked for");
}

#[test]
fn settings_name_what_is_wrong_and_a_tenant_sets_no_address() {
    let unit: &dyn ProviderUnit = &fcm::UNIT;
    assert_eq!(unit.secrets(), ["service_account"]);
    assert_eq!(unit.channel(), Channel::Push);
    assert!(providers::find(Channel::Push, "fcm").is_some());
    let rules = IntegrationRules::default();
    let integration = |settings: &Value| {
        let integration = Integration { tenant_id: Uuid::now_v7(), settings, rules: &rules };
        unit.settings(Source::Integration(&integration)).map(drop)
    };
    let good = service_account(&keys()[0], PROJECT, "https://oauth2.googleapis.com/token");
    assert!(integration(&json!({"service_account": good, "ttl": "4w"})).is_ok());
    // The JSON written out as an object is taken too.
    let object: Value = serde_json::from_str(&good).unwrap();
    assert!(integration(&json!({"service_account": object})).is_ok());
    let key_of = |settings: Value| match integration(&settings).unwrap_err() {
        bootstrap::ConfigError::Invalid { key, message } => {
            assert!(!message.contains("PRIVATE KEY") && !message.contains(&keys()[0].pem[40..80]), "{message}");
            (key, message)
        }
        other => panic!("{other}"),
    };
    for (settings, key) in [
        (json!({"service_account": good, "base_url": "http://127.0.0.1:1"}), "settings.base_url"),
        (json!({"service_account": good, "token_uri": "http://127.0.0.1:1/token"}), "settings.token_uri"),
        (json!({"service_account": good, "ttl": "29d"}), "settings.ttl"),
        (json!({}), "settings.service_account"),
        (json!({"service_account": "{not json"}), "settings.service_account"),
        (json!({"service_account": 42}), "settings.service_account"),
        (json!({"service_account": "{\"type\": \"authorized_user\"}"}), "settings.service_account"),
    ] {
        assert_eq!(key_of(settings.clone()).0, key, "{settings}");
    }
    let mut parsed: Value = serde_json::from_str(&good).unwrap();
    for (field, value) in [("project_id", json!(null)), ("client_email", json!("")), ("project_id", json!("a/../b"))] {
        let mut bad = parsed.clone();
        bad[field] = value;
        let (key, message) = key_of(json!({"service_account": bad.to_string()}));
        assert_eq!(key, "settings.service_account");
        assert!(message.contains("project_id") || message.contains("client_email"), "{message}");
    }
    parsed["private_key"] = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n".into();
    let (_, message) = key_of(json!({"service_account": parsed.to_string()}));
    assert!(message.contains("private_key"), "{message}");

    // The operator's section: its own addresses, named as config keys.
    let figment = |toml: &str| {
        figment::Figment::from(figment::providers::Serialized::defaults(serde_json::from_str::<Value>(toml).unwrap()))
    };
    let config = figment(&json!({"push": {"fcm": {"service_account": good, "base_url": "ftp://x"}}}).to_string());
    let err = unit.settings(Source::Config(&config)).unwrap_err().to_string();
    assert!(err.contains("push.fcm.base_url"), "{err}");
    let missing = figment(&json!({"push": {"fcm": {"ttl": "1d"}}}).to_string());
    let err = unit.settings(Source::Config(&missing)).unwrap_err().to_string();
    assert!(err.contains("push.fcm.service_account") && err.contains("NOTIFY_PUSH__FCM__SERVICE_ACCOUNT"), "{err}");
}

#[tokio::test]
async fn a_sender_id_mismatch_removes_only_a_device_that_named_this_project() {
    let server = fresh_server().await;
    mount_tokens(&server, &[3599], Duration::ZERO).await;
    let refusal = fcm_error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), "SenderId mismatch");
    Mock::given(method("POST"))
        .and(path(send_path(PROJECT)))
        .respond_with(ResponseTemplate::new(403).set_body_json(refusal))
        .mount(&server)
        .await;
    let provider = fcm_provider(&server).await;
    let named = failed(
        provider.send(&push_job(DEVICE_TOKEN, Some(PROJECT))).await,
        FailureKind::Permanent,
        "SENDER_ID_MISMATCH",
    );
    assert!(named.address_gone, "{named:?}");
    let unnamed =
        failed(provider.send(&push_job(DEVICE_TOKEN, None)).await, FailureKind::Permanent, "SENDER_ID_MISMATCH");
    assert!(!unnamed.address_gone, "{unnamed:?}");
}

#[tokio::test]
async fn providers_rebuilt_from_the_same_settings_share_one_token() {
    let server = fresh_server().await;
    mount_tokens(&server, &[3599], Duration::ZERO).await;
    mount_send(&server, PROJECT, &["tok-1"]).await;
    // A worker rebuilds a tenant's providers every few minutes: each rebuild reads the
    // settings anew and builds a new provider, which finds the account's token.
    for _ in 0..3 {
        let provider = fcm_provider(&server).await;
        sent(provider.send(&push_job(DEVICE_TOKEN, None)).await);
    }
    // Two at once, concurrent sends: still the one grant.
    let (a, b) = (fcm_provider(&server).await, fcm_provider(&server).await);
    let (job_a, job_b) = (push_job(DEVICE_TOKEN, None), push_job(DEVICE_TOKEN, None));
    let (x, y) = tokio::join!(a.send(&job_a), b.send(&job_b));
    sent(x);
    sent(y);
    assert_eq!(requests(&server, "/token").await.len(), 1);
    assert_eq!(requests(&server, &send_path(PROJECT)).await.len(), 5);
}
