//! Tenants' integrations through the API: stored with their secrets sealed, shown without
//! them, validated by the provider's unit, kept apart per tenant, checked against a
//! stand-in of the provider, announced on `notify_cache`, and re-sealed by the key rotation.
//!
//! Written against the Twilio SMS unit (`sms`/`twilio`, check = `GET
//! /2010-04-01/Accounts/{sid}.json` with Basic auth).

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use bootstrap::{SecretString, seal::SecretsConfig};
use domain::Channel;
use serde_json::{Value, json};
use store::{IntegrationWrite, integrations::seal_secrets};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{basic_auth, method, path},
};

use crate::harness::{TestApp, TestEnv, test_secrets};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "tok-secret-0123456789-zz91";
const PATH: &str = "/v1/integrations/sms/twilio";

fn twilio(from: &str) -> Value {
    json!({"settings": {"account_sid": SID, "auth_token": TOKEN, "from": from}, "active": true, "order": 0})
}

/// Every log line of this test's thread (the API it spawned runs on it), at every level.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

/// Keeps the capture on for as long as it lives.
pub(crate) struct Capturing {
    _default: tracing::subscriber::DefaultGuard,
    _second: tracing::Dispatch,
}

impl Logs {
    pub(crate) fn capture() -> (Self, Capturing) {
        // With a single dispatcher registered, tracing takes it for the global one and sets
        // each call site's interest from whatever thread reaches it first: one of the tests
        // running beside this one, which has none, would switch it off for good. A second
        // dispatcher, kept alive, makes it ask every live dispatcher, this one included.
        let second = tracing::Dispatch::new(tracing_subscriber::registry());
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .finish();
        (logs, Capturing { _default: tracing::subscriber::set_default(subscriber), _second: second })
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the database holds of the tenant's integration, as text.
async fn stored_row(env: &TestEnv, tenant: uuid::Uuid) -> String {
    let row: (String,) = sqlx::query_as(
        "SELECT row_to_json(i)::text FROM integrations i WHERE tenant_id = $1 AND channel = 'sms' AND provider = 'twilio'",
    )
    .bind(tenant)
    .fetch_one(env.store.pool())
    .await
    .unwrap();
    row.0
}

async fn call_as(app: &TestApp, key: &str, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = app.http.request(method, app.url(path)).bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_integration_round_trips_and_its_secret_is_never_shown_logged_or_stored_in_clear() {
    let (logs, _guard) = Logs::capture();
    let app = TestApp::api_only().await;

    let (status, created) = app.call("PUT", PATH, Some(&twilio("+15550001111"))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["settings"], json!({"account_sid": SID, "from": "+15550001111"}));
    assert_eq!(created["secrets"]["auth_token"], json!({"set": true, "last4": "zz91"}));
    assert_eq!(created["secrets"]["api_key_secret"], json!({"set": false}));
    assert_eq!((created["active"].clone(), created["order"].clone()), (json!(true), json!(0)));

    let (status, one) = app.call("GET", PATH, None).await;
    assert_eq!(status, 200);
    assert_eq!(one, created);
    let (status, all) = app.call("GET", "/v1/integrations", None).await;
    assert_eq!(status, 200);
    assert_eq!(all, json!([created]));
    for body in [&created, &one, &all] {
        assert!(!body.to_string().contains(TOKEN), "{body}");
    }
    let row = stored_row(&app.env, app.tenant_id).await;
    assert!(!row.contains(TOKEN) && row.contains("v1.test."), "{row}");

    // The sender changes without the token: the stored one is kept, as it was sealed.
    let sealed_before = app.env.store.get_integration(app.tenant_id, Channel::Sms, "twilio").await.unwrap().unwrap();
    let change = json!({"settings": {"account_sid": SID, "from": "+15550002222"}, "active": false, "order": 3});
    let (status, changed) = app.call("PUT", PATH, Some(&change)).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["settings"]["from"], "+15550002222");
    assert_eq!(changed["secrets"]["auth_token"], json!({"set": true, "last4": "zz91"}));
    assert_eq!((changed["active"].clone(), changed["order"].clone()), (json!(false), json!(3)));
    let stored = app.env.store.get_integration(app.tenant_id, Channel::Sms, "twilio").await.unwrap().unwrap();
    assert_eq!(stored.secrets, sealed_before.secrets);
    assert!(stored.version > sealed_before.version);
    let keyring = test_secrets().keyring().unwrap().unwrap();
    let opened = stored.open(&keyring).unwrap();
    assert_eq!(opened, json!({"account_sid": SID, "auth_token": TOKEN, "from": "+15550002222"}));

    assert_eq!(app.call("DELETE", PATH, None).await.0, 204);
    assert_eq!(app.call("GET", PATH, None).await.0, 404);
    assert_eq!(app.call("DELETE", PATH, None).await.0, 404);
    assert_eq!(app.call("GET", "/v1/integrations", None).await.1, json!([]));

    let logs = logs.text();
    assert!(
        logs.contains("integration stored") && logs.contains("integration deleted"),
        "the API's logs were captured"
    );
    assert!(!logs.contains(TOKEN), "the token is in the logs");
}

#[tokio::test]
async fn invalid_settings_are_a_422_naming_the_field_and_store_nothing() {
    let app = TestApp::api_only().await;
    let field = |body: &Value| body["errors"][0]["field"].as_str().unwrap_or_default().to_owned();

    let missing = json!({"settings": {"auth_token": TOKEN, "from": "+15550001111"}});
    let (status, body) = app.call("PUT", PATH, Some(&missing)).await;
    assert_eq!((status, field(&body).as_str()), (422, "settings.account_sid"), "{body}");

    let wrong = json!({"settings": {"account_sid": "XX123", "auth_token": TOKEN, "from": "+15550001111"}});
    let (status, body) = app.call("PUT", PATH, Some(&wrong)).await;
    assert_eq!((status, field(&body).as_str()), (422, "settings.account_sid"), "{body}");
    assert!(!body.to_string().contains(TOKEN));
    // A tenant's client calls Twilio, not an address of the tenant's choosing.
    let elsewhere =
        json!({"settings": {"account_sid": SID, "auth_token": TOKEN, "from": "+1555", "base_url": "http://10.0.0.1"}});
    let (status, body) = app.call("PUT", PATH, Some(&elsewhere)).await;
    assert_eq!((status, field(&body).as_str()), (422, "settings.base_url"), "{body}");

    let (status, body) = app.call("PUT", "/v1/integrations/sms/pigeon", Some(&twilio("+15550001111"))).await;
    assert_eq!((status, field(&body).as_str()), (422, "provider"), "{body}");
    let (status, body) = app.call("PUT", "/v1/integrations/fax/twilio", Some(&twilio("+15550001111"))).await;
    assert_eq!((status, field(&body).as_str()), (422, "channel"), "{body}");
    let (status, body) = app.call("PUT", PATH, Some(&json!({"settings": {}, "colour": "red"}))).await;
    assert_eq!((status, field(&body).as_str()), (422, "colour"), "{body}");

    assert_eq!(app.call("GET", "/v1/integrations", None).await.1, json!([]), "nothing was stored");
}

#[tokio::test]
async fn another_tenant_can_neither_see_nor_change_an_integration() {
    let app = TestApp::api_only().await;
    assert_eq!(app.call("PUT", PATH, Some(&twilio("+15550001111"))).await.0, 201);
    let other = app.env.store.create_tenant("other").await.unwrap();

    let key = &other.api_key;
    assert_eq!(call_as(&app, key, reqwest::Method::GET, PATH).await.0, 404);
    assert_eq!(call_as(&app, key, reqwest::Method::GET, "/v1/integrations").await.1, json!([]));
    assert_eq!(call_as(&app, key, reqwest::Method::POST, &format!("{PATH}/check")).await.0, 404);
    assert_eq!(call_as(&app, key, reqwest::Method::DELETE, PATH).await.0, 404);

    // Its own integration of the same provider is its own: the first tenant's is unchanged.
    let response = app
        .http
        .put(app.url(PATH))
        .bearer_auth(key)
        .json(
            &json!({"settings": {"account_sid": SID, "auth_token": "other-tenant-token-0000", "from": "+15559999999"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let (status, ours) = app.call("GET", PATH, None).await;
    assert_eq!(status, 200);
    assert_eq!(ours["settings"]["from"], "+15550001111");
    assert_eq!(ours["secrets"]["auth_token"]["last4"], "zz91");
}

#[tokio::test]
async fn a_check_answers_what_the_provider_said_and_sends_nothing() {
    let twilio_api = MockServer::start().await;
    let account = format!("/2010-04-01/Accounts/{SID}.json");
    Mock::given(method("GET"))
        .and(path(account.as_str()))
        .and(basic_auth(SID, TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"friendly_name": "Acme", "status": "active"})))
        .mount(&twilio_api)
        .await;
    Mock::given(method("GET"))
        .and(path(account.as_str()))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
        )
        .mount(&twilio_api)
        .await;
    let uri = twilio_api.uri();
    let app = TestApp::api_with(|c| drop(c.integrations.base_urls.insert("twilio".into(), uri))).await;
    let check = format!("{PATH}/check");
    assert_eq!(app.call("POST", &check, None).await.0, 404, "nothing to check yet");

    assert_eq!(app.call("PUT", PATH, Some(&twilio("+15550001111"))).await.0, 201);
    let (status, checked) = app.call("POST", &check, None).await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["ok"], true, "{checked}");
    assert!(checked["detail"].as_str().unwrap().contains("Acme"), "{checked}");

    let wrong =
        json!({"settings": {"account_sid": SID, "auth_token": "a-revoked-token-00000000", "from": "+15550001111"}});
    assert_eq!(app.call("PUT", PATH, Some(&wrong)).await.0, 200);
    let (status, checked) = app.call("POST", &check, None).await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!((checked["ok"].clone(), checked["status"].clone()), (json!(false), json!(401)), "{checked}");
    assert_eq!(checked["code"], "20003");
    assert!(!checked.to_string().contains("a-revoked-token"));

    let requests = twilio_api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.method.as_str() == "GET"), "a check sends nothing");
}

#[tokio::test]
async fn without_a_sealing_key_an_integration_cannot_be_stored() {
    let app = TestApp::api_with(|c| c.secrets = SecretsConfig::default()).await;
    let (status, body) = app.call("PUT", PATH, Some(&twilio("+15550001111"))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("secrets_not_configured")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("secrets.keys"));
}

#[tokio::test]
async fn a_change_names_the_tenant_and_channel_on_notify_cache() {
    let env = TestEnv::new().await;
    let tenant = env.store.create_tenant("t").await.unwrap().tenant_id;
    let mut listener = store::PgListener::connect(&env.database_url).await.unwrap();
    listener.listen(store::CACHE_CHANNEL).await.unwrap();
    let keyring = test_secrets().keyring().unwrap().unwrap();
    let plain = json!({"auth_token": TOKEN});
    let (secrets, hints) = seal_secrets(&keyring, tenant, Channel::Sms, "twilio", plain.as_object().unwrap());
    let settings = json!({"account_sid": SID}).as_object().unwrap().clone();
    let write = IntegrationWrite { settings: &settings, secrets: &secrets, hints: &hints, active: true, position: 0 };
    env.store.put_integration(tenant, Channel::Sms, "twilio", &write, None).await.unwrap().unwrap();

    let heard = tokio::time::timeout(crate::harness::DEADLINE, listener.recv()).await.unwrap().unwrap();
    assert_eq!(heard.payload(), format!("integration:{tenant}:sms"));
    assert_eq!(
        store::CacheEvent::parse(heard.payload()),
        store::CacheEvent::Integration { tenant_id: tenant, channel: "sms".into() }
    );
    assert!(env.store.delete_integration(tenant, Channel::Sms, "twilio").await.unwrap());
    let heard = tokio::time::timeout(crate::harness::DEADLINE, listener.recv()).await.unwrap().unwrap();
    assert_eq!(heard.payload(), format!("integration:{tenant}:sms"));
}

/// Keys `(id, byte)` of 32 times that byte, sealing with `current`.
pub(crate) fn keys(current: &str, keys: &[(&str, u8)]) -> SecretsConfig {
    use base64::Engine;
    SecretsConfig {
        current: Some(current.into()),
        keys: keys
            .iter()
            .map(|(id, byte)| {
                (id.to_string(), SecretString::from(base64::engine::general_purpose::STANDARD.encode([*byte; 32])))
            })
            .collect(),
    }
}

#[tokio::test]
async fn rotation_reseals_every_secret_with_the_current_key_once() {
    let env = TestEnv::new().await;
    let old = keys("k1", &[("k1", 1)]).keyring().unwrap().unwrap();
    let settings = json!({"account_sid": SID}).as_object().unwrap().clone();
    let mut tenants = Vec::new();
    for name in ["a", "b", "c"] {
        let tenant = env.store.create_tenant(name).await.unwrap().tenant_id;
        let plain = json!({"auth_token": format!("{TOKEN}-{name}")});
        let (secrets, hints) = seal_secrets(&old, tenant, Channel::Sms, "twilio", plain.as_object().unwrap());
        let write =
            IntegrationWrite { settings: &settings, secrets: &secrets, hints: &hints, active: true, position: 0 };
        env.store.put_integration(tenant, Channel::Sms, "twilio", &write, None).await.unwrap().unwrap();
        tenants.push((tenant, name));
    }

    // One sealed with a key no longer configured: reported, skipped, never looped on.
    let lost = keys("k0", &[("k0", 9)]).keyring().unwrap().unwrap();
    let orphan = env.store.create_tenant("orphan").await.unwrap().tenant_id;
    let (secrets, hints) =
        seal_secrets(&lost, orphan, Channel::Sms, "twilio", json!({"auth_token": TOKEN}).as_object().unwrap());
    let write = IntegrationWrite { settings: &settings, secrets: &secrets, hints: &hints, active: true, position: 0 };
    env.store.put_integration(orphan, Channel::Sms, "twilio", &write, None).await.unwrap().unwrap();
    let before = env.store.get_integration(tenants[0].0, Channel::Sms, "twilio").await.unwrap().unwrap();

    let both = keys("k2", &[("k1", 1), ("k2", 2)]).keyring().unwrap().unwrap();
    // Batches of two: the second batch starts after the first.
    let done = notify_api::rotation::rotate(&env.store, &both, 2).await.unwrap();
    assert_eq!(done.integrations, notify_api::rotation::Counts { resealed: 3, changed: 0, unreadable: 1 });
    // A row is re-sealed only as it was read: a stale copy changes nothing.
    assert!(!env.store.reseal_integration(&before, &before.secrets).await.unwrap());

    let new = keys("k2", &[("k2", 2)]).keyring().unwrap().unwrap();
    for (tenant, name) in &tenants {
        let stored = env.store.get_integration(*tenant, Channel::Sms, "twilio").await.unwrap().unwrap();
        assert!(stored.secrets["auth_token"].starts_with("v1.k2."), "{:?}", stored.secrets);
        let opened = stored.open(&new).unwrap();
        assert_eq!(opened["auth_token"], format!("{TOKEN}-{name}"));
        let key_ids: (Vec<String>,) = sqlx::query_as("SELECT key_ids FROM integrations WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(env.store.pool())
            .await
            .unwrap();
        assert_eq!(key_ids.0, ["k2"]);
    }
    let again = notify_api::rotation::rotate(&env.store, &both, 2).await.unwrap();
    assert_eq!(again.integrations, notify_api::rotation::Counts { unreadable: 1, ..Default::default() }, "idempotent");
}

#[tokio::test]
async fn a_secret_set_to_null_is_removed_and_one_that_no_longer_opens_must_be_sent_again() {
    let app = TestApp::api_only().await;
    assert_eq!(app.call("PUT", PATH, Some(&twilio("+15550001111"))).await.0, 201);
    // Without its token the integration is incomplete: refused, and the stored one stays.
    let without = json!({"settings": {"account_sid": SID, "auth_token": null, "from": "+15550001111"}});
    let (status, body) = app.call("PUT", PATH, Some(&without)).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("settings.auth_token")), "{body}");
    assert_eq!(app.call("GET", PATH, None).await.1["secrets"]["auth_token"]["set"], true);
    // An API key instead of the token: the token is removed.
    let key = json!({"settings": {"account_sid": SID, "auth_token": null, "api_key_sid": "SK0123456789abcdef0123456789abcdef",
        "api_key_secret": "key-secret-0123456789-ab77", "from": "+15550001111"}});
    let (status, body) = app.call("PUT", PATH, Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["secrets"],
        json!({"auth_token": {"set": false}, "api_key_secret": {"set": true, "last4": "ab77"}})
    );

    // Sealed with a key the API no longer has (removed before rotating): a change that
    // keeps it cannot be checked, and says to send it again.
    let lost = keys("gone", &[("gone", 7)]).keyring().unwrap().unwrap();
    let plain = json!({"api_key_secret": "key-secret-0123456789-ab77"});
    let (secrets, hints) = seal_secrets(&lost, app.tenant_id, Channel::Sms, "twilio", plain.as_object().unwrap());
    sqlx::query("UPDATE integrations SET secrets = $2, hints = $3 WHERE tenant_id = $1")
        .bind(app.tenant_id)
        .bind(sqlx::types::Json(&secrets))
        .bind(sqlx::types::Json(&hints))
        .execute(app.env.store.pool())
        .await
        .unwrap();
    let change = json!({"settings": {"account_sid": SID, "api_key_sid": "SK0123456789abcdef0123456789abcdef", "from": "+15550002222"}});
    let (status, body) = app.call("PUT", PATH, Some(&change)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("secret_unreadable")), "{body}");
    let (status, body) = app.call("POST", &format!("{PATH}/check"), None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("secret_unreadable")), "{body}");
    let resend = json!({"settings": {"account_sid": SID, "api_key_sid": "SK0123456789abcdef0123456789abcdef",
        "api_key_secret": "key-secret-0123456789-ab77", "from": "+15550002222"}});
    assert_eq!(app.call("PUT", PATH, Some(&resend)).await.0, 200);
}

/// A tenant's client resolves hosts itself and refuses internal addresses: a name that
/// resolves to loopback (`localhost`, here the operator's stand-in base URL) is never
/// reached by a check unless `integrations.allow_private_hosts`.
#[tokio::test]
async fn a_check_never_reaches_a_host_that_resolves_to_an_internal_address() {
    let stand_in = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(200)).mount(&stand_in).await;
    let internal = format!("http://localhost:{}", stand_in.address().port());
    let app = TestApp::api_with(|c| {
        c.integrations.allow_private_hosts = false;
        c.integrations.base_urls.insert("twilio".into(), internal);
    })
    .await;
    assert_eq!(app.call("PUT", PATH, Some(&twilio("+15550001111"))).await.0, 201);
    let (status, checked) = app.call("POST", &format!("{PATH}/check"), None).await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!((checked["ok"].clone(), checked["code"].clone()), (json!(false), json!("private_host")), "{checked}");
    assert!(checked["detail"].as_str().unwrap().contains("`localhost`"), "{checked}");
    assert!(stand_in.received_requests().await.unwrap().is_empty(), "nothing reached the internal host");
}

/// A tenant's SMTP server listens on a mail port and is reached with TLS.
#[tokio::test]
async fn a_tenants_smtp_server_takes_a_mail_port_and_tls() {
    if providers::find(Channel::Email, "smtp").is_none() {
        return;
    }
    let app = TestApp::api_with(|c| c.integrations.allow_private_hosts = false).await;
    let field = |body: &Value| body["errors"][0]["field"].as_str().unwrap_or_default().to_owned();
    let path = "/v1/integrations/email/smtp";
    let smtp = |port: u16, tls: &str| json!({"settings": {"host": "smtp.example.com", "port": port, "tls": tls, "from": "noreply@example.com"}});
    let (status, body) = app.call("PUT", path, Some(&smtp(6379, "starttls"))).await;
    assert_eq!((status, field(&body).as_str()), (422, "settings.port"), "{body}");
    let (status, body) = app.call("PUT", path, Some(&smtp(25, "none"))).await;
    assert_eq!((status, field(&body).as_str()), (422, "settings.tls"), "{body}");
    assert_eq!(app.call("GET", "/v1/integrations", None).await.1, json!([]), "nothing was stored");
    assert_eq!(app.call("PUT", path, Some(&smtp(2525, "starttls"))).await.0, 201);
}

/// Each check calls the provider: a tenant's checks are rate-limited (`admission.check_rate`).
#[tokio::test]
async fn checks_past_the_tenants_rate_are_a_429() {
    let app = TestApp::api_with(|c| c.admission.check_rate = notify_api::Rate { per_second: 1, burst: 1 }).await;
    assert_eq!(app.call("PUT", PATH, Some(&twilio("+15550001111"))).await.0, 201);
    let check = format!("{PATH}/check");
    assert_eq!(app.call("POST", &check, None).await.0, 200);
    let response = app.http.post(app.url(&check)).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
}
