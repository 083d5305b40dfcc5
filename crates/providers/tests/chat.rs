//! The chat providers (Slack bot token, Slack incoming webhook, Teams Workflows webhook,
//! Discord webhook) built through their units, against wiremock stand-ins: the exact
//! requests, how every answer is sorted, and no secret in any stored failure.

mod common;

use std::{sync::Arc, time::Duration};

use common::{failed, job, refusing_base_url, sent};
use domain::{Channel, DeliveryJob, FailureKind, Provider, SendFailure};
use figment::{Figment, providers::Serialized};
use providers::{
    Context, Integration, IntegrationRules, ProviderSettings, ProviderUnit, Source,
    chat::{DISCORD, SLACK, SLACK_WEBHOOK, TEAMS},
    http::SharedClient,
};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{body_json, header, method, path, query_param},
};

const TOKEN: &str = "xoxb-1234-5678-SeCrEtToKeN";
const POST_MESSAGE: &str = "/chat.postMessage";
/// The secret part of every webhook URL of these tests.
const WEBHOOK_TOKEN: &str = "wHsEcReT-0123456789abcdef";

fn rules(slack_base_url: Option<&str>) -> IntegrationRules {
    IntegrationRules {
        base_urls: slack_base_url.map(|url| [("slack".to_owned(), url.to_owned())].into()).unwrap_or_default(),
        allow_private_hosts: true,
        ..Default::default()
    }
}

fn settings(unit: &dyn ProviderUnit, settings: Value, rules: &IntegrationRules) -> Box<dyn ProviderSettings> {
    let integration = Integration { tenant_id: Uuid::now_v7(), settings: &settings, rules };
    unit.settings(Source::Integration(&integration)).expect("valid settings")
}

async fn build(settings: &dyn ProviderSettings) -> Arc<dyn Provider> {
    let http = SharedClient::new(Duration::from_secs(5));
    let ctx = Context { http: &http, provider_timeout: Duration::from_secs(5) };
    settings.build(&ctx).await.expect("the provider builds")
}

async fn slack(base_url: &str) -> Arc<dyn Provider> {
    build(&*settings(&SLACK, json!({"bot_token": TOKEN}), &rules(Some(base_url)))).await
}

async fn webhook(unit: &dyn ProviderUnit) -> Arc<dyn Provider> {
    build(&*settings(unit, json!({}), &rules(None))).await
}

fn chat_job(recipient: &str, text: &str, structured: Option<Value>) -> DeliveryJob {
    let mut job = job(Channel::Chat, recipient, "auth.token_expired", Some(text), json!({}));
    job.content.structured = structured;
    job
}

/// The job's stored failure holds none of `secrets`, in its code or its message.
fn assert_secret_free(failure: &SendFailure, secrets: &[&str]) {
    for secret in secrets {
        assert!(!failure.message.contains(secret) && !failure.code.contains(secret), "{secret} in {failure:?}");
    }
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording is on")
}

// ---- Slack, bot token ----

#[tokio::test]
async fn slack_posts_escaped_text_and_the_templates_blocks_with_the_bot_token() {
    let server = MockServer::start().await;
    let blocks = json!([{"type": "section", "text": {"type": "plain_text", "text": "Token expired"}}]);
    Mock::given(method("POST"))
        .and(path(POST_MESSAGE))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json; charset=utf-8"))
        .and(body_json(json!({
            "channel": "C024BE91L",
            "text": "Tom &amp; Jerry &lt;!channel&gt; &lt;@U1&gt;",
            "blocks": blocks,
            "unfurl_links": false,
        })))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "channel": "C024BE91L", "ts": "1503435956.000247"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let provider = slack(&server.uri()).await;
    assert_eq!(provider.name(), "slack");
    let job = chat_job("slack:C024BE91L", "Tom & Jerry <!channel> <@U1>", Some(json!({"slack": blocks, "teams": {}})));
    assert_eq!(sent(provider.send(&job).await).provider_message_id, "C024BE91L/1503435956.000247");
}

#[tokio::test]
async fn a_slack_user_id_is_a_direct_message_named_by_the_dm_channel_slack_answers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(POST_MESSAGE))
        .and(body_json(json!({"channel": "U024BE7LH", "text": "hello", "unfurl_links": false})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"ok": true, "channel": "D024BE91L", "ts": "1.2"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let provider = slack(&server.uri()).await;
    assert_eq!(
        sent(provider.send(&chat_job("slack:U024BE7LH", "hello", None)).await).provider_message_id,
        "D024BE91L/1.2"
    );
}

#[tokio::test]
async fn slack_ok_false_is_a_failure_sorted_by_its_error_code() {
    let cases = [
        ("channel_not_found", FailureKind::Permanent),
        ("not_in_channel", FailureKind::Permanent),
        ("is_archived", FailureKind::Permanent),
        ("msg_too_long", FailureKind::Permanent),
        ("no_text", FailureKind::Permanent),
        ("invalid_blocks", FailureKind::Permanent),
        ("user_not_found", FailureKind::Permanent),
        ("invalid_auth", FailureKind::Config),
        ("not_authed", FailureKind::Config),
        ("token_revoked", FailureKind::Config),
        ("token_expired", FailureKind::Config),
        ("account_inactive", FailureKind::Config),
        ("missing_scope", FailureKind::Config),
        ("team_access_not_granted", FailureKind::Config),
        ("internal_error", FailureKind::Ambiguous),
        ("fatal_error", FailureKind::Ambiguous),
        ("service_unavailable", FailureKind::Ambiguous),
    ];
    let server = MockServer::start().await;
    let provider = slack(&server.uri()).await;
    for (error, kind) in cases {
        server.reset().await;
        Mock::given(method("POST"))
            .and(path(POST_MESSAGE))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": error})))
            .mount(&server)
            .await;
        let failure = failed(provider.send(&chat_job("slack:C024BE91L", "hi", None)).await, kind, error);
        assert!(failure.message.contains(error), "{failure:?}");
        assert_secret_free(&failure, &[TOKEN, "SeCrEtToKeN"]);
    }
}

#[tokio::test]
async fn slacks_rate_limit_is_retried_after_its_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(POST_MESSAGE))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "30")
                .set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .mount(&server)
        .await;
    let provider = slack(&server.uri()).await;
    let failure =
        failed(provider.send(&chat_job("slack:C024BE91L", "hi", None)).await, FailureKind::Retryable, "ratelimited");
    assert_eq!(failure.retry_after, Some(Duration::from_secs(30)));

    // A 429 without Slack's body (a proxy's) is the same rate limit.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path(POST_MESSAGE))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "4"))
        .mount(&server)
        .await;
    let failure =
        failed(provider.send(&chat_job("slack:C024BE91L", "hi", None)).await, FailureKind::Retryable, "http_429");
    assert_eq!(failure.retry_after, Some(Duration::from_secs(4)));
}

#[tokio::test]
async fn slack_down_is_ambiguous_and_unreachable_is_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(POST_MESSAGE))
        .respond_with(ResponseTemplate::new(503).set_body_string("<html>upstream</html>"))
        .mount(&server)
        .await;
    failed(
        slack(&server.uri()).await.send(&chat_job("slack:C024BE91L", "hi", None)).await,
        FailureKind::Ambiguous,
        "http_503",
    );
    failed(
        slack(&refusing_base_url()).await.send(&chat_job("slack:C024BE91L", "hi", None)).await,
        FailureKind::Retryable,
        "connect",
    );
}

#[tokio::test]
async fn a_slack_address_that_is_not_a_conversation_id_is_refused_without_a_call() {
    let server = MockServer::start().await;
    let provider = slack(&server.uri()).await;
    failed(provider.send(&chat_job("slack:#general", "hi", None)).await, FailureKind::Permanent, "invalid_address");
    assert!(requests(&server).await.is_empty());
}

fn config(value: Value) -> Figment {
    Figment::from(Serialized::defaults(value))
}

fn check_context(http: &SharedClient) -> Context<'_> {
    Context { http, provider_timeout: Duration::from_secs(5) }
}

#[tokio::test]
async fn slacks_check_is_auth_test_with_the_bot_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth.test"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "url": "https://acme.slack.com/", "team": "Acme", "team_id": "T12345",
            "user": "notify", "user_id": "U12345", "bot_id": "B12345",
        })))
        .expect(1)
        .mount(&server)
        .await;
    // From the operator's settings, with their base URL.
    let figment = config(json!({"chat": {"slack": {"bot_token": TOKEN, "base_url": server.uri()}}}));
    let settings = SLACK.settings(Source::Config(&figment)).unwrap();
    let http = SharedClient::new(Duration::from_secs(5));
    let checked = settings.check(&check_context(&http)).await;
    assert!(checked.ok, "{checked:?}");
    assert_eq!(checked.status, Some(200));
    assert!(checked.detail.contains("Acme") && checked.detail.contains("T12345"), "{checked:?}");
    assert!(!format!("{settings:?}").contains("SeCrEtToKeN"), "{settings:?}");
}

#[tokio::test]
async fn slacks_check_answers_slacks_error_code() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth.test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": "invalid_auth"})))
        .mount(&server)
        .await;
    let settings = settings(&SLACK, json!({"bot_token": TOKEN}), &rules(Some(&server.uri())));
    let http = SharedClient::new(Duration::from_secs(5));
    let checked = settings.check(&check_context(&http)).await;
    assert!(!checked.ok);
    assert_eq!(checked.code.as_deref(), Some("invalid_auth"));
    assert!(!checked.detail.contains("SeCrEtToKeN"), "{checked:?}");
}

// ---- Slack incoming webhooks ----

#[tokio::test]
async fn a_slack_webhook_gets_the_escaped_text_and_blocks_at_its_url() {
    let server = MockServer::start().await;
    let blocks = json!([{"type": "divider"}]);
    let hook = format!("/services/T000/B000/{WEBHOOK_TOKEN}");
    Mock::given(method("POST"))
        .and(path(hook.as_str()))
        .and(body_json(json!({"text": "a &lt;b&gt;", "blocks": blocks})))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let provider = webhook(&SLACK_WEBHOOK).await;
    assert_eq!(provider.name(), "slack_webhook");
    let job = chat_job(&format!("slack_webhook:{}{hook}", server.uri()), "a <b>", Some(json!({"slack": blocks})));
    let id = sent(provider.send(&job).await).provider_message_id;
    assert!(id.starts_with("slack_webhook-"), "{id}");
}

#[tokio::test]
async fn slack_webhook_errors_are_sorted_and_never_show_the_url() {
    let cases = [
        (400, "no_text", FailureKind::Permanent, "no_text"),
        (400, "invalid_payload", FailureKind::Permanent, "invalid_payload"),
        (403, "invalid_token", FailureKind::Permanent, "invalid_token"),
        (404, "no_service", FailureKind::Permanent, "no_service"),
        (404, "channel_not_found", FailureKind::Permanent, "channel_not_found"),
        (410, "channel_is_archived", FailureKind::Permanent, "channel_is_archived"),
        (500, "rollup_error", FailureKind::Ambiguous, "rollup_error"),
        (502, "<html>Bad gateway</html>", FailureKind::Ambiguous, "http_502"),
    ];
    let server = MockServer::start().await;
    let provider = webhook(&SLACK_WEBHOOK).await;
    let url = format!("{}/services/T000/B000/{WEBHOOK_TOKEN}", server.uri());
    for (status, body, kind, code) in cases {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string(body))
            .mount(&server)
            .await;
        let failure = failed(provider.send(&chat_job(&format!("slack_webhook:{url}"), "hi", None)).await, kind, code);
        assert_secret_free(&failure, &[&url, WEBHOOK_TOKEN]);
    }
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7").set_body_string("rate_limited"))
        .mount(&server)
        .await;
    let failure = failed(
        provider.send(&chat_job(&format!("slack_webhook:{url}"), "hi", None)).await,
        FailureKind::Retryable,
        "rate_limited",
    );
    assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));
    // Unreachable: the transport's message names no part of the URL either.
    let dead = format!("{}/services/T000/B000/{WEBHOOK_TOKEN}", refusing_base_url());
    let failure = failed(
        provider.send(&chat_job(&format!("slack_webhook:{dead}"), "hi", None)).await,
        FailureKind::Retryable,
        "connect",
    );
    assert_secret_free(&failure, &[&dead, WEBHOOK_TOKEN]);
}

#[tokio::test]
async fn the_webhook_providers_check_has_nothing_to_prove() {
    let http = SharedClient::new(Duration::from_secs(5));
    for unit in [&SLACK_WEBHOOK as &dyn ProviderUnit, &TEAMS, &DISCORD] {
        let checked = settings(unit, json!({}), &rules(None)).check(&check_context(&http)).await;
        assert!(checked.ok && checked.detail.contains("nothing to check"), "{checked:?}");
    }
}

// ---- Microsoft Teams ----

fn teams_url(server: &MockServer) -> String {
    format!(
        "{}/workflows/abc123def456/triggers/manual/paths/invoke?api-version=2016-06-01&sig={WEBHOOK_TOKEN}",
        server.uri()
    )
}

#[tokio::test]
async fn teams_gets_the_text_as_an_adaptive_card() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/workflows/abc123def456/triggers/manual/paths/invoke"))
        .and(query_param("sig", WEBHOOK_TOKEN))
        .and(body_json(json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{"type": "TextBlock", "text": "Your token expired", "wrap": true}],
                },
            }],
        })))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let provider = webhook(&TEAMS).await;
    assert_eq!(provider.name(), "teams");
    let id = sent(provider.send(&chat_job(&format!("teams:{}", teams_url(&server)), "Your token expired", None)).await)
        .provider_message_id;
    assert!(id.starts_with("teams-"), "{id}");
}

#[tokio::test]
async fn teams_gets_the_templates_card_as_it_is_and_200_counts_as_accepted() {
    let server = MockServer::start().await;
    let card = json!({"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "Custom"}]});
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(1).mount(&server).await;
    let provider = webhook(&TEAMS).await;
    let job = chat_job(&format!("teams:{}", teams_url(&server)), "fallback", Some(json!({"teams": card})));
    sent(provider.send(&job).await);
    let body: Value = serde_json::from_slice(&requests(&server).await[0].body).unwrap();
    assert_eq!(body["attachments"][0]["content"], card);
}

#[tokio::test]
async fn teams_errors_are_sorted_and_never_show_the_url() {
    let server = MockServer::start().await;
    let url = teams_url(&server);
    // Providers quote what they refuse: the URL whole, or parts of it.
    let message = format!("The workflow at '{url}' was not found: 'abc123def456', signature {WEBHOOK_TOKEN}.");
    let echoing = json!({"error": {"code": "WorkflowNotFound", "message": message}});
    let cases = [
        (ResponseTemplate::new(400), FailureKind::Permanent, "http_400"),
        (ResponseTemplate::new(401), FailureKind::Permanent, "http_401"),
        (ResponseTemplate::new(403), FailureKind::Permanent, "http_403"),
        (ResponseTemplate::new(404).set_body_json(echoing), FailureKind::Permanent, "WorkflowNotFound"),
        (ResponseTemplate::new(410), FailureKind::Permanent, "http_410"),
        (ResponseTemplate::new(502), FailureKind::Ambiguous, "http_502"),
    ];
    let provider = webhook(&TEAMS).await;
    for (response, kind, code) in cases {
        server.reset().await;
        Mock::given(method("POST")).respond_with(response).mount(&server).await;
        let failure = failed(provider.send(&chat_job(&format!("teams:{url}"), "hi", None)).await, kind, code);
        assert_secret_free(&failure, &[&url, WEBHOOK_TOKEN, "abc123def456"]);
    }
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "12"))
        .mount(&server)
        .await;
    let failure =
        failed(provider.send(&chat_job(&format!("teams:{url}"), "hi", None)).await, FailureKind::Retryable, "http_429");
    assert_eq!(failure.retry_after, Some(Duration::from_secs(12)));
}

#[tokio::test]
async fn a_teams_card_over_28_kb_is_refused_without_a_call() {
    let server = MockServer::start().await;
    let provider = webhook(&TEAMS).await;
    let job = chat_job(&format!("teams:{}", teams_url(&server)), &"x".repeat(29 * 1024), None);
    failed(provider.send(&job).await, FailureKind::Permanent, "payload_too_large");
    assert!(requests(&server).await.is_empty());
}

// ---- Discord ----

fn discord_url(server: &MockServer) -> String {
    format!("{}/api/webhooks/123456789012/{WEBHOOK_TOKEN}", server.uri())
}

#[tokio::test]
async fn discord_waits_for_the_message_mentions_nobody_and_returns_its_id() {
    let server = MockServer::start().await;
    let embeds = json!([{"title": "Token expired", "description": "Renew it"}]);
    Mock::given(method("POST"))
        .and(path(format!("/api/webhooks/123456789012/{WEBHOOK_TOKEN}").as_str()))
        .and(query_param("wait", "true"))
        .and(body_json(json!({
            "content": "@\u{200B}everyone @\u{200B}here <@80351110224678912> renew",
            "embeds": embeds,
            "allowed_mentions": {"parse": []},
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "1100000000000000001", "type": 0})))
        .expect(1)
        .mount(&server)
        .await;
    let provider = webhook(&DISCORD).await;
    assert_eq!(provider.name(), "discord");
    let job = chat_job(
        &format!("discord:{}", discord_url(&server)),
        "@everyone @here <@80351110224678912> renew",
        Some(json!({"discord": embeds})),
    );
    assert_eq!(sent(provider.send(&job).await).provider_message_id, "1100000000000000001");
    let body = String::from_utf8(requests(&server).await[0].body.clone()).unwrap();
    assert!(!body.contains("@everyone") && !body.contains("@here"), "{body}");
}

#[tokio::test]
async fn a_discord_thread_in_the_url_is_kept_beside_wait() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(query_param("thread_id", "555"))
        .and(query_param("wait", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "7"})))
        .expect(1)
        .mount(&server)
        .await;
    let job = chat_job(&format!("discord:{}?thread_id=555&wait=false", discord_url(&server)), "hi", None);
    assert_eq!(sent(webhook(&DISCORD).await.send(&job).await).provider_message_id, "7");
}

#[tokio::test]
async fn a_discord_success_without_the_message_is_ambiguous() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&server).await;
    let job = chat_job(&format!("discord:{}", discord_url(&server)), "hi", None);
    failed(webhook(&DISCORD).await.send(&job).await, FailureKind::Ambiguous, "no_message_id");
}

#[tokio::test]
async fn discord_text_over_2000_characters_is_refused_without_a_call() {
    let server = MockServer::start().await;
    let provider = webhook(&DISCORD).await;
    let job = chat_job(&format!("discord:{}", discord_url(&server)), &"é".repeat(2001), None);
    failed(provider.send(&job).await, FailureKind::Permanent, "content_too_long");
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn discords_rate_limit_is_retried_after_its_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "2")
                .set_body_json(json!({"message": "You are being rate limited.", "retry_after": 1.5, "global": false})),
        )
        .mount(&server)
        .await;
    let provider = webhook(&DISCORD).await;
    let job = chat_job(&format!("discord:{}", discord_url(&server)), "hi", None);
    // The body's float is the precise delay.
    let failure = failed(provider.send(&job).await, FailureKind::Retryable, "rate_limited");
    assert_eq!(failure.retry_after, Some(Duration::from_millis(1500)));
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3"))
        .mount(&server)
        .await;
    let failure = failed(provider.send(&job).await, FailureKind::Retryable, "rate_limited");
    assert_eq!(failure.retry_after, Some(Duration::from_secs(3)));
}

#[tokio::test]
async fn discord_errors_are_sorted_and_never_show_the_url() {
    let server = MockServer::start().await;
    let url = discord_url(&server);
    let cases = [
        (404, json!({"message": "Unknown Webhook", "code": 10015}), FailureKind::Permanent, "unknown_webhook"),
        (
            401,
            json!({"message": format!("Invalid Webhook Token {WEBHOOK_TOKEN}"), "code": 50027}),
            FailureKind::Permanent,
            "http_401",
        ),
        (403, json!({"message": "Missing Permissions", "code": 50013}), FailureKind::Permanent, "http_403"),
        (400, json!({"message": "Invalid Form Body", "code": 50035}), FailureKind::Permanent, "http_400"),
        (502, json!({"message": format!("upstream {url}")}), FailureKind::Ambiguous, "http_502"),
    ];
    let provider = webhook(&DISCORD).await;
    for (status, body, kind, code) in cases {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&server)
            .await;
        let failure = failed(provider.send(&chat_job(&format!("discord:{url}"), "hi", None)).await, kind, code);
        assert_secret_free(&failure, &[&url, WEBHOOK_TOKEN, "123456789012"]);
    }
}

// ---- What every chat provider shares ----

#[tokio::test]
async fn each_chat_provider_serves_its_own_prefix_only() {
    let providers = [
        slack("http://127.0.0.1:9").await,
        webhook(&SLACK_WEBHOOK).await,
        webhook(&TEAMS).await,
        webhook(&DISCORD).await,
    ];
    let recipients = [
        "slack:C024BE91L",
        "slack_webhook:https://hooks.slack.com/services/T/B/x",
        "teams:https://prod-1.westeurope.logic.azure.com/workflows/x",
        "discord:https://discord.com/api/webhooks/1/x",
    ];
    for (i, recipient) in recipients.iter().enumerate() {
        let job = chat_job(recipient, "hi", None);
        let serving: Vec<&str> = providers.iter().filter(|p| p.serves(&job)).map(|p| p.name()).collect();
        assert_eq!(serving, [providers[i].name()], "{recipient}");
    }
    for other in ["C024BE91L", "slackish:C1", "u@example.org", "discord"] {
        assert!(providers.iter().all(|p| !p.serves(&chat_job(other, "hi", None))), "{other}");
    }
}

#[tokio::test]
async fn without_the_private_hosts_rule_a_webhook_must_be_at_the_providers_host() {
    let server = MockServer::start().await;
    let strict = IntegrationRules::default();
    for (unit, recipient) in [
        (&SLACK_WEBHOOK as &dyn ProviderUnit, format!("slack_webhook:{}/services/T/B/x", server.uri())),
        (&TEAMS, format!("teams:{}", teams_url(&server))),
        (&DISCORD, format!("discord:{}", discord_url(&server))),
    ] {
        let provider = build(&*settings(unit, json!({}), &strict)).await;
        let failure =
            failed(provider.send(&chat_job(&recipient, "hi", None)).await, FailureKind::Permanent, "invalid_address");
        assert_secret_free(&failure, &[&recipient[recipient.find(':').unwrap() + 1..], WEBHOOK_TOKEN]);
    }
    assert!(requests(&server).await.is_empty());
}

// ---- Settings ----

fn config_error(unit: &dyn ProviderUnit, figment: &Figment) -> String {
    unit.settings(Source::Config(figment)).map(drop).unwrap_err().to_string()
}

fn integration_error(unit: &dyn ProviderUnit, settings: Value) -> String {
    let rules = rules(None);
    let integration = Integration { tenant_id: Uuid::now_v7(), settings: &settings, rules: &rules };
    unit.settings(Source::Integration(&integration)).map(drop).unwrap_err().to_string()
}

#[test]
fn slack_settings_from_the_operators_config_name_chat_slack_keys() {
    let ok = config(json!({"chat": {"slack": {"bot_token": TOKEN, "base_url": "http://127.0.0.1:1/api/"}}}));
    assert!(SLACK.settings(Source::Config(&ok)).is_ok());
    let err = config_error(&SLACK, &config(json!({})));
    assert!(err.contains("`chat.slack`") && err.contains("NOTIFY_CHAT__SLACK__*"), "{err}");
    let err = config_error(&SLACK, &config(json!({"chat": {"slack": {"base_url": "https://slack.com/api"}}})));
    assert!(err.contains("`chat.slack.bot_token`") && err.contains("NOTIFY_CHAT__SLACK__BOT_TOKEN"), "{err}");
    let err = config_error(&SLACK, &config(json!({"chat": {"slack": {"bot_token": "xoxp-user-token"}}})));
    assert!(err.contains("chat.slack.bot_token"), "{err}");
    let err = config_error(&SLACK, &config(json!({"chat": {"slack": {"bot_token": TOKEN, "channel": "C1"}}})));
    assert!(err.contains("chat.slack.channel"), "{err}");
    let err = config_error(&SLACK, &config(json!({"chat": {"slack": {"bot_token": TOKEN, "base_url": "slack.com"}}})));
    assert!(err.contains("chat.slack.base_url"), "{err}");
    assert!(!err.contains("SeCrEtToKeN"), "{err}");
}

#[test]
fn webhook_units_take_no_settings() {
    for unit in [&SLACK_WEBHOOK as &dyn ProviderUnit, &TEAMS, &DISCORD] {
        assert!(unit.settings(Source::Config(&config(json!({})))).is_ok(), "{}", unit.name());
        let section = json!({"chat": {unit.name(): {"url": "https://example.org"}}});
        let err = config_error(unit, &config(section));
        assert!(err.contains(&format!("chat.{}.url", unit.name())), "{err}");
        let err = integration_error(unit, json!({"webhook_url": "https://example.org"}));
        assert!(err.contains("settings.webhook_url"), "{err}");
        assert_eq!(unit.channel(), Channel::Chat);
        assert!(unit.secrets().is_empty());
    }
}

#[test]
fn slack_settings_from_an_integration_name_settings_keys() {
    assert!(
        SLACK
            .settings(Source::Integration(&Integration {
                tenant_id: Uuid::now_v7(),
                settings: &json!({"bot_token": TOKEN}),
                rules: &rules(None),
            }))
            .is_ok()
    );
    assert_eq!(SLACK.secrets(), ["bot_token"]);
    let err = integration_error(&SLACK, json!({}));
    assert!(err.contains("settings.bot_token"), "{err}");
    let err = integration_error(&SLACK, json!({"bot_token": 42}));
    assert!(err.contains("settings.bot_token"), "{err}");
    // A tenant cannot point its client elsewhere: the base URL is the operator's.
    let err = integration_error(&SLACK, json!({"bot_token": TOKEN, "base_url": "http://10.0.0.1"}));
    assert!(err.contains("settings.base_url"), "{err}");
    let err = integration_error(&SLACK, json!({"bot_token": TOKEN, "extra": "x"}));
    assert!(err.contains("settings.extra") && !err.contains("SeCrEtToKeN"), "{err}");
}

#[test]
fn the_chat_units_are_in_the_catalog() {
    let names: Vec<&str> = providers::units(Channel::Chat).map(|u| u.name()).collect();
    assert_eq!(names, ["slack", "slack_webhook", "teams", "discord"]);
    assert!(providers::find(Channel::Chat, "discord").is_some());
}
