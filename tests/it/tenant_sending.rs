//! Workers sending with tenants' own integrations: each tenant through its own credentials
//! and templates, failover between a tenant's integrations, the operator's providers only
//! where `<channel>.tenant_fallback` allows, a changed integration used without a restart,
//! and the seed's flow (a support audience by email and Slack) through the tenant's own.
//! Twilio, Meta and Slack are wiremock stand-ins, email an SMTP sink.

use std::time::{Duration, Instant};

use domain::{Channel, RetryPolicy};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{basic_auth, bearer_token, body_string_contains, method, path},
};

use crate::{
    harness::{NOTIFIED, TestApp, WorkerOptions, eventually},
    integrations::Logs,
    stubs::SmtpSink,
};

const PHONE: &str = "+15551234567";
const SID_A: &str = "AC0000000000000000000000000000000a";
const SID_B: &str = "AC0000000000000000000000000000000b";
const TOKEN_A: &str = "tenant-a-token-0123456789-aaaa";
const TOKEN_B: &str = "tenant-b-token-0123456789-bbbb";
const META_TOKEN: &str = "tenant-a-meta-token-0123456789";
const PHONE_NUMBER_ID: &str = "106540352242922";

fn messages(sid: &str) -> String {
    format!("/2010-04-01/Accounts/{sid}/Messages.json")
}

fn created(sid: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({"sid": sid, "status": "queued", "num_segments": "1"}))
}

fn twilio(sid: &str, token: &str, templates: Value) -> Value {
    json!({"settings": {"account_sid": sid, "auth_token": token, "from": "+14155238886",
                        "content_sid_by_type": templates}, "active": true, "order": 0})
}

/// Any call with `key`: status and JSON body.
async fn call_as(app: &TestApp, key: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.http.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put_as(app: &TestApp, key: &str, path: &str, body: Value) {
    let (status, answer) = call_as(app, key, "PUT", path, Some(&body)).await;
    assert!(matches!(status, 200 | 201), "PUT {path}: {status} {answer}");
}

async fn accept_as(app: &TestApp, key: &str, body: &Value) -> Uuid {
    let (status, answer) = call_as(app, key, "POST", "/v1/notifications", Some(body)).await;
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().parse().unwrap()
}

/// The notification once `done` says so of it, read with `key`.
async fn wait_as(app: &TestApp, key: &str, id: Uuid, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        let (status, n) = call_as(app, key, "GET", &format!("/v1/notifications/{id}"), None).await;
        (status == 200 && done(&n)).then_some(n)
    })
    .await
}

async fn sent_as(app: &TestApp, key: &str, id: Uuid) -> Value {
    wait_as(app, key, id, "the notification sent", |n| n["status"] == "sent").await
}

/// A worker of `channel` whose operator's provider is the sandbox and whose tenants'
/// integrations call `stand_in`.
fn options(stand_in: &MockServer, fallback: bool, retry: RetryPolicy) -> WorkerOptions {
    let uri = stand_in.uri();
    WorkerOptions {
        providers: vec!["sandbox".into()],
        integration_base_urls: ["twilio", "meta", "slack"].iter().map(|p| ((*p).to_owned(), uri.clone())).collect(),
        tenant_fallback: fallback,
        retry,
        ..Default::default()
    }
}

/// Every attempt's stored error message, of every delivery.
async fn stored_messages(app: &TestApp) -> String {
    let rows: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT error_message FROM delivery_attempts UNION ALL SELECT last_error_message FROM deliveries",
    )
    .fetch_all(app.env.store.pool())
    .await
    .unwrap();
    rows.into_iter().filter_map(|r| r.0).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn two_tenants_with_the_same_type_send_through_their_own_accounts_and_templates() {
    let (logs, _capturing) = Logs::capture();
    let twilio_api = MockServer::start().await;
    for (sid, token, template, message) in [(SID_A, TOKEN_A, "HXaaaa", "SMaaaa"), (SID_B, TOKEN_B, "HXbbbb", "SMbbbb")]
    {
        Mock::given(method("POST"))
            .and(path(messages(sid).as_str()))
            .and(basic_auth(sid, token))
            .and(body_string_contains(format!("ContentSid={template}").as_str()))
            .respond_with(created(message))
            .expect(1)
            .mount(&twilio_api)
            .await;
    }
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Whatsapp, options(&twilio_api, true, Default::default())).await;
    let other = app.env.store.create_tenant("b").await.unwrap();
    let path = "/v1/integrations/whatsapp/twilio";
    put_as(&app, &app.api_key, path, twilio(SID_A, TOKEN_A, json!({"order.shipped": "HXaaaa"}))).await;
    put_as(&app, &other.api_key, path, twilio(SID_B, TOKEN_B, json!({"order.shipped": "HXbbbb"}))).await;

    let body = json!({"type": "order.shipped", "to": [{"whatsapp": PHONE}], "data": {"order": "A-1"},
                      "content": {"text": "Your order shipped"}});
    let mine = accept_as(&app, &app.api_key, &body).await;
    let theirs = accept_as(&app, &other.api_key, &body).await;
    for (key, id, message) in [(&app.api_key, mine, "SMaaaa"), (&other.api_key, theirs, "SMbbbb")] {
        let n = sent_as(&app, key, id).await;
        let d = &n["deliveries"][0];
        assert_eq!((d["provider"].as_str(), d["provider_message_id"].as_str()), (Some("twilio"), Some(message)));
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["integration"], true, "{d}");
    }
    // Each account saw its own message only, with its own template and variables.
    let requests = twilio_api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("ContentVariables=%7B%22order%22%3A%22A-1%22%7D"), "{body}");
    }
    assert!(app.sandbox_messages(Channel::Whatsapp).is_empty(), "the operator's provider sent nothing");
    let logs = logs.text();
    assert!(logs.contains("sent"), "the worker's logs were captured");
    assert!(!logs.contains(TOKEN_A) && !logs.contains(TOKEN_B), "a token is in the logs");
}

#[tokio::test]
async fn a_tenants_integrations_fail_over_in_order_and_a_refused_one_is_paused() {
    let (logs, _capturing) = Logs::capture();
    let stand_in = MockServer::start().await;
    // The tenant's Twilio refuses its credentials (a configuration error); its Meta sends.
    Mock::given(method("POST"))
        .and(path(messages(SID_A).as_str()))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": 20003, "message": format!("Authenticate {TOKEN_A}"), "status": 401})),
        )
        .mount(&stand_in)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v21.0/{PHONE_NUMBER_ID}/messages").as_str()))
        .and(bearer_token(META_TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp", "contacts": [{"input": "15551234567", "wa_id": "15551234567"}],
            "messages": [{"id": "wamid.TENANT"}],
        })))
        .mount(&stand_in)
        .await;
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Whatsapp, options(&stand_in, false, Default::default())).await;
    put_as(&app, &app.api_key, "/v1/integrations/whatsapp/twilio", twilio(SID_A, TOKEN_A, json!({}))).await;
    let meta = json!({"settings": {"access_token": META_TOKEN, "phone_number_id": PHONE_NUMBER_ID}, "order": 1});
    put_as(&app, &app.api_key, "/v1/integrations/whatsapp/meta", meta).await;

    let body = json!({"type": "chat", "to": [{"whatsapp": PHONE}], "content": {"text": "hello"}});
    for _ in 0..2 {
        let id = app.accept(&body).await;
        let n = app.wait_for_status(id, "sent").await;
        let d = &n["deliveries"][0];
        assert_eq!((d["provider"].as_str(), d["provider_message_id"].as_str()), (Some("meta"), Some("wamid.TENANT")));
        assert_eq!(d["attempts"][0]["integration"], true);
    }
    let to_twilio =
        stand_in.received_requests().await.unwrap().iter().filter(|r| r.url.path().contains("Accounts")).count();
    assert_eq!(to_twilio, 1, "the refused integration is paused for the cool-down: the second went to Meta at once");
    assert!(app.sandbox_messages(Channel::Whatsapp).is_empty());
    let stored = stored_messages(&app).await;
    assert!(!stored.contains(TOKEN_A) && !stored.contains(META_TOKEN), "{stored}");
    let logs = logs.text();
    assert!(!logs.contains(TOKEN_A) && !logs.contains(META_TOKEN), "a token is in the logs");
}

/// A retry every 100 ms for a few seconds.
fn patient() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 25,
        initial_delay: Duration::from_millis(100),
        multiplier: 1.0,
        max_delay: Duration::from_millis(100),
        jitter: 0.0,
    }
}

#[tokio::test]
async fn without_fallback_a_tenant_sends_only_through_its_own_integration_once_it_has_one() {
    let (logs, _capturing) = Logs::capture();
    let twilio_api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages(SID_A).as_str()))
        .and(basic_auth(SID_A, TOKEN_A))
        .respond_with(created("SMlater"))
        .expect(1)
        .mount(&twilio_api)
        .await;
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Sms, options(&twilio_api, false, patient())).await;

    let id = app.accept(&json!({"type": "otp", "to": [{"phone": PHONE}], "content": {"text": "code 1234"}})).await;
    let n = wait_as(&app, &app.api_key, id, "a no_integration attempt", |n| {
        n["deliveries"][0]["last_error_code"] == "no_integration"
    })
    .await;
    let d = &n["deliveries"][0];
    assert_eq!(d["status"], "retrying", "{d}");
    assert!(d["last_error_message"].as_str().unwrap().contains("no active integration"), "{d}");
    assert_eq!(d["attempts"][0]["outcome"], "config");

    // An integration that no longer opens (its key is gone) is skipped, named, never a crash.
    let lost = bootstrap::seal::SecretsConfig {
        current: Some("gone".into()),
        keys: [("gone".to_owned(), bootstrap::SecretString::from("Z29uZS1nb25lLWdvbmUtZ29uZS1nb25lLWdvbmUtISE="))]
            .into(),
    }
    .keyring()
    .unwrap()
    .unwrap();
    let plain = json!({"auth_token": TOKEN_A});
    let (secrets, hints) =
        store::integrations::seal_secrets(&lost, app.tenant_id, Channel::Sms, "twilio", plain.as_object().unwrap());
    let settings = json!({"account_sid": SID_A, "from": "+14155238886"}).as_object().unwrap().clone();
    let write =
        store::IntegrationWrite { settings: &settings, secrets: &secrets, hints: &hints, active: true, position: 0 };
    app.env.store.put_integration(app.tenant_id, Channel::Sms, "twilio", &write, None).await.unwrap().unwrap();
    let n = wait_as(&app, &app.api_key, id, "an integration_unusable attempt", |n| {
        n["deliveries"][0]["last_error_code"] == "integration_unusable"
    })
    .await;
    let message = n["deliveries"][0]["last_error_message"].as_str().unwrap().to_owned();
    assert!(message.contains("`twilio`") && message.contains("gone"), "{message}");

    // Connected properly: the next retry goes through it, with no restart.
    put_as(&app, &app.api_key, "/v1/integrations/sms/twilio", twilio(SID_A, TOKEN_A, json!({}))).await;
    let n = app.wait_for_status(id, "sent").await;
    let d = &n["deliveries"][0];
    assert_eq!((d["provider"].as_str(), d["provider_message_id"].as_str()), (Some("twilio"), Some("SMlater")));
    assert_eq!(d["attempts"].as_array().unwrap().last().unwrap()["integration"], true);
    assert!(app.sandbox_messages(Channel::Sms).is_empty(), "the operator's provider never sent it");
    let stored = stored_messages(&app).await;
    assert!(!stored.contains(TOKEN_A), "{stored}");
    assert!(!logs.text().contains(TOKEN_A), "the token is in the logs");
}

#[tokio::test]
async fn with_fallback_a_tenant_without_an_integration_uses_the_operators_provider() {
    let stand_in = MockServer::start().await;
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Sms, options(&stand_in, true, Default::default())).await;
    let id = app.accept(&json!({"type": "otp", "to": [{"phone": PHONE}], "content": {"text": "code 1234"}})).await;
    let n = app.wait_for_status(id, "sent").await;
    let d = &n["deliveries"][0];
    assert_eq!((d["provider"].as_str(), d["attempts"][0]["integration"].as_bool()), (Some("sandbox"), Some(false)));
    assert_eq!(app.sandbox_messages(Channel::Sms).len(), 1);
}

#[tokio::test]
async fn a_changed_integration_is_used_by_the_next_send_without_a_restart() {
    const NEW_TOKEN: &str = "tenant-a-new-token-0123456789";
    let twilio_api = MockServer::start().await;
    for (token, message) in [(TOKEN_A, "SMold"), (NEW_TOKEN, "SMnew")] {
        Mock::given(method("POST"))
            .and(path(messages(SID_A).as_str()))
            .and(basic_auth(SID_A, token))
            .respond_with(created(message))
            .mount(&twilio_api)
            .await;
    }
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Sms, options(&twilio_api, false, Default::default())).await;
    let path = "/v1/integrations/sms/twilio";
    put_as(&app, &app.api_key, path, twilio(SID_A, TOKEN_A, json!({}))).await;
    let body = json!({"type": "otp", "to": [{"phone": PHONE}], "content": {"text": "code 1234"}});
    let sent_with = |n: &Value| n["deliveries"][0]["provider_message_id"].as_str().unwrap().to_owned();
    let id = app.accept(&body).await;
    assert_eq!(sent_with(&app.wait_for_status(id, "sent").await), "SMold");

    put_as(&app, &app.api_key, path, twilio(SID_A, NEW_TOKEN, json!({}))).await;
    // The change reaches the worker through notify_cache, in milliseconds.
    let started = Instant::now();
    loop {
        let id = app.accept(&body).await;
        if sent_with(&app.wait_for_status(id, "sent").await) == "SMnew" {
            break;
        }
        assert!(started.elapsed() < NOTIFIED, "the worker kept the old token");
    }
}

#[tokio::test]
async fn a_support_audience_is_reached_by_email_and_slack_through_the_tenants_own_integrations() {
    let sink = SmtpSink::start().await;
    let slack = MockServer::start().await;
    const BOT_TOKEN: &str = "xoxb-tenant-0123456789-abcdef";
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(bearer_token(BOT_TOKEN))
        .and(body_string_contains("U024BE7LH"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "channel": "D024BE7LH", "ts": "1700000000.000100"})),
        )
        .expect(1)
        .mount(&slack)
        .await;
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _email = app.start_worker(Channel::Email, options(&slack, false, Default::default())).await;
    let _chat = app.start_worker(Channel::Chat, options(&slack, false, Default::default())).await;

    let key = app.api_key.clone();
    put_as(&app, &key, "/v1/types/auth.token_expired", json!({"channels": ["email", "chat"]})).await;
    put_as(
        &app,
        &key,
        "/v1/subscribers/oncall",
        json!({"email": "oncall@example.com", "chat": {"slack": "U024BE7LH"}}),
    )
    .await;
    let (status, answer) =
        call_as(&app, &key, "PUT", "/v1/topics/support/subscribers", Some(&json!({"add": ["oncall"]}))).await;
    assert_eq!(status, 200, "{answer}");
    let smtp =
        json!({"settings": {"host": "127.0.0.1", "port": sink.port, "tls": "none", "from": "alerts@tenant.example"}});
    put_as(&app, &key, "/v1/integrations/email/smtp", smtp).await;
    put_as(&app, &key, "/v1/integrations/chat/slack", json!({"settings": {"bot_token": BOT_TOKEN}})).await;

    let id = app
        .accept(&json!({"type": "auth.token_expired", "audience": "support",
                        "content": {"subject": "API token expired", "text": "The token of service billing expired"}}))
        .await;
    let n = app.wait_for_status(id, "sent").await;
    let mut sent: Vec<(String, String, bool)> = n["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let integration = d["attempts"][0]["integration"].as_bool().unwrap();
            (d["channel"].as_str().unwrap().to_owned(), d["provider"].as_str().unwrap().to_owned(), integration)
        })
        .collect();
    sent.sort();
    assert_eq!(sent, [("chat".into(), "slack".into(), true), ("email".into(), "smtp".into(), true)]);
    let mail = eventually("the email in the sink", || async { sink.messages().pop() }).await;
    assert!(mail.contains("alerts@tenant.example") && mail.contains("API token expired"), "{mail}");
    assert!(app.sandbox_messages(Channel::Email).is_empty() && app.sandbox_messages(Channel::Chat).is_empty());
}
