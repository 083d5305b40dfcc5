//! Push end to end, as a tenant's user sees it: devices registered through the API, a
//! notification on `push` accepted, a push worker sending to wiremock stand-ins of FCM
//! (a tenant's own integration: its OAuth2 token endpoint and `messages:send`) and of a
//! browser's push service (the operator's Web Push). A device FCM reports gone is
//! removed, each tenant's service account is used for its own messages only, a refused
//! credential pauses the integration instead of failing the delivery, and the browser
//! decrypts what it gets.

use std::{collections::HashMap, sync::OnceLock, time::Duration};

use aws_lc_rs::{
    encoding::{AsBigEndian, AsDer, EcPrivateKeyBin, Pkcs8V1Der},
    rsa::{KeyPair as RsaKeyPair, KeySize},
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use domain::{Channel, RetryPolicy};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{bearer_token, body_string_contains, method, path},
};

use crate::harness::{TestApp, WorkerOptions, eventually};

const PHONE_TOKEN: &str = "fcm-phone:APA91bGoodToken_0123456789";
const TABLET_TOKEN: &str = "fcm-tablet:APA91bDeadToken_0123456789";

/// Any call with `bearer` (an API key or a subscriber's token): status and JSON body.
async fn call_as(app: &TestApp, bearer: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.http.request(method, app.url(path)).bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put_as(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    let (status, answer) = call_as(app, key, "PUT", path, Some(&body)).await;
    assert!(matches!(status, 200 | 201), "PUT {path}: {status} {answer}");
    answer
}

/// A push of `title` to subscriber `u-1`, accepted with `key`.
async fn push_as(app: &TestApp, key: &str, title: &str) -> Uuid {
    let body = json!({"type": "order.shipped", "to": [{"subscriber_id": "u-1"}], "channels": ["push"],
                      "content": {"title": title, "body": "It arrives Tuesday"}});
    let (status, answer) = call_as(app, key, "POST", "/v1/notifications", Some(&body)).await;
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().parse().unwrap()
}

/// The notification, read with `key`, once `done` holds of it.
async fn wait_as(app: &TestApp, key: &str, id: Uuid, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        let (status, n) = call_as(app, key, "GET", &format!("/v1/notifications/{id}"), None).await;
        (status == 200 && done(&n)).then_some(n)
    })
    .await
}

/// The notification's delivery to `device`.
fn delivery<'a>(n: &'a Value, device: &str) -> &'a Value {
    n["deliveries"].as_array().unwrap().iter().find(|d| d["recipient"] == device).unwrap_or_else(|| panic!("{n:#}"))
}

// ---- FCM ------------------------------------------------------------------------------

/// A service account's RSA key, as the PEM its JSON holds; generated per test binary.
fn rsa_pem(n: usize) -> &'static str {
    fn generate() -> String {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("an RSA key");
        let der = AsDer::<Pkcs8V1Der>::as_der(&pair).expect("PKCS#8");
        let b64 = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
    }
    static KEYS: OnceLock<[String; 2]> = OnceLock::new();
    &KEYS.get_or_init(|| [generate(), generate()])[n]
}

fn client_email(project: &str) -> String {
    format!("notify@{project}.iam.gserviceaccount.com")
}

/// The tenant's `PUT /v1/integrations/push/fcm` body: the service account's JSON key file
/// of `project`, signed with key `n`.
fn fcm_integration(project: &str, n: usize) -> Value {
    let account = json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": format!("kid-{project}"),
        "private_key": rsa_pem(n),
        "client_email": client_email(project),
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    json!({"settings": {"service_account": account.to_string()}, "active": true})
}

/// The access token the stand-in grants to `project`'s service account.
fn access_token(project: &str) -> String {
    format!("ya29.token-of-{project}")
}

/// The claims of a JWT (not verified: which account asked is all the stand-in needs).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The assertion of a grant request.
fn assertion(request: &Request) -> Value {
    let form: HashMap<String, String> = form_urlencoded::parse(&request.body).into_owned().collect();
    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
    claims(&form["assertion"])
}

/// Google's token endpoint: grants each service account its own token, but refuses the
/// accounts of projects named `revoked-*` (a deleted key) with `invalid_grant`.
struct Grants;

impl Respond for Grants {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let iss = assertion(request)["iss"].as_str().unwrap().to_owned();
        let project = iss.strip_prefix("notify@").and_then(|s| s.strip_suffix(".iam.gserviceaccount.com")).unwrap();
        if project.starts_with("revoked") {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}));
        }
        ResponseTemplate::new(200)
            .set_body_json(json!({"access_token": access_token(project), "expires_in": 3599, "token_type": "Bearer"}))
    }
}

/// The FCM stand-in: Google's token endpoint at `/token` (where a tenant's client asks when
/// `integrations.base_urls.fcm` is set). A server of its own, not one of wiremock's pool: the
/// tests' accounts share keys, and FCM tokens are cached per process by account and token
/// URI, so a pooled server's URI would find the token an earlier test was granted.
async fn fcm_stand_in() -> MockServer {
    let server = MockServer::builder().start().await;
    Mock::given(method("POST")).and(path("/token")).respond_with(Grants).mount(&server).await;
    server
}

fn send_path(project: &str) -> String {
    format!("/v1/projects/{project}/messages:send")
}

/// `messages:send` of `project`, with its own access token, for the device `token`: `200`
/// with the message's name.
async fn fcm_accepts(server: &MockServer, project: &str, token: &str, message: &str) {
    Mock::given(method("POST"))
        .and(path(send_path(project)))
        .and(bearer_token(access_token(project)))
        .and(body_string_contains(token))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"name": format!("projects/{project}/messages/{message}")})),
        )
        .mount(server)
        .await;
}

/// `messages:send` answering `status` with Google's error of `status_name`, FCM's
/// `error_code` in its details when given, for every message of `project` to `token`.
async fn fcm_refuses(server: &MockServer, project: &str, token: Option<&str>, status: u16, error: Value) {
    let mut mock = Mock::given(method("POST")).and(path(send_path(project)));
    if let Some(token) = token {
        mock = mock.and(body_string_contains(token));
    }
    mock.respond_with(ResponseTemplate::new(status).set_body_json(json!({"error": error}))).mount(server).await;
}

fn unregistered() -> Value {
    json!({"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
           "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]})
}

/// A push worker sending through tenants' integrations only (no fallback to the
/// operator's), FCM's stand-in at `stand_in`.
fn fcm_worker(stand_in: &MockServer, retry: RetryPolicy) -> WorkerOptions {
    WorkerOptions {
        integration_base_urls: [("fcm".to_owned(), stand_in.uri())].into(),
        tenant_fallback: false,
        retry,
        ..Default::default()
    }
}

/// The API, a relay and a push worker with `options`.
async fn with_push_worker(options: WorkerOptions) -> (TestApp, Vec<crate::harness::Service>) {
    let app = TestApp::api_only().await;
    let relay = app.start_relay(100).await;
    let worker = app.start_worker(Channel::Push, options).await;
    (app, vec![relay, worker])
}

/// Subscriber `u-1` of the tenant of `key`, with FCM devices `(device_id, token)` of
/// `project`, registered through the API.
async fn subscriber_with_devices(app: &TestApp, key: &str, project: &str, devices: &[(&str, &str)]) {
    put_as(app, key, "/v1/subscribers/u-1", json!({})).await;
    for (device, token) in devices {
        let body = json!({"platform": "fcm", "token": token, "app": project});
        put_as(app, key, &format!("/v1/subscribers/u-1/devices/{device}"), body).await;
    }
}

async fn requests_to(server: &MockServer, path: &str) -> Vec<Request> {
    server.received_requests().await.unwrap().into_iter().filter(|r| r.url.path() == path).collect()
}

#[tokio::test]
async fn a_device_fcm_reports_unregistered_is_removed_and_the_next_push_skips_it() {
    let fcm = fcm_stand_in().await;
    fcm_accepts(&fcm, "shop-app", PHONE_TOKEN, "0:1700000000000001%31bd1c9").await;
    fcm_refuses(&fcm, "shop-app", Some(TABLET_TOKEN), 404, unregistered()).await;
    let (app, _services) = with_push_worker(fcm_worker(&fcm, Default::default())).await;
    let key = app.api_key.clone();
    put_as(&app, &key, "/v1/integrations/push/fcm", fcm_integration("shop-app", 0)).await;
    subscriber_with_devices(&app, &key, "shop-app", &[("phone", PHONE_TOKEN), ("tablet", TABLET_TOKEN)]).await;

    let first = push_as(&app, &key, "Your order shipped").await;
    let n = app.wait_for_status(first, "partial").await;
    let phone = delivery(&n, "phone");
    assert_eq!(phone["status"], "sent", "{n:#}");
    assert_eq!(phone["provider"], "fcm");
    assert_eq!(phone["provider_message_id"], "projects/shop-app/messages/0:1700000000000001%31bd1c9");
    assert_eq!(phone["attempts"][0]["integration"], true);
    let tablet = delivery(&n, "tablet");
    assert_eq!(tablet["status"], "failed", "{n:#}");
    assert_eq!(tablet["last_error_code"], "UNREGISTERED");
    assert_eq!(tablet["attempts"].as_array().unwrap().len(), 1, "a dead token is not retried: {n:#}");
    let message = tablet["last_error_message"].as_str().unwrap();
    assert!(!message.contains(TABLET_TOKEN), "the token is in a stored message: {message}");
    // What FCM got for the phone: the notification's title and body.
    let sent = requests_to(&fcm, &send_path("shop-app")).await;
    let to_phone: Value =
        sent.iter().map(|r| r.body_json::<Value>().unwrap()).find(|b| b["message"]["token"] == PHONE_TOKEN).unwrap();
    assert_eq!(
        to_phone["message"]["notification"],
        json!({"title": "Your order shipped", "body": "It arrives Tuesday"})
    );

    // The app sees the tablet gone; the audit log says why.
    let (status, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["phone"]);
    let removed: Vec<(Option<String>, Option<Uuid>, String, Value)> = sqlx::query_as(
        "SELECT subscriber_id, notification_id, actor, detail FROM audit_events
         WHERE tenant_id = $1 AND action = 'device_removed'",
    )
    .bind(app.tenant_id)
    .fetch_all(app.env.store.pool())
    .await
    .unwrap();
    assert_eq!(
        removed,
        [(
            Some("u-1".to_owned()),
            Some(first),
            "worker".to_owned(),
            json!({"device_id": "tablet", "platform": "fcm", "reason": "gone", "code": "UNREGISTERED"})
        )]
    );
    assert!(!removed[0].3.to_string().contains(TABLET_TOKEN));

    // The next push goes to the phone alone.
    let second = push_as(&app, &key, "Your order arrived").await;
    let n = app.wait_for_status(second, "sent").await;
    let recipients: Vec<&str> =
        n["deliveries"].as_array().unwrap().iter().map(|d| d["recipient"].as_str().unwrap()).collect();
    assert_eq!(recipients, ["phone"], "{n:#}");
    let to_tablet = requests_to(&fcm, &send_path("shop-app"))
        .await
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(TABLET_TOKEN))
        .count();
    assert_eq!(to_tablet, 1);
}

#[tokio::test]
async fn each_tenant_sends_with_its_own_service_account_and_project() {
    const OTHER_PHONE: &str = "fcm-phone:APA91bOtherTenant_0123456789";
    let fcm = fcm_stand_in().await;
    fcm_accepts(&fcm, "project-a", PHONE_TOKEN, "a-1").await;
    fcm_accepts(&fcm, "project-b", OTHER_PHONE, "b-1").await;
    let (app, _services) = with_push_worker(fcm_worker(&fcm, Default::default())).await;
    let other = app.env.store.create_tenant("b").await.unwrap();
    for (key, project, n, token) in
        [(&app.api_key, "project-a", 0, PHONE_TOKEN), (&other.api_key, "project-b", 1, OTHER_PHONE)]
    {
        put_as(&app, key, "/v1/integrations/push/fcm", fcm_integration(project, n)).await;
        subscriber_with_devices(&app, key, project, &[("phone", token)]).await;
    }

    let mine = push_as(&app, &app.api_key, "For tenant A").await;
    let theirs = push_as(&app, &other.api_key, "For tenant B").await;
    for (key, id, name) in [
        (&app.api_key, mine, "projects/project-a/messages/a-1"),
        (&other.api_key, theirs, "projects/project-b/messages/b-1"),
    ] {
        let n = wait_as(&app, key, id, "the push sent", |n| n["status"] == "sent").await;
        assert_eq!(delivery(&n, "phone")["provider_message_id"], name, "{n:#}");
    }

    // Each account asked for its own token, once; each message went to its own project
    // with its own token, for its own device and title.
    let grants: Vec<String> = requests_to(&fcm, "/token")
        .await
        .iter()
        .map(|r| assertion(r)["iss"].as_str().unwrap().to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(grants, [client_email("project-a"), client_email("project-b")]);
    let sends: Vec<Request> =
        fcm.received_requests().await.unwrap().into_iter().filter(|r| r.url.path() != "/token").collect();
    assert_eq!(sends.len(), 2, "{sends:?}");
    for (project, token, title) in
        [("project-a", PHONE_TOKEN, "For tenant A"), ("project-b", OTHER_PHONE, "For tenant B")]
    {
        let request = sends.iter().find(|r| r.url.path() == send_path(project)).unwrap();
        let authorization = request.headers.get("authorization").unwrap().to_str().unwrap();
        assert_eq!(authorization, format!("Bearer {}", access_token(project)));
        let body: Value = request.body_json().unwrap();
        assert_eq!(
            (body["message"]["token"].as_str(), body["message"]["notification"]["title"].as_str()),
            (Some(token), Some(title))
        );
    }
}

#[tokio::test]
async fn a_refused_fcm_credential_pauses_the_integration_and_the_push_waits() {
    let fcm = fcm_stand_in().await;
    // Tenant A's token is refused by FCM itself (its account lost the permission); tenant
    // B's key is refused by Google's token endpoint.
    let unauthenticated = json!({"code": 401, "message": "Request had invalid authentication credentials.",
                                 "status": "UNAUTHENTICATED"});
    fcm_refuses(&fcm, "project-a", None, 401, unauthenticated).await;
    // A retry far away: the delivery stays `retrying` while the test looks.
    let hold = RetryPolicy {
        max_attempts: 5,
        initial_delay: Duration::from_secs(3600),
        multiplier: 1.0,
        max_delay: Duration::from_secs(3600),
        jitter: 0.0,
    };
    let (app, _services) = with_push_worker(fcm_worker(&fcm, hold)).await;
    let other = app.env.store.create_tenant("b").await.unwrap();
    for (key, project, n, token) in
        [(&app.api_key, "project-a", 0, PHONE_TOKEN), (&other.api_key, "revoked-b", 1, TABLET_TOKEN)]
    {
        put_as(&app, key, "/v1/integrations/push/fcm", fcm_integration(project, n)).await;
        subscriber_with_devices(&app, key, project, &[("phone", token)]).await;
    }

    let mine = push_as(&app, &app.api_key, "Hello").await;
    let theirs = push_as(&app, &other.api_key, "Hello").await;
    for (key, id, code) in [(&app.api_key, mine, "UNAUTHENTICATED"), (&other.api_key, theirs, "invalid_grant")] {
        let n = wait_as(&app, key, id, "an attempt recorded", |n| {
            n["deliveries"][0]["attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        let d = delivery(&n, "phone");
        assert_eq!(d["status"], "retrying", "{n:#}");
        assert_eq!(d["last_error_code"], code, "{n:#}");
        assert_eq!(d["attempts"][0]["outcome"], "config", "{n:#}");
        assert_eq!(d["attempts"][0]["integration"], true, "{n:#}");
        assert_eq!(n["status"], "processing", "{n:#}");
    }
    // FCM's 401 made the provider drop its token and try once more with a fresh one.
    assert_eq!(requests_to(&fcm, &send_path("project-a")).await.len(), 2);
    assert!(requests_to(&fcm, &send_path("revoked-b")).await.is_empty());

    // Paused: tenant A's next push reaches neither the token endpoint nor FCM, and waits.
    let before = fcm.received_requests().await.unwrap().len();
    let next = push_as(&app, &app.api_key, "Again").await;
    let n = wait_as(&app, &app.api_key, next, "an attempt recorded", |n| {
        n["deliveries"][0]["attempts"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let d = delivery(&n, "phone");
    assert_eq!(
        (d["status"].as_str(), d["last_error_code"].as_str()),
        (Some("retrying"), Some("integrations_unavailable")),
        "{n:#}"
    );
    assert_eq!(fcm.received_requests().await.unwrap().len(), before);
    // The device is kept: a credential problem says nothing of the device.
    let (_, list) = app.call("GET", "/v1/subscribers/u-1/devices", None).await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1, "{list}");
}

// ---- Web Push -------------------------------------------------------------------------

#[tokio::test]
async fn a_browser_registered_with_its_subscriber_token_decrypts_the_web_push() {
    const ENDPOINT_PATH: &str = "/wpush/v2/gAAAAABsubscription-secret-0123456789";
    let push_service = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ENDPOINT_PATH))
        .respond_with(ResponseTemplate::new(201).insert_header("location", "/m/msg-7"))
        .expect(1)
        .mount(&push_service)
        .await;
    // The operator's VAPID key, as web-push tools print it.
    let vapid = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let scalar = AsBigEndian::<EcPrivateKeyBin<'_>>::as_be_bytes(&vapid.private_key()).unwrap();
    let options = WorkerOptions {
        providers: vec!["webpush".into()],
        settings: json!({"webpush": {"vapid_private_key": URL_SAFE_NO_PAD.encode(scalar.as_ref()),
                                      "subject": "mailto:ops@notify.example"}}),
        ..Default::default()
    };
    let (app, _services) = with_push_worker(options).await;
    put_as(&app, &app.api_key, "/v1/subscribers/u-1", json!({})).await;

    // The browser subscribes (its key pair and auth secret made by `ece`, as a browser's
    // would be) and the page registers the subscription with the subscriber's own token.
    let (keys, auth) = ece::generate_keypair_and_auth_secret().unwrap();
    let subscription = json!({
        "endpoint": format!("{}{ENDPOINT_PATH}", push_service.uri()),
        "expirationTime": null,
        "keys": {"p256dh": URL_SAFE_NO_PAD.encode(keys.pub_as_raw().unwrap()), "auth": URL_SAFE_NO_PAD.encode(auth)},
    });
    let (status, body) = app.call("POST", "/v1/subscribers/u-1/token", None).await;
    assert_eq!(status, 200, "{body}");
    let subscriber_token = body["token"].as_str().unwrap().to_owned();
    let (status, device) = call_as(
        &app,
        &subscriber_token,
        "PUT",
        "/v1/subscribers/u-1/devices/browser",
        Some(&json!({"platform": "webpush", "token": subscription})),
    )
    .await;
    assert_eq!(status, 201, "{device}");

    let id = push_as(&app, &app.api_key, "Your order shipped").await;
    let n = app.wait_for_status(id, "sent").await;
    let d = delivery(&n, "browser");
    assert_eq!((d["provider"].as_str(), d["provider_message_id"].as_str()), (Some("webpush"), Some("msg-7")), "{n:#}");

    let requests = push_service.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.headers.get("content-encoding").unwrap(), "aes128gcm");
    assert!(request.headers.get("authorization").unwrap().to_str().unwrap().starts_with("vapid t="));
    let plaintext =
        ece::decrypt(&keys.raw_components().unwrap(), &auth, &request.body).expect("the browser decrypts it");
    let shown: Value = serde_json::from_slice(&plaintext).unwrap();
    assert_eq!(
        (shown["title"].as_str(), shown["body"].as_str()),
        (Some("Your order shipped"), Some("It arrives Tuesday")),
        "{shown}"
    );
    assert_eq!(shown["notification_id"], id.to_string());
    assert_eq!(shown["delivery_id"], d["id"]);
}
