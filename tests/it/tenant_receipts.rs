//! Receipts of messages sent through a tenant's own integrations: they come on the tenant's
//! own routes (`/v1/providers/twilio/status/{tenant}`, `/v1/providers/meta/webhook/{tenant}`),
//! are checked with that tenant's integration secrets, and move only that tenant's
//! deliveries, also when they arrive before the send is recorded. A receipt naming another
//! tenant's message changes nothing.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use domain::{Channel, Content, DeliveryJob, Priority, SendOutcome};
use notify_api::{MetaReceipts, TwilioReceipts};
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::harness::TestApp;

/// The API's public URL as configured (`integrations.receipts_url`): Twilio signs the URL
/// it was given, whatever address the test reaches the API on.
const RECEIPTS_URL: &str = "https://notify.example.com";
const OPERATOR_TOKEN: &str = "operator-auth-token";
const OPERATOR_APP_SECRET: &str = "operator-app-secret";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

/// A second tenant of the test's API, with its own key.
struct Tenant {
    id: Uuid,
    key: String,
}

/// The API with the operator's own receipt settings, the public URL of tenants' receipt
/// routes, and two tenants: `a` (the test app's) and `b`.
async fn two_tenants() -> (TestApp, Tenant, Tenant) {
    let app = TestApp::api_with(|config| {
        config.integrations.receipts_url = Some(RECEIPTS_URL.into());
        config.receipts.twilio = Some(TwilioReceipts {
            auth_token: OPERATOR_TOKEN.into(),
            public_url: format!("{RECEIPTS_URL}/v1/providers/twilio/status"),
        });
        config.receipts.meta =
            Some(MetaReceipts { app_secret: OPERATOR_APP_SECRET.into(), verify_token: "operator-verify".into() });
    })
    .await;
    let b = app.env.store.create_tenant("b").await.unwrap();
    let a = Tenant { id: app.tenant_id, key: app.api_key.clone() };
    (app, a, Tenant { id: b.tenant_id, key: b.api_key })
}

async fn put_integration(app: &TestApp, tenant: &Tenant, path: &str, settings: Value) {
    let response =
        app.http.put(app.url(path)).bearer_auth(&tenant.key).json(&json!({"settings": settings})).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201, "{}", response.text().await.unwrap());
}

async fn twilio_integration(app: &TestApp, tenant: &Tenant, channel: &str, token: &str) {
    let settings = json!({"account_sid": ACCOUNT, "auth_token": token, "from": "+15555550199"});
    put_integration(app, tenant, &format!("/v1/integrations/{channel}/twilio"), settings).await;
}

/// Accepts a notification of `tenant` and marks its only delivery as sent through
/// `provider` under `message_id`, as a worker would have recorded it.
async fn sent(app: &TestApp, tenant: &Tenant, body: &Value, provider: &str, message_id: &str) -> Uuid {
    let response =
        app.http.post(app.url("/v1/notifications")).bearer_auth(&tenant.key).json(body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let id: Uuid = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let pool = app.env.store.pool();
    sqlx::query(
        "UPDATE deliveries SET status = 'sent', provider = $2, provider_message_id = $3, attempts = 1, sent_at = now()
         WHERE notification_id = $1",
    )
    .bind(id)
    .bind(provider)
    .bind(message_id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM outbox WHERE notification_id = $1").bind(id).execute(pool).await.unwrap();
    id
}

/// The status of the notification's only delivery, as its tenant reads it.
async fn delivery_status(app: &TestApp, tenant: &Tenant, id: Uuid) -> String {
    let response =
        app.http.get(app.url(&format!("/v1/notifications/{id}"))).bearer_auth(&tenant.key).send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    body["deliveries"][0]["status"].as_str().unwrap().to_owned()
}

fn sms(to: &str) -> Value {
    json!({"type": "t", "to": [{"phone": to}], "content": {"text": "Hello"}})
}

/// HMAC (RFC 2104) over a 64-byte-block hash, written out so that the test does not check
/// the API's signatures with the API's own code.
fn hmac<D: Digest>(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        let digest = D::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = D::new().chain_update(pad(0x36)).chain_update(message).finalize();
    D::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

#[test]
fn the_tests_hmacs_match_their_published_vectors() {
    // RFC 2202 test case 2 (SHA-1) and RFC 4231 test case 2 (SHA-256).
    assert_eq!(
        hex::encode(hmac::<Sha1>(b"Jefe", b"what do ya want for nothing?")),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        hex::encode(hmac::<Sha256>(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

// --- Twilio --------------------------------------------------------------------------

fn callback(sid: &str, status: &str) -> Vec<(&'static str, String)> {
    [("AccountSid", ACCOUNT), ("MessageSid", sid), ("MessageStatus", status), ("To", "+15555550100")]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect()
}

/// Twilio's `X-Twilio-Signature` of a callback posted to `url`: base64 HMAC-SHA1 of the URL
/// and the parameters sorted by name, each as name then value.
fn twilio_signature(token: &str, url: &str, form: &[(&str, String)]) -> String {
    let mut sorted: Vec<_> = form.to_vec();
    sorted.sort();
    let signed: String = std::iter::once(url.to_owned()).chain(sorted.iter().map(|(k, v)| format!("{k}{v}"))).collect();
    BASE64.encode(hmac::<Sha1>(token.as_bytes(), signed.as_bytes()))
}

fn tenant_route(tenant: Uuid) -> String {
    format!("/v1/providers/twilio/status/{tenant}")
}

/// Posts `form` to the receipt route `route`, signed with `token` over the route's public
/// URL; answers the status code.
async fn twilio_post(app: &TestApp, route: &str, form: &[(&str, String)], token: &str, callback_id: &str) -> u16 {
    let signature = twilio_signature(token, &format!("{RECEIPTS_URL}{route}"), form);
    let response = app
        .http
        .post(app.url(route))
        .form(form)
        .header("X-Twilio-Signature", signature)
        .header("I-Twilio-Idempotency-Token", callback_id)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

async fn pending_receipts(app: &TestApp, message_id: &str) -> Vec<Option<Uuid>> {
    sqlx::query_scalar("SELECT tenant_id FROM pending_receipts WHERE provider_message_id = $1 ORDER BY id")
        .bind(message_id)
        .fetch_all(app.env.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_twilio_receipt_moves_only_deliveries_of_the_tenant_whose_integration_signed_it() {
    let (app, a, b) = two_tenants().await;
    twilio_integration(&app, &a, "sms", "token-of-tenant-a").await;
    twilio_integration(&app, &b, "whatsapp", "whatsapp-token-of-b").await;
    twilio_integration(&app, &b, "sms", "token-of-tenant-b").await;
    let sid = "SM00000000000000000000000000000b01";
    let of_b = sent(&app, &b, &sms("+15555550100"), "twilio", sid).await;
    let delivered = callback(sid, "delivered");

    // Tenant A, signing correctly with its own token on its own route, names B's message:
    // taken (A's signature is good), and nothing of B's changes, now or later.
    assert_eq!(twilio_post(&app, &tenant_route(a.id), &delivered, "token-of-tenant-a", "cb-1").await, 200);
    assert_eq!(delivery_status(&app, &b, of_b).await, "sent");
    assert!(pending_receipts(&app, sid).await.is_empty(), "kept for later");
    // Neither A's token, nor the operator's, nor a secret of another provider signs for B.
    for token in ["token-of-tenant-a", OPERATOR_TOKEN, ACCOUNT] {
        assert_eq!(twilio_post(&app, &tenant_route(b.id), &delivered, token, "cb-2").await, 403, "{token}");
    }
    // Nor B's token on A's route (or on the operator's).
    assert_eq!(twilio_post(&app, &tenant_route(a.id), &delivered, "token-of-tenant-b", "cb-3").await, 403);
    assert_eq!(twilio_post(&app, "/v1/providers/twilio/status", &delivered, "token-of-tenant-b", "cb-4").await, 403);
    // An unknown tenant, or none at all, has no integration to sign with.
    assert_eq!(twilio_post(&app, &tenant_route(Uuid::now_v7()), &delivered, OPERATOR_TOKEN, "cb-5").await, 403);
    assert_eq!(app.http.post(app.url("/v1/providers/twilio/status/not-a-tenant")).send().await.unwrap().status(), 404);
    assert_eq!(delivery_status(&app, &b, of_b).await, "sent");

    // B's own callback, with the callback id A used (it is not signed): applied, with
    // either of B's Twilio integrations' tokens.
    assert_eq!(twilio_post(&app, &tenant_route(b.id), &delivered, "token-of-tenant-b", "cb-1").await, 200);
    assert_eq!(delivery_status(&app, &b, of_b).await, "delivered");
    let sid_2 = "SM00000000000000000000000000000b02";
    let second = sent(&app, &b, &sms("+15555550100"), "twilio", sid_2).await;
    let failed = callback(sid_2, "failed");
    assert_eq!(twilio_post(&app, &tenant_route(b.id), &failed, "whatsapp-token-of-b", "cb-6").await, 200);
    assert_eq!(delivery_status(&app, &b, second).await, "failed");
}

#[tokio::test]
async fn a_tenant_receipt_that_comes_before_the_send_keeps_its_tenant() {
    let (app, a, b) = two_tenants().await;
    twilio_integration(&app, &a, "sms", "token-of-tenant-a").await;
    twilio_integration(&app, &b, "sms", "token-of-tenant-b").await;
    let (early_a, early_b) = ("SM000000000000000000000000000000a1", "SM000000000000000000000000000000b1");

    // Receipts first (A's naming a message B is about to record, B's its own), outcomes later.
    let route_a = tenant_route(a.id);
    assert_eq!(twilio_post(&app, &route_a, &callback(early_a, "undelivered"), "token-of-tenant-a", "p-1").await, 200);
    assert_eq!(
        twilio_post(&app, &tenant_route(b.id), &callback(early_b, "delivered"), "token-of-tenant-b", "p-2").await,
        200
    );
    assert_eq!(pending_receipts(&app, early_a).await, [Some(a.id)]);
    assert_eq!(pending_receipts(&app, early_b).await, [Some(b.id)]);

    let first = sent(&app, &b, &sms("+15555550100"), "twilio", early_a).await;
    let second = sent(&app, &b, &sms("+15555550101"), "twilio", early_b).await;
    // What an outcome record does for the message it names (and what the purge does for
    // one whose recorder died): apply the message's pending receipts, each in its scope.
    assert_eq!(app.env.store.apply_claimable_receipts().await.unwrap(), 2);
    assert_eq!(delivery_status(&app, &b, first).await, "sent", "A's receipt moved B's delivery");
    assert_eq!(delivery_status(&app, &b, second).await, "delivered");
    assert!(pending_receipts(&app, early_a).await.is_empty() && pending_receipts(&app, early_b).await.is_empty());
}

#[tokio::test]
async fn a_tenants_twilio_client_asks_for_callbacks_on_the_route_that_checks_its_token() {
    let (app, a, _) = two_tenants().await;
    twilio_integration(&app, &a, "sms", "token-of-tenant-a").await;
    let twilio = MockServer::start().await;
    let sid = "SM000000000000000000000000000000c1";
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": sid, "status": "queued"})))
        .expect(1)
        .mount(&twilio)
        .await;

    // The tenant's client, built from its integration under the operator's rules.
    let rules = providers::IntegrationRules {
        base_urls: [("twilio".to_owned(), twilio.uri())].into(),
        allow_private_hosts: true,
        receipts_url: Some(RECEIPTS_URL.into()),
    };
    let settings = json!({"account_sid": ACCOUNT, "auth_token": "token-of-tenant-a", "from": "+15555550199"});
    let integration = providers::Integration { tenant_id: a.id, settings: &settings, rules: &rules };
    let unit = providers::find(Channel::Sms, "twilio").unwrap();
    let client = providers::http::SharedClient::new(std::time::Duration::from_secs(5));
    let context = providers::Context { http: &client, provider_timeout: std::time::Duration::from_secs(5) };
    let provider = unit.settings(providers::Source::Integration(&integration)).unwrap().build(&context).await.unwrap();
    let of_a = sent(&app, &a, &sms("+15555550100"), "twilio", sid).await;
    let job = DeliveryJob {
        delivery_id: Uuid::now_v7(),
        notification_id: of_a,
        tenant_id: a.id,
        channel: Channel::Sms,
        attempt: 1,
        retry_base: 0,
        recipient: "+15555550100".into(),
        kind: "t".into(),
        priority: Priority::Normal,
        content: Content { text: Some("Hello".into()), ..Default::default() },
        data: Default::default(),
        workflow: None,
        retry: None,
        device: None,
    };
    assert!(matches!(provider.send(&job).await, SendOutcome::Sent(_)));

    let requests = twilio.received_requests().await.unwrap();
    let form: Vec<(String, String)> = form_urlencoded::parse(&requests[0].body).into_owned().collect();
    let status_callback = form.iter().find(|(k, _)| k == "StatusCallback").map(|(_, v)| v.clone());
    assert_eq!(status_callback, Some(format!("{RECEIPTS_URL}/v1/providers/twilio/status/{}", a.id)));
    // Twilio signs its callback over exactly that URL with the tenant's token: the API takes it.
    let route = status_callback.unwrap().strip_prefix(RECEIPTS_URL).unwrap().to_owned();
    assert_eq!(twilio_post(&app, &route, &callback(sid, "delivered"), "token-of-tenant-a", "s-1").await, 200);
    assert_eq!(delivery_status(&app, &a, of_a).await, "delivered");
}

// --- Meta ----------------------------------------------------------------------------

async fn meta_integration(app: &TestApp, tenant: &Tenant, app_secret: &str, verify_token: &str) {
    let settings = json!({"access_token": "meta-access-token", "phone_number_id": "106540352242922",
        "app_secret": app_secret, "verify_token": verify_token});
    put_integration(app, tenant, "/v1/integrations/whatsapp/meta", settings).await;
}

fn meta_statuses(wamid: &str, status: &str) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "statuses": [{"id": wamid, "status": status, "timestamp": "1700000000", "recipient_id": "15555550100"}]}}]}]})
    .to_string()
    .into_bytes()
}

async fn meta_post(app: &TestApp, tenant: Uuid, body: Vec<u8>, secret: &str) -> u16 {
    let signature = format!("sha256={}", hex::encode(hmac::<Sha256>(secret.as_bytes(), &body)));
    let response = app
        .http
        .post(app.url(&format!("/v1/providers/meta/webhook/{tenant}")))
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn a_meta_webhook_is_checked_with_the_tenants_app_secret_and_moves_only_its_deliveries() {
    let (app, a, b) = two_tenants().await;
    meta_integration(&app, &a, "app-secret-of-a", "verify-a").await;
    meta_integration(&app, &b, "app-secret-of-b", "verify-b").await;
    let wamid = "wamid.HBgLMTU1NTU1NTAxMDAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA";
    let whatsapp = json!({"type": "t", "to": [{"whatsapp": "+15555550100"}], "content": {"text": "Hello"}});
    let of_b = sent(&app, &b, &whatsapp, "meta", wamid).await;

    // Meta verifies each tenant's webhook with that tenant's verify token only.
    let verify = |tenant: Uuid, token: &str| {
        app.url(&format!(
            "/v1/providers/meta/webhook/{tenant}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        ))
    };
    let response = app.http.get(verify(b.id, "verify-b")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "1158201444");
    for token in ["verify-a", "operator-verify", ""] {
        assert_eq!(app.http.get(verify(b.id, token)).send().await.unwrap().status(), 403, "{token}");
    }

    // A's webhook naming B's message changes nothing; neither A's nor the operator's app
    // secret signs on B's route.
    assert_eq!(meta_post(&app, a.id, meta_statuses(wamid, "delivered"), "app-secret-of-a").await, 200);
    assert_eq!(delivery_status(&app, &b, of_b).await, "sent");
    assert_eq!(meta_post(&app, b.id, meta_statuses(wamid, "delivered"), "app-secret-of-a").await, 403);
    assert_eq!(meta_post(&app, b.id, meta_statuses(wamid, "delivered"), OPERATOR_APP_SECRET).await, 403);
    assert_eq!(delivery_status(&app, &b, of_b).await, "sent");

    assert_eq!(meta_post(&app, b.id, meta_statuses(wamid, "read"), "app-secret-of-b").await, 200);
    assert_eq!(delivery_status(&app, &b, of_b).await, "delivered");
}
