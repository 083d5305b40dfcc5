//! Delivery receipts end to end: signed provider callbacks move deliveries forwards (never
//! backwards), requests not signed by the provider change nothing, and SES bounces and
//! complaints suppress the address for the tenant's later notifications.

use std::sync::{Arc, Mutex};

use domain::Channel;
use notify_api::{MetaReceipts, SesReceipts, TwilioReceipts};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::{
    harness::{DEADLINE, TestApp, WorkerOptions, email, eventually},
    stubs::Moto,
};

/// Marks the notification's only delivery as sent through `provider` under
/// `provider_message_id`, as a worker would have recorded it.
async fn sent(app: &TestApp, body: &Value, provider: &str, provider_message_id: &str) -> Uuid {
    let id = app.accept(body).await;
    let pool = app.env.store.pool();
    sqlx::query(
        "UPDATE deliveries SET status = 'sent', provider = $2, provider_message_id = $3, attempts = 1, sent_at = now()
         WHERE notification_id = $1",
    )
    .bind(id)
    .bind(provider)
    .bind(provider_message_id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM outbox WHERE notification_id = $1").bind(id).execute(pool).await.unwrap();
    sqlx::query("UPDATE notifications SET status = 'sent' WHERE id = $1").bind(id).execute(pool).await.unwrap();
    id
}

async fn delivery(app: &TestApp, notification: Uuid) -> Value {
    app.get(notification).await["deliveries"][0].clone()
}

fn sms(to: &str) -> Value {
    json!({"type": "t", "to": [{"phone": to}], "content": {"text": "Hello"}})
}

fn whatsapp(to: &str) -> Value {
    json!({"type": "t", "to": [{"whatsapp": to}], "content": {"text": "Hello"}})
}

/// Status code and `code` of a problem answer (empty for other answers).
async fn answer(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

/// A route whose provider is not configured answers 404 to a request that carries the
/// provider's signature header; without the header it is refused as unsigned (403) first,
/// configured or not.
#[tokio::test]
async fn unconfigured_providers_answer_404() {
    let app = TestApp::api_only().await;
    for (path, signature) in [
        ("/v1/providers/twilio/status", Some("X-Twilio-Signature")),
        ("/v1/providers/ses/events", None),
        ("/v1/providers/meta/webhook", Some("X-Hub-Signature-256")),
    ] {
        let mut request = app.http.post(app.url(path)).body("x");
        if let Some(header) = signature {
            let (status, code) = answer(app.http.post(app.url(path)).body("x").send().await.unwrap()).await;
            assert_eq!((status, code.as_str()), (403, "invalid_signature"), "{path} unsigned");
            request = request.header(header, "c2lnbmVk");
        }
        assert_eq!(request.send().await.unwrap().status(), 404, "{path}");
    }
    let verify = "/v1/providers/meta/webhook?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1";
    assert_eq!(app.http.get(app.url(verify)).send().await.unwrap().status(), 404);
}

// --- Twilio --------------------------------------------------------------------------

/// docs/providers.md §9.1's status-callback vector: this URL, token and these parameters are
/// signed `muiEAkSM4g0DrlU3XyoUZXQqcLU=` (computed independently of our code).
const TWILIO_URL: &str = "https://notify.example.com/webhooks/twilio/status";
const TWILIO_SIGNATURE: &str = "muiEAkSM4g0DrlU3XyoUZXQqcLU=";
const TWILIO_SID: &str = "SM0123456789abcdef0123456789abcdef";

fn twilio_callback(status: &str) -> Vec<(&'static str, String)> {
    [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15555550199"),
        ("MessageSid", TWILIO_SID),
        ("MessageStatus", status),
        ("SmsSid", TWILIO_SID),
        ("SmsStatus", status),
        ("To", "+15555550100"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

/// An API taking Twilio's status callbacks, signed with the test's auth token.
async fn twilio_app() -> TestApp {
    TestApp::api_with(|config| {
        config.receipts.twilio =
            Some(TwilioReceipts { auth_token: "test_auth_token".into(), public_url: TWILIO_URL.into() })
    })
    .await
}

async fn twilio_post(app: &TestApp, form: &[(&str, String)], signature: Option<&str>) -> (u16, String) {
    let mut request = app.http.post(app.url("/v1/providers/twilio/status")).form(form);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    answer(request.send().await.unwrap()).await
}

#[tokio::test]
async fn a_signed_twilio_callback_delivers_and_a_mis_signed_one_changes_nothing() {
    let app = twilio_app().await;
    let id = sent(&app, &sms("+15555550100"), "twilio", TWILIO_SID).await;

    let unsigned = twilio_post(&app, &twilio_callback("delivered"), None).await;
    assert_eq!(unsigned, (403, "invalid_signature".into()));
    // The signature of a `delivered` callback does not sign an `undelivered` one.
    let mis_signed = twilio_post(&app, &twilio_callback("undelivered"), Some(TWILIO_SIGNATURE)).await;
    assert_eq!(mis_signed, (403, "invalid_signature".into()));
    assert_eq!(delivery(&app, id).await["status"], "sent");

    assert_eq!(twilio_post(&app, &twilio_callback("delivered"), Some(TWILIO_SIGNATURE)).await.0, 200);
    let n = app.get(id).await;
    assert_eq!((n["status"].as_str(), n["deliveries"][0]["status"].as_str()), (Some("sent"), Some("delivered")));
    // Twilio repeats callbacks: the same one again changes nothing.
    assert_eq!(twilio_post(&app, &twilio_callback("delivered"), Some(TWILIO_SIGNATURE)).await.0, 200);
    assert_eq!(delivery(&app, id).await["status"], "delivered");
}

#[tokio::test]
async fn a_twilio_callback_retried_with_its_idempotency_token_is_taken_once() {
    let app = twilio_app().await;
    let post = |token: &'static str| {
        let request = app.http.post(app.url("/v1/providers/twilio/status")).form(&twilio_callback("delivered"));
        request.header("X-Twilio-Signature", TWILIO_SIGNATURE).header("I-Twilio-Idempotency-Token", token).send()
    };
    // No send is recorded under the sid yet, so each receipt taken is kept until it is.
    assert_eq!(post("0123-4567-89ab").await.unwrap().status(), 200);
    assert_eq!(pending_receipts(&app).await, 1);
    // Twilio retrying that webhook, with the same token: acknowledged, not taken again.
    assert_eq!(post("0123-4567-89ab").await.unwrap().status(), 200);
    assert_eq!(pending_receipts(&app).await, 1);
    // Another callback (another token) is taken.
    assert_eq!(post("cdef-0123-4567").await.unwrap().status(), 200);
    assert_eq!(pending_receipts(&app).await, 2);
    // Tokens are kept for a bounded time: purged, a token is new again.
    assert_eq!(app.env.store.purge_receipt_tokens(std::time::Duration::ZERO).await.unwrap(), 2);
    assert_eq!(post("0123-4567-89ab").await.unwrap().status(), 200);
    assert_eq!(pending_receipts(&app).await, 3);
}

/// The SMS worker sending through a wiremock Twilio that answers with `TWILIO_SID` only
/// after `delay`: the status callback can come first, as it does when Twilio's answer
/// is slow to reach the worker.
async fn slow_twilio(app: &TestApp, delay: std::time::Duration) -> (MockServer, Vec<crate::harness::Service>) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": TWILIO_SID, "status": "queued"})).set_delay(delay),
        )
        .mount(&server)
        .await;
    let twilio = json!({
        "account_sid": "AC0123456789abcdef0123456789abcdef",
        "auth_token": "test_auth_token",
        "from": "+15005550000",
        "base_url": server.uri(),
    });
    let options =
        WorkerOptions { providers: vec!["twilio".into()], settings: json!({"twilio": twilio}), ..Default::default() };
    let services = vec![app.start_relay(100).await, app.start_worker(Channel::Sms, options).await];
    (server, services)
}

async fn pending_receipts(app: &TestApp) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pending_receipts").fetch_one(app.env.store.pool()).await.unwrap();
    n
}

#[tokio::test]
async fn a_receipt_that_comes_before_the_send_is_recorded_applies_when_it_is() {
    let app = twilio_app().await;
    let (_twilio, _services) = slow_twilio(&app, std::time::Duration::from_secs(2)).await;
    let id = app.accept(&sms("+15555550100")).await;
    eventually("the worker waiting for Twilio", || async {
        (delivery(&app, id).await["status"] == "sending").then_some(())
    })
    .await;

    // Twilio's callback, before its answer reached the worker: kept, not dropped.
    assert_eq!(twilio_post(&app, &twilio_callback("delivered"), Some(TWILIO_SIGNATURE)).await.0, 200);
    assert_eq!(delivery(&app, id).await["status"], "sending");
    assert_eq!(pending_receipts(&app).await, 1);

    // The outcome, once recorded, takes the receipt with it.
    eventually("the delivery delivered", || async {
        (delivery(&app, id).await["status"] == "delivered").then_some(())
    })
    .await;
    let n = app.get(id).await;
    assert_eq!(n["status"], "sent");
    assert_eq!(n["deliveries"][0]["provider_message_id"], TWILIO_SID);
    assert_eq!(pending_receipts(&app).await, 0, "an applied receipt is not kept");
}

#[tokio::test]
async fn receipts_no_send_claims_are_purged() {
    let app = twilio_app().await;
    // Another system's message on the same Twilio account.
    assert_eq!(twilio_post(&app, &twilio_callback("delivered"), Some(TWILIO_SIGNATURE)).await.0, 200);
    assert_eq!(pending_receipts(&app).await, 1);
    assert_eq!(app.env.store.purge_pending_receipts(std::time::Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(app.env.store.purge_pending_receipts(std::time::Duration::ZERO).await.unwrap(), 1);
    assert_eq!(pending_receipts(&app).await, 0);
}

#[tokio::test]
async fn a_pending_receipt_left_behind_by_a_crash_is_applied_by_the_purge() {
    let app = twilio_app().await;
    // The callback came first and was kept; the worker recorded the send and died before
    // it applied the receipt.
    assert_eq!(twilio_post(&app, &twilio_callback("delivered"), Some(TWILIO_SIGNATURE)).await.0, 200);
    let id = sent(&app, &sms("+15555550100"), "twilio", TWILIO_SID).await;
    assert_eq!(delivery(&app, id).await["status"], "sent");

    assert_eq!(app.env.store.apply_claimable_receipts().await.unwrap(), 1);
    assert_eq!(delivery(&app, id).await["status"], "delivered");
    assert_eq!(pending_receipts(&app).await, 0);
    assert_eq!(app.env.store.apply_claimable_receipts().await.unwrap(), 0, "applied once");
}

// --- Meta ----------------------------------------------------------------------------

const META_SECRET: &str = "meta-app-secret";

/// HMAC-SHA256 (RFC 2104) written out over `sha2`, so the test does not check the API's
/// signatures with the API's own code.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

fn meta_statuses(statuses: Value) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": statuses}}]}]})
    .to_string()
    .into_bytes()
}

async fn meta_post(app: &TestApp, body: Vec<u8>, secret: &str) -> (u16, String) {
    let signature = format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), &body)));
    let response = app
        .http
        .post(app.url("/v1/providers/meta/webhook"))
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    answer(response).await
}

#[test]
fn the_tests_hmac_matches_rfc_4231() {
    let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    assert_eq!(hex::encode(tag), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

#[tokio::test]
async fn meta_verifies_the_webhook_and_signed_statuses_move_deliveries_forwards() {
    let app = TestApp::api_with(|config| {
        config.receipts.meta = Some(MetaReceipts { app_secret: META_SECRET.into(), verify_token: "verify-me".into() })
    })
    .await;

    let verify = |token: &str| {
        app.url(&format!(
            "/v1/providers/meta/webhook?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        ))
    };
    let response = app.http.get(verify("verify-me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "1158201444");
    assert_eq!(answer(app.http.get(verify("guess")).send().await.unwrap()).await, (403, "invalid_signature".into()));

    let delivered = sent(&app, &whatsapp("+15555550100"), "meta", "wamid.delivered").await;
    let failed = sent(&app, &whatsapp("+15555550101"), "meta", "wamid.failed").await;
    let delivered_status =
        json!([{"id": "wamid.delivered", "status": "delivered", "timestamp": "1", "recipient_id": "15555550100"}]);

    let mis_signed = meta_post(&app, meta_statuses(delivered_status.clone()), "another-secret").await;
    assert_eq!(mis_signed, (403, "invalid_signature".into()));
    assert_eq!(delivery(&app, delivered).await["status"], "sent");

    assert_eq!(meta_post(&app, meta_statuses(delivered_status), META_SECRET).await.0, 200);
    assert_eq!(delivery(&app, delivered).await["status"], "delivered");

    // One webhook with a late `failed` for the delivered message (out of order: it stays
    // delivered) and a `failed` with its error for the other.
    let statuses = json!([
        {"id": "wamid.delivered", "status": "failed", "timestamp": "2", "recipient_id": "15555550100",
         "errors": [{"code": 131026, "title": "Message undeliverable"}]},
        {"id": "wamid.failed", "status": "failed", "timestamp": "2", "recipient_id": "15555550101",
         "errors": [{"code": 131026, "title": "Message undeliverable"}]}]);
    assert_eq!(meta_post(&app, meta_statuses(statuses), META_SECRET).await.0, 200);
    assert_eq!(delivery(&app, delivered).await["status"], "delivered");
    let n = app.get(failed).await;
    assert_eq!(n["status"], "failed");
    let d = &n["deliveries"][0];
    assert_eq!((d["status"].as_str(), d["last_error_code"].as_str()), (Some("failed"), Some("131026")));
}

// --- SES through SNS, signed by moto -------------------------------------------------

/// moto picks the service from the credential scope of `Authorization` and checks no
/// signature (docs/providers.md §10.1).
const SNS_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sns/aws4_request, \
                        SignedHeaders=host;x-amz-date, Signature=abc";

async fn sns_call(moto: &Moto, params: &[(&str, &str)]) -> String {
    let mut form = vec![("Version", "2010-03-31")];
    form.extend_from_slice(params);
    let response =
        reqwest::Client::new().post(&moto.url).header("Authorization", SNS_AUTH).form(&form).send().await.unwrap();
    assert!(response.status().is_success(), "moto {params:?}: {}", response.status());
    response.text().await.unwrap()
}

async fn create_topic(moto: &Moto, name: &str) -> String {
    let xml = sns_call(moto, &[("Action", "CreateTopic"), ("Name", name)]).await;
    let start = xml.find("<TopicArn>").expect("a TopicArn") + "<TopicArn>".len();
    xml[start..start + xml[start..].find("</TopicArn>").unwrap()].to_owned()
}

/// A loopback stand-in for the SNS edge around moto. moto POSTs its signed messages here
/// (they are kept for the test to send on); the certificate a message names lives under
/// the real `https://sns.<region>.amazonaws.com/` in the message, and moto serves it only
/// to a request carrying an SNS-scoped `Authorization` (docs/providers.md §10.2), so this serves
/// it at `http://127.0.0.1:<port>/<name>.pem` with that header added. `SigningCertURL` is
/// not signed, which is why the API allows only configured hosts for it.
struct SnsEdge {
    url: String,
    received: mpsc::UnboundedReceiver<Value>,
    /// `METHOD path` of every request, in order.
    requests: Arc<Mutex<Vec<String>>>,
    _server: JoinHandle<()>,
}

impl SnsEdge {
    async fn start(moto: &Moto) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (sender, received) = mpsc::unbounded_channel();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (moto_url, log) = (moto.url.clone(), requests.clone());
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, moto_url.clone(), sender.clone(), log.clone()));
            }
        });
        Self { url, received, requests, _server: server }
    }

    /// Publishes `event` (an SES event, sent as a JSON string) to the topic and returns the
    /// message moto signed and POSTed here, its certificate URL pointed at this edge.
    async fn publish(&mut self, moto: &Moto, topic: &str, event: &Value) -> Value {
        sns_call(moto, &[("Action", "Publish"), ("TopicArn", topic), ("Message", &event.to_string())]).await;
        let mut envelope = tokio::time::timeout(DEADLINE, self.received.recv())
            .await
            .expect("moto POSTs the message within the deadline")
            .expect("the edge runs");
        let cert = envelope["SigningCertURL"].as_str().unwrap();
        assert!(cert.starts_with("https://sns.us-east-1.amazonaws.com/"), "{cert}");
        let name = cert.rsplit('/').next().unwrap().to_owned();
        envelope["SigningCertURL"] = format!("{}/{name}", self.url).into();
        envelope
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 exchange, then the connection closes.
async fn serve(
    mut stream: TcpStream,
    moto: String,
    sender: mpsc::UnboundedSender<Value>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap() == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    log.lock().unwrap().push(format!("{method} {path}"));
    let reply = match (method.as_str(), path.ends_with(".pem")) {
        ("POST", _) => {
            let _ = sender.send(serde_json::from_slice(&body).expect("moto POSTs JSON"));
            Vec::new()
        }
        ("GET", true) => {
            let pem = reqwest::Client::new().get(format!("{moto}{path}")).header("Authorization", SNS_AUTH).send();
            pem.await.unwrap().error_for_status().unwrap().bytes().await.unwrap().to_vec()
        }
        _ => Vec::new(),
    };
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&reply).await.unwrap();
}

async fn sns_post(app: &TestApp, envelope: &Value) -> (u16, String) {
    let response = app
        .http
        .post(app.url("/v1/providers/ses/events"))
        .header("Content-Type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", envelope["Type"].as_str().unwrap_or_default())
        .body(envelope.to_string())
        .send()
        .await
        .unwrap();
    answer(response).await
}

fn mail(message_id: &str, to: &str) -> Value {
    json!({"timestamp": "2026-11-25T10:00:00.000Z", "messageId": message_id, "source": "noreply@example.com",
           "destination": [to], "headersTruncated": false, "tags": {"nid": ["n"]}})
}

fn bounce(message_id: &str, to: &str) -> Value {
    json!({"eventType": "Bounce", "mail": mail(message_id, to), "bounce": {
        "bounceType": "Permanent", "bounceSubType": "General", "feedbackId": "feedback-1",
        "timestamp": "2026-11-25T10:00:01.000Z", "reportingMTA": "dsn; a.example.com",
        "bouncedRecipients": [{"emailAddress": to, "action": "failed", "status": "5.1.1",
                               "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}})
}

fn delivered(message_id: &str, to: &str) -> Value {
    json!({"eventType": "Delivery", "mail": mail(message_id, to), "delivery": {
        "timestamp": "2026-11-25T10:00:01.000Z", "processingTimeMillis": 500, "recipients": [to],
        "smtpResponse": "250 ok", "reportingMTA": "a.example.com"}})
}

fn complaint(message_id: &str, to: &str) -> Value {
    json!({"eventType": "Complaint", "mail": mail(message_id, to), "complaint": {
        "complainedRecipients": [{"emailAddress": to}], "timestamp": "2026-11-25T10:05:00.000Z",
        "feedbackId": "feedback-2", "complaintFeedbackType": "abuse"}})
}

async fn suppression(app: &TestApp, address: &str) -> Option<(String, String)> {
    sqlx::query_as(
        "SELECT reason, source FROM suppressions WHERE tenant_id = $1 AND channel = 'email' AND address = $2",
    )
    .bind(app.tenant_id)
    .bind(address)
    .fetch_optional(app.env.store.pool())
    .await
    .unwrap()
}

async fn outbox_rows(app: &TestApp, notification: &str) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE notification_id = $1::uuid")
        .bind(notification)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    count
}

#[tokio::test]
async fn ses_events_signed_by_sns_bounce_suppress_and_never_move_backwards() {
    let moto = Moto::start().await;
    let mut edge = SnsEdge::start(&moto).await;
    let topic = create_topic(&moto, "ses-events").await;
    let other_topic = create_topic(&moto, "not-allowed").await;
    let app = TestApp::api_with(|config| {
        config.receipts.ses = Some(SesReceipts {
            cert_host_pattern: r"^127\.0\.0\.1$".into(),
            allow_http_certs: true,
            topic_arns: vec![topic.clone()],
            cert_issuers: vec!["Amazon".into()],
        })
    })
    .await;
    for t in [&topic, &other_topic] {
        let endpoint = format!("{}/sns", edge.url);
        sns_call(&moto, &[("Action", "Subscribe"), ("TopicArn", t), ("Protocol", "http"), ("Endpoint", &endpoint)])
            .await;
    }
    // The producer wrote the address in mixed case; SES reports it as it was sent.
    let bounced = sent(&app, &email("Bounce@Example.com"), "ses", "0100-bounce").await;
    let complained = sent(&app, &email("ada@example.com"), "ses", "0100-ada").await;

    let envelope = edge.publish(&moto, &topic, &bounce("0100-bounce", "Bounce@Example.com")).await;
    assert_eq!(envelope["SignatureVersion"], "2");

    // Signed, but with another message put in: refused, nothing changes.
    let mut tampered = envelope.clone();
    tampered["Message"] = delivered("0100-ada", "ada@example.com").to_string().into();
    assert_eq!(sns_post(&app, &tampered).await, (403, "invalid_signature".into()));
    // Signed by SNS, but of a topic not on the allow-list.
    let foreign = edge.publish(&moto, &other_topic, &delivered("0100-ada", "ada@example.com")).await;
    assert_eq!(sns_post(&app, &foreign).await, (403, "invalid_signature".into()));
    assert_eq!(delivery(&app, complained).await["status"], "sent");
    assert_eq!(delivery(&app, bounced).await["status"], "sent");
    assert_eq!(suppression(&app, "bounce@example.com").await, None);

    assert_eq!(sns_post(&app, &envelope).await.0, 200);
    let n = app.get(bounced).await;
    let d = &n["deliveries"][0];
    assert_eq!((n["status"].as_str(), d["status"].as_str()), (Some("failed"), Some("bounced")));
    assert_eq!(d["last_error_code"], "General");
    assert_eq!(suppression(&app, "bounce@example.com").await, Some(("bounce".into(), "ses".into())));

    // SNS repeats messages, and events arrive out of order: neither moves it back.
    assert_eq!(sns_post(&app, &envelope).await.0, 200);
    let late_delivery = edge.publish(&moto, &topic, &delivered("0100-bounce", "Bounce@Example.com")).await;
    assert_eq!(sns_post(&app, &late_delivery).await.0, 200);
    assert_eq!(delivery(&app, bounced).await["status"], "bounced");

    // A complaint suppresses the address and proves the message arrived.
    let complained_of = edge.publish(&moto, &topic, &complaint("0100-ada", "ada@example.com")).await;
    assert_eq!(sns_post(&app, &complained_of).await.0, 200);
    assert_eq!(delivery(&app, complained).await["status"], "delivered");
    assert_eq!(suppression(&app, "ada@example.com").await, Some(("complaint".into(), "ses".into())));

    // Later notifications to a suppressed address: the delivery is written suppressed,
    // nothing is queued, and the answer says so; with an idempotency key, its replay too.
    for (key, to) in [(None, "bounce@example.com"), (Some("later-1"), "BOUNCE@example.com")] {
        let mut request = app.http.post(app.url("/v1/notifications")).bearer_auth(&app.api_key).json(&email(to));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let accepted: Value = request.send().await.unwrap().json().await.unwrap();
        assert_eq!(
            (accepted["status"].as_str(), accepted["deliveries"][0]["status"].as_str()),
            (Some("sent"), Some("suppressed"))
        );
        let id = accepted["id"].as_str().unwrap();
        assert_eq!(outbox_rows(&app, id).await, 0);
        let n = app.get(id.parse().unwrap()).await;
        let d = &n["deliveries"][0];
        assert_eq!(
            (n["status"].as_str(), d["status"].as_str(), d["last_error_code"].as_str()),
            (Some("sent"), Some("suppressed"), Some("bounce"))
        );
        if let Some(key) = key {
            let replay =
                app.http.post(app.url("/v1/notifications")).bearer_auth(&app.api_key).header("Idempotency-Key", key);
            let replayed: Value = replay.json(&email(to)).send().await.unwrap().json().await.unwrap();
            assert_eq!(replayed, accepted);
        }
    }
    // Only the suppressed recipient of a notification is held back.
    let mixed = json!({"type": "t", "to": [{"email": "bounce@example.com"}, {"email": "new@example.com"}],
                       "content": {"subject": "s", "text": "t"}});
    let (status, accepted) = app.post(&mixed).await;
    assert_eq!(status, 202);
    let statuses: Vec<&str> =
        accepted["deliveries"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!((accepted["status"].as_str(), statuses), (Some("pending"), vec!["suppressed", "pending"]));
    assert_eq!(outbox_rows(&app, accepted["id"].as_str().unwrap()).await, 1);
}

#[tokio::test]
async fn a_subscription_confirmation_not_signed_by_sns_is_refused_and_not_followed() {
    let moto = Moto::start().await;
    let mut edge = SnsEdge::start(&moto).await;
    let topic = create_topic(&moto, "ses-events").await;
    let app = TestApp::api_with(|config| {
        config.receipts.ses = Some(SesReceipts {
            cert_host_pattern: r"^127\.0\.0\.1$".into(),
            allow_http_certs: true,
            topic_arns: vec![topic.clone()],
            cert_issuers: vec!["Amazon".into()],
        })
    })
    .await;
    let endpoint = format!("{}/sns", edge.url);
    sns_call(&moto, &[("Action", "Subscribe"), ("TopicArn", &topic), ("Protocol", "http"), ("Endpoint", &endpoint)])
        .await;
    // A real certificate of moto's, and a signature by moto's key over something else.
    let signed = edge.publish(&moto, &topic, &delivered("0100-x", "x@example.com")).await;
    let confirmation = json!({
        "Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425f004aed7b7526", "TopicArn": topic,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": format!("{}/confirm?Token=2336412f37fb687f5d51e6e2425f004aed7b7526", edge.url),
        "Timestamp": "2026-11-25T20:50:24.106Z", "SignatureVersion": "2",
        "Signature": signed["Signature"], "SigningCertURL": signed["SigningCertURL"]});
    assert_eq!(sns_post(&app, &confirmation).await, (403, "invalid_signature".into()));
    let mut unsigned = confirmation.clone();
    unsigned.as_object_mut().unwrap().remove("Signature");
    assert_eq!(sns_post(&app, &unsigned).await, (403, "invalid_signature".into()));
    assert!(!edge.requests().iter().any(|r| r.contains("/confirm")), "{:?}", edge.requests());
}

/// A tenant's SES events come through its own SNS topic to its own route: only that topic
/// is taken there (anyone can have SNS sign a message of a topic of theirs), and its events
/// move only the tenant's deliveries.
#[tokio::test]
async fn ses_events_on_a_tenants_route_take_only_its_topic_and_move_only_its_deliveries() {
    let moto = Moto::start().await;
    let mut edge = SnsEdge::start(&moto).await;
    let operator_topic = create_topic(&moto, "ses-events").await;
    let (topic_a, topic_b) =
        (create_topic(&moto, "tenant-a-events").await, create_topic(&moto, "tenant-b-events").await);
    let app = TestApp::api_with(|config| {
        config.receipts.ses = Some(SesReceipts {
            cert_host_pattern: r"^127\.0\.0\.1$".into(),
            allow_http_certs: true,
            topic_arns: vec![operator_topic.clone()],
            cert_issuers: vec!["Amazon".into()],
        })
    })
    .await;
    for t in [&operator_topic, &topic_a, &topic_b] {
        let endpoint = format!("{}/sns", edge.url);
        sns_call(&moto, &[("Action", "Subscribe"), ("TopicArn", t), ("Protocol", "http"), ("Endpoint", &endpoint)])
            .await;
    }
    let b = app.env.store.create_tenant("b").await.unwrap();
    for (key, topic) in [(&app.api_key, &topic_a), (&b.api_key, &topic_b)] {
        let settings = json!({"region": "us-east-1", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3cr3t",
            "from": "noreply@example.com", "events_topic_arn": topic});
        let put =
            app.http.put(app.url("/v1/integrations/email/ses")).bearer_auth(key).json(&json!({"settings": settings}));
        let response = put.send().await.unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
    // B's message, recorded as a worker would have.
    let accepted = app.http.post(app.url("/v1/notifications")).bearer_auth(&b.api_key).json(&email("bo@example.com"));
    let of_b: Uuid =
        accepted.send().await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("UPDATE deliveries SET status = 'sent', provider = 'ses', provider_message_id = '0100-b' WHERE notification_id = $1")
        .bind(of_b)
        .execute(app.env.store.pool())
        .await
        .unwrap();
    let status_of_b = || async {
        let response = app.http.get(app.url(&format!("/v1/notifications/{of_b}"))).bearer_auth(&b.api_key).send().await;
        response.unwrap().json::<Value>().await.unwrap()["deliveries"][0]["status"].as_str().unwrap().to_owned()
    };
    let post = |tenant: Uuid, envelope: Value| {
        let request = app
            .http
            .post(app.url(&format!("/v1/providers/ses/events/{tenant}")))
            .header("x-amz-sns-message-type", "Notification")
            .body(envelope.to_string());
        async move { request.send().await.unwrap().status().as_u16() }
    };

    // A's own topic, on A's route, bouncing B's message: taken, and nothing of B's changes.
    let from_a = edge.publish(&moto, &topic_a, &bounce("0100-b", "bo@example.com")).await;
    assert_eq!(post(app.tenant_id, from_a.clone()).await, 200);
    assert_eq!(status_of_b().await, "sent");
    let suppressed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM suppressions").fetch_one(app.env.store.pool()).await.unwrap();
    assert_eq!(suppressed, 0);
    // Neither A's topic nor the operator's is taken on B's route.
    assert_eq!(post(b.tenant_id, from_a).await, 403);
    let from_operator = edge.publish(&moto, &operator_topic, &delivered("0100-b", "bo@example.com")).await;
    assert_eq!(post(b.tenant_id, from_operator).await, 403);
    assert_eq!(status_of_b().await, "sent");

    let from_b = edge.publish(&moto, &topic_b, &delivered("0100-b", "bo@example.com")).await;
    assert_eq!(post(b.tenant_id, from_b).await, 200);
    assert_eq!(status_of_b().await, "delivered");
}
