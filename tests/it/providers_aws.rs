//! The email providers and SNS end to end through the platform (API, outbox, relay,
//! RabbitMQ, worker) against real stand-ins: moto for SES v2 and SNS, aiosmtpd for SMTP.

use std::time::Duration;

use domain::{Channel, Content, DeliveryJob, FailureKind, Priority, SendOutcome};
use providers::{Checked, Context, ProviderSettings, ProviderUnit, Source, http::SharedClient};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    harness::{TestApp, WorkerOptions, eventually},
    stubs::{Moto, SmtpSink},
};

/// `[email.ses]` calling moto.
fn ses_config(moto: &Moto) -> Value {
    json!({
        "region": "us-east-1", "endpoint_url": moto.url, "from": "Notify <noreply@example.com>",
        "access_key_id": "testing", "secret_access_key": "testing",
    })
}

/// `[sms.sns]` calling moto.
fn sns_config(moto: &Moto) -> Value {
    json!({
        "region": "us-east-1", "endpoint_url": moto.url, "sender_id": "Notify",
        "access_key_id": "testing", "secret_access_key": "testing",
    })
}

/// The settings `settings` of `unit`, read as the operator's section.
fn unit_settings(unit: &dyn ProviderUnit, settings: Value) -> Box<dyn ProviderSettings> {
    let section = json!({unit.channel().as_str(): {unit.name(): settings}});
    let figment = figment::Figment::from(figment::providers::Serialized::defaults(section));
    unit.settings(Source::Config(&figment)).expect("valid settings")
}

async fn check(settings: &dyn ProviderSettings) -> Checked {
    let http = SharedClient::new(Duration::from_secs(10));
    settings.check(&Context { http: &http, provider_timeout: Duration::from_secs(10) }).await
}

/// SES v2 `CreateEmailIdentity`; moto verifies the identity at once. moto checks no
/// signature, only the service named in the credential scope (docs/providers.md §10.1).
async fn create_email_identity(moto: &Moto, identity: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/v2/email/identities", moto.url))
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ses/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=abc",
        )
        .json(&json!({"EmailIdentity": identity}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "CreateEmailIdentity: {}", response.text().await.unwrap());
}

async fn start_email_worker(app: &TestApp, provider: &str, settings: Value) -> crate::harness::Service {
    let options =
        WorkerOptions { providers: vec![provider.into()], settings: json!({provider: settings}), ..Default::default() };
    app.start_worker(Channel::Email, options).await
}

fn welcome(to: &str) -> Value {
    json!({
        "type": "welcome",
        "to": [{"email": to}],
        "content": {"subject": "Welcome aboard", "text": "Hello in text", "html": "<p>Hello in HTML</p>"},
    })
}

#[tokio::test]
async fn ses_sends_the_email_and_its_message_id_is_recorded() {
    let moto = Moto::start().await;
    create_email_identity(&moto, "example.com").await;
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = start_email_worker(&app, "ses", ses_config(&moto)).await;

    let id = app.accept(&welcome("user@example.org")).await;
    let n = app.wait_for_status(id, "sent").await;

    let data = moto.data().await;
    let messages = data["ses"]["Message"].as_array().expect("moto's SES messages");
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = &messages[0];
    assert_eq!(m["source"], "Notify <noreply@example.com>");
    assert_eq!(m["destinations"]["ToAddresses"], json!(["user@example.org"]));
    assert_eq!(m["subject"], "Welcome aboard");
    // moto keeps one body of the two, the HTML one (docs/providers.md §10.1).
    assert_eq!(m["body"], "<p>Hello in HTML</p>");
    let d = &n["deliveries"][0];
    assert_eq!((&d["provider"], &d["provider_message_id"]), (&json!("ses"), &m["id"]));
}

#[tokio::test]
async fn ses_rejecting_an_unverified_sender_fails_the_delivery_at_once() {
    let moto = Moto::start().await;
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = start_email_worker(&app, "ses", ses_config(&moto)).await;

    let id = app.accept(&welcome("user@example.org")).await;
    let n = app.wait_for_status(id, "failed").await;

    let d = &n["deliveries"][0];
    assert_eq!(d["attempt_count"], 1);
    let attempt = &d["attempts"][0];
    assert_eq!((&attempt["outcome"], &attempt["error_code"]), (&json!("permanent"), &json!("MessageRejected")));
    let message = attempt["error_message"].as_str().unwrap();
    assert!(message.contains("not verified") && !message.contains("user@example.org"), "{message}");
    assert_eq!(moto.data().await["ses"]["Message"].as_array().map_or(0, Vec::len), 0);
}

/// A raw message's header block with folded lines joined, and its text.
fn unfolded(raw: &str) -> String {
    raw.replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", " ")
}

#[tokio::test]
async fn smtp_delivers_a_multipart_message_with_our_headers() {
    let sink = SmtpSink::start().await;
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let smtp = json!({
        "host": "127.0.0.1", "port": sink.port, "tls": "none", "from": "Notify <noreply@example.com>",
        "reply_to": "support@example.com", "list_unsubscribe": "https://example.com/unsubscribe/{delivery_id}",
    });
    let _worker = start_email_worker(&app, "smtp", smtp).await;

    let id = app.accept(&welcome("user@example.org")).await;
    let n = app.wait_for_status(id, "sent").await;

    let messages = eventually("the sink to store the message", || async {
        let messages = sink.messages();
        (!messages.is_empty()).then_some(messages)
    })
    .await;
    assert_eq!(messages.len(), 1);
    let raw = unfolded(&messages[0]);
    let d = &n["deliveries"][0];
    let delivery_id = d["id"].as_str().unwrap();
    let message_id = format!("<{delivery_id}@example.com>");
    for header in [
        "From: Notify <noreply@example.com>".to_owned(),
        "To: user@example.org".to_owned(),
        "Reply-To: support@example.com".to_owned(),
        "Subject: Welcome aboard".to_owned(),
        format!("Message-ID: {message_id}"),
        format!("List-Unsubscribe: <https://example.com/unsubscribe/{delivery_id}>"),
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click".to_owned(),
        "Content-Type: multipart/alternative;".to_owned(),
        "Content-Type: text/plain; charset=utf-8".to_owned(),
        "Content-Type: text/html; charset=utf-8".to_owned(),
    ] {
        assert!(raw.lines().any(|l| l.starts_with(&header)), "no `{header}` in:\n{raw}");
    }
    assert!(raw.contains("\nHello in text") && raw.contains("\n<p>Hello in HTML</p>"), "{raw}");
    assert_eq!((&d["provider"], d["provider_message_id"].as_str()), (&json!("smtp"), Some(message_id.as_str())));
}

#[tokio::test]
async fn sns_publishes_the_sms_and_its_message_id_is_recorded() {
    let moto = Moto::start().await;
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let options = WorkerOptions {
        providers: vec!["sns".into()],
        settings: json!({"sns": sns_config(&moto)}),
        ..Default::default()
    };
    let _worker = app.start_worker(Channel::Sms, options).await;

    let request = json!({
        "type": "otp", "priority": "urgent",
        "to": [{"phone": "+15555550100"}], "content": {"text": "Your code is 1234"},
    });
    let id = app.accept(&request).await;
    let n = app.wait_for_status(id, "sent").await;

    let data = moto.data().await;
    let sms = data["sns"]["SMS"].as_array().expect("moto's SMS");
    assert_eq!(sms.len(), 1, "{sms:#?}");
    assert_eq!((&sms[0]["phone_number"], &sms[0]["message"]), (&json!("+15555550100"), &json!("Your code is 1234")));
    let d = &n["deliveries"][0];
    assert_eq!((&d["provider"], &d["provider_message_id"]), (&json!("sns"), &sms[0]["message_id"]));
}

fn sms_job(recipient: &str, text: String) -> DeliveryJob {
    DeliveryJob {
        delivery_id: Uuid::now_v7(),
        notification_id: Uuid::now_v7(),
        tenant_id: Uuid::now_v7(),
        channel: Channel::Sms,
        attempt: 1,
        retry_base: 0,
        recipient: recipient.into(),
        kind: "otp".into(),
        priority: Priority::Normal,
        content: Content { text: Some(text), ..Default::default() },
        data: Default::default(),
        workflow: None,
        retry: None,
        device: None,
    }
}

/// Nothing moto refuses passes our API's checks (E.164, at most 1,600 characters, as
/// moto checks), so SNS's own refusals are tested on the provider directly.
#[tokio::test]
async fn sns_refusing_the_number_or_the_text_is_a_permanent_failure() {
    let moto = Moto::start().await;
    let http = SharedClient::new(Duration::from_secs(10));
    let ctx = Context { http: &http, provider_timeout: Duration::from_secs(10) };
    let sns = unit_settings(&providers::sns::UNIT, sns_config(&moto)).build(&ctx).await.unwrap();
    for job in [sms_job("+1abc", "hi".into()), sms_job("+15555550100", "x".repeat(1601))] {
        let SendOutcome::Failed(f) = sns.send(&job).await else { panic!("moto took {}", job.recipient) };
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Permanent, "InvalidParameter"), "{}", f.message);
        assert!(!f.message.contains(&job.recipient), "{}", f.message);
    }
    assert_eq!(moto.data().await["sns"]["SMS"].as_array().map_or(0, Vec::len), 0);
}

/// The credentials checks against moto: SES `GetEmailIdentity` of the sender's domain (moto
/// has no `GetAccount`) and SNS `GetSMSAttributes` with the stand-in's keys; nothing is sent.
#[tokio::test]
async fn the_aws_checks_read_the_account_and_send_nothing() {
    let moto = Moto::start().await;
    let unknown = check(&*unit_settings(&providers::ses::UNIT, ses_config(&moto))).await;
    assert_eq!((unknown.ok, unknown.code.as_deref()), (false, Some("NotFoundException")), "{unknown:?}");
    create_email_identity(&moto, "example.com").await;
    let ses = check(&*unit_settings(&providers::ses::UNIT, ses_config(&moto))).await;
    assert!(ses.ok, "{ses:?}");
    assert!(ses.detail.contains("`example.com` is"), "{ses:?}");
    let sns = check(&*unit_settings(&providers::sns::UNIT, sns_config(&moto))).await;
    assert!(sns.ok, "{sns:?}");
    let data = moto.data().await;
    assert_eq!(data["ses"]["Message"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(data["sns"]["SMS"].as_array().map_or(0, Vec::len), 0);

    // Nothing listening: the check says it could not connect, and names no secret.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut nowhere = ses_config(&moto);
    nowhere["endpoint_url"] = json!(format!("http://127.0.0.1:{port}"));
    nowhere["secret_access_key"] = json!("s3cr3t-key-value");
    let failed = check(&*unit_settings(&providers::ses::UNIT, nowhere)).await;
    assert!(!failed.ok && failed.code.as_deref() == Some("connection_failed"), "{failed:?}");
    assert!(!format!("{failed:?}").contains("s3cr3t"), "{failed:?}");
}

/// The SMTP check connects and says EHLO to the sink, and sends no message.
#[tokio::test]
async fn the_smtp_check_connects_without_sending() {
    let sink = SmtpSink::start().await;
    let smtp = json!({"host": "127.0.0.1", "port": sink.port, "tls": "none", "from": "noreply@example.com"});
    let checked = check(&*unit_settings(&providers::smtp::UNIT, smtp)).await;
    assert!(checked.ok, "{checked:?}");
    assert!(sink.messages().is_empty());
}
