//! Each HTTP unit's credentials check against a wiremock stand-in: the read-only request it
//! makes, with its auth, what it reports when the provider accepts, and when it refuses (the
//! provider's code and message, never a secret).

use std::time::Duration;

use providers::{Checked, Context, IntegrationRules, ProviderUnit, Source, http::SharedClient};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{basic_auth, bearer_token, header, method, path},
};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

/// Checks `settings` as a tenant's integration of `unit`, its client sent to `server`.
async fn check(unit: &dyn ProviderUnit, server: &MockServer, settings: Value) -> Checked {
    let rules = IntegrationRules {
        base_urls: [(unit.name().to_owned(), server.uri())].into(),
        allow_private_hosts: true,
        ..Default::default()
    };
    let integration = providers::Integration { tenant_id: uuid::Uuid::now_v7(), settings: &settings, rules: &rules };
    let settings = unit.settings(Source::Integration(&integration)).expect("valid settings");
    let http = SharedClient::new(Duration::from_secs(5));
    settings.check(&Context { http: &http, provider_timeout: Duration::from_secs(5) }).await
}

#[tokio::test]
async fn twilio_fetches_the_account() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{ACCOUNT}.json")))
        .and(basic_auth(ACCOUNT, "tenant-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"friendly_name": "Acme", "status": "active"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401,
        })))
        .mount(&server)
        .await;
    let settings = json!({"account_sid": ACCOUNT, "auth_token": "tenant-token", "from": "+15005550000"});
    let ok = check(&providers::twilio::SMS_UNIT, &server, settings.clone()).await;
    assert_eq!((ok.ok, ok.status, ok.detail.as_str()), (true, Some(200), "Acme (active)"), "{ok:?}");

    let wrong = json!({"account_sid": ACCOUNT, "auth_token": "wrong-token", "from": "+15005550000"});
    let refused = check(&providers::twilio::WHATSAPP_UNIT, &server, wrong).await;
    assert_eq!((refused.ok, refused.status, refused.code.as_deref()), (false, Some(401), Some("20003")));
    assert_eq!(refused.detail, "Authenticate");
    assert!(!format!("{refused:?}").contains("wrong-token"));
}

#[tokio::test]
async fn meta_reads_the_phone_number() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v21.0/106540352242922"))
        .and(bearer_token("tenant-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "display_phone_number": "+1 555-010-0000", "verified_name": "Acme", "id": "106540352242922",
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "message": "Error validating access token", "type": "OAuthException", "code": 190,
        }})))
        .mount(&server)
        .await;
    let settings = json!({"access_token": "tenant-token", "phone_number_id": "106540352242922",
        "template_by_type": {"otp": {"name": "otp_code", "language": "en_US", "body_parameters": ["code"]}}});
    let ok = check(&providers::meta::UNIT, &server, settings).await;
    assert_eq!((ok.ok, ok.detail.as_str()), (true, "+1 555-010-0000 (Acme)"), "{ok:?}");

    let wrong = json!({"access_token": "wrong-token", "phone_number_id": "106540352242922"});
    let refused = check(&providers::meta::UNIT, &server, wrong).await;
    assert_eq!((refused.ok, refused.code.as_deref()), (false, Some("190")), "{refused:?}");
    assert!(refused.detail.contains("access token") && !refused.detail.contains("wrong-token"));
}

#[tokio::test]
async fn novu_reads_the_environment_of_its_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/environments/me"))
        .and(header("authorization", "ApiKey tenant-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"name": "Production"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"statusCode": 401, "message": "API Key not found"})),
        )
        .mount(&server)
        .await;
    let ok = check(&providers::novu::UNIT, &server, json!({"api_key": "tenant-key"})).await;
    assert_eq!((ok.ok, ok.detail.as_str()), (true, "environment Production"), "{ok:?}");
    // A tenant's own region: its base URL is used as given.
    let own = json!({"api_key": "wrong-key", "base_url": server.uri()});
    let refused = check(&providers::novu::UNIT, &server, own).await;
    assert_eq!((refused.ok, refused.status, refused.code.as_deref()), (false, Some(401), Some("http_401")));
    assert_eq!(refused.detail, "API Key not found");
}

#[tokio::test]
async fn an_unreachable_provider_is_a_failed_check_naming_the_connection() {
    // A port that was free a moment ago (wiremock reuses its servers, so not a dropped one).
    let uri = format!("http://{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap());
    let rules = IntegrationRules {
        base_urls: [("novu".to_owned(), uri)].into(),
        allow_private_hosts: true,
        ..Default::default()
    };
    let settings = json!({"api_key": "k"});
    let integration = providers::Integration { tenant_id: uuid::Uuid::now_v7(), settings: &settings, rules: &rules };
    let unit = providers::find(domain::Channel::Novu, "novu").expect("in the catalog");
    let http = SharedClient::new(Duration::from_secs(5));
    let checked = unit
        .settings(Source::Integration(&integration))
        .unwrap()
        .check(&Context { http: &http, provider_timeout: Duration::from_secs(5) })
        .await;
    assert_eq!((checked.ok, checked.status, checked.code.as_deref()), (false, None, Some("connect")), "{checked:?}");
}

/// A unit's settings never show a secret, whichever way they are printed.
#[test]
fn settings_never_print_their_secrets() {
    const SECRET: &str = "s3cr3t-value";
    let rules = IntegrationRules::default();
    let cases: [(&dyn ProviderUnit, Value); 6] = [
        (&providers::twilio::SMS_UNIT, json!({"account_sid": ACCOUNT, "auth_token": SECRET, "from": "+15005550000"})),
        (
            &providers::meta::UNIT,
            json!({"access_token": SECRET, "phone_number_id": "1", "app_secret": SECRET, "verify_token": SECRET}),
        ),
        (&providers::novu::UNIT, json!({"api_key": SECRET})),
        (
            &providers::ses::UNIT,
            json!({"region": "eu-west-1", "from": "a@example.com", "access_key_id": "AKIA", "secret_access_key": SECRET}),
        ),
        (&providers::sns::UNIT, json!({"region": "eu-west-1", "access_key_id": "AKIA", "secret_access_key": SECRET})),
        (
            &providers::smtp::UNIT,
            json!({"host": "smtp.example.com", "from": "a@example.com", "username": "u", "password": SECRET}),
        ),
    ];
    for (unit, settings) in cases {
        let integration =
            providers::Integration { tenant_id: uuid::Uuid::now_v7(), settings: &settings, rules: &rules };
        let read = unit.settings(Source::Integration(&integration)).unwrap_or_else(|e| panic!("{}: {e}", unit.name()));
        let printed = format!("{read:?} {read:#?}");
        assert!(!printed.contains(SECRET), "{}: {printed}", unit.name());
        assert!(unit.secrets().iter().all(|key| settings.get(key).is_some() || *key == "api_key_secret"));
    }
}
