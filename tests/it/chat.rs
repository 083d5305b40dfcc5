//! The chat channel end to end: subscribers' chat addresses (checked, webhook URLs sealed
//! and never shown), inline Slack destinations, chat templates with structured JSON, size
//! limits, preferences and erasure, and the worker opening a sealed address.

use crate::harness::TestApp;
use domain::Channel;
use serde_json::{Value, json};

/// The fields a `422` names, in order.
fn fields(status: u16, body: &Value) -> Vec<String> {
    assert_eq!(status, 422, "{body}");
    body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

/// A Discord webhook on loopback (tests allow private hosts), whose token ends in `abcd`.
const DISCORD: &str = "http://127.0.0.1:9/api/webhooks/42/secret-token-abcd";

async fn chat_subscriber(app: &TestApp, id: &str) -> Value {
    let body = json!({"email": "ada@example.com", "chat": {"slack": "U024BE7LH", "discord": DISCORD}});
    let (status, answer) = app.call("PUT", &format!("/v1/subscribers/{id}"), Some(&body)).await;
    assert!(matches!(status, 200 | 201), "{status} {answer}");
    answer
}

async fn column_text(app: &TestApp, sql: &str) -> String {
    sqlx::query_scalar(sql).bind(app.tenant_id).fetch_one(app.env.store.pool()).await.unwrap()
}

#[tokio::test]
async fn a_subscriber_gets_a_chat_delivery_per_chat_address_and_the_worker_opens_the_webhook() {
    let (app, _services) = TestApp::spawn().await;
    let shown = chat_subscriber(&app, "u-1").await;
    assert_eq!(shown["chat"], json!({"slack": "U024BE7LH", "discord": {"webhook": true, "last4": "abcd"}}));
    let (status, got) = app.call("GET", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 200);
    assert_eq!(got["chat"], shown["chat"]);
    assert!(!got.to_string().contains("secret-token"), "{got}");
    let stored = column_text(&app, "SELECT chat::text FROM subscribers WHERE tenant_id = $1").await;
    assert!(!stored.contains("secret-token") && !stored.contains("127.0.0.1"), "{stored}");
    assert!(stored.contains("discord:v1.test."), "{stored}");

    let structured = json!({"slack": [{"type": "section", "text": {"type": "mrkdwn", "text": "Build *green*"}}]});
    let id = app
        .accept(&json!({"type": "build.done", "to": [{"subscriber_id": "u-1"}], "channels": ["chat"],
            "content": {"text": "Build green", "structured": structured}}))
        .await;
    let n = app.wait_for_status(id, "sent").await;
    let mut recipients: Vec<String> =
        n["deliveries"].as_array().unwrap().iter().map(|d| d["recipient"].as_str().unwrap().to_owned()).collect();
    recipients.sort();
    assert_eq!(recipients.len(), 2, "{n:#}");
    assert!(recipients[0].starts_with("discord:v1.test."), "{recipients:?}");
    assert_eq!(recipients[1], "slack:U024BE7LH");
    let delivered = column_text(&app, "SELECT string_agg(recipient, ' ') FROM deliveries WHERE tenant_id = $1").await;
    assert!(!delivered.contains("secret-token"), "{delivered}");

    // The provider (here the sandbox) is given the opened URL (a sealed one would show as
    // `discord:v1.…`), which the sandbox's file does not keep, and the content as sent.
    let mut sent: Vec<Value> = app.sandbox_messages(Channel::Chat);
    sent.sort_by_key(|m| m["to"].as_str().unwrap().to_owned());
    let to: Vec<&str> = sent.iter().map(|m| m["to"].as_str().unwrap()).collect();
    assert_eq!(to, ["discord:<webhook>", "slack:U024BE7LH"]);
    let file = std::fs::read_to_string(app.sandbox_file(Channel::Chat)).unwrap();
    assert!(!file.contains("secret-token"), "{file}");
    assert_eq!(sent[1]["content"]["structured"], structured);

    // A webhook named inline is sealed at accept just the same.
    let inline =
        app.accept(&json!({"type": "t", "to": [{"discord_webhook": DISCORD}], "content": {"text": "inline"}})).await;
    let n = app.wait_for_status(inline, "sent").await;
    let recipient = n["deliveries"][0]["recipient"].as_str().unwrap();
    assert!(recipient.starts_with("discord:v1.test."), "{recipient}");
    let delivered = column_text(&app, "SELECT string_agg(recipient, ' ') FROM deliveries WHERE tenant_id = $1").await;
    assert!(!delivered.contains("secret-token"), "{delivered}");
    let sent = app.sandbox_messages(Channel::Chat);
    let last = sent.iter().find(|m| m["content"]["text"] == "inline").unwrap();
    assert_eq!(last["to"], "discord:<webhook>");
}

#[tokio::test]
async fn a_sealed_address_that_does_not_open_fails_the_delivery_without_showing_it() {
    let (app, _services) = TestApp::spawn().await;
    chat_subscriber(&app, "u-1").await;
    // Another tenant's sealed value (or one altered) does not open for this one.
    sqlx::query(
        "UPDATE subscribers SET chat = jsonb_build_object('discord', jsonb_build_object('to', 'discord:v1.test.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'))
         WHERE tenant_id = $1",
    )
    .bind(app.tenant_id)
    .execute(app.env.store.pool())
    .await
    .unwrap();
    let id = app
        .accept(
            &json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "channels": ["chat"], "content": {"text": "hi"}}),
        )
        .await;
    let n = app.wait_for_status(id, "failed").await;
    let d = &n["deliveries"][0];
    assert_eq!(d["status"], "failed", "{n:#}");
    let view = app.deliveries_with_content(id).await;
    assert_eq!(view[0]["last_error_code"], "address_unreadable", "{view:#?}");
    assert!(!view[0]["last_error_message"].as_str().unwrap().contains("AAAA"));
    assert!(app.sandbox_messages(Channel::Chat).is_empty());
}

#[tokio::test]
async fn bad_chat_addresses_are_refused_naming_the_field() {
    let app = TestApp::api_with(|c| c.integrations.allow_private_hosts = false).await;
    for (chat, field) in [
        (json!({"slack": "#general"}), "chat.slack"),
        (json!({"slack": "https://hooks.slack.com.evil.example/services/x"}), "chat.slack"),
        (json!({"discord": "https://evil.example/api/webhooks/1/x"}), "chat.discord"),
        (json!({"discord": "http://discord.com/api/webhooks/1/x"}), "chat.discord"),
        (json!({"discord": "https://127.0.0.1/api/webhooks/1/x"}), "chat.discord"),
        (json!({"teams": "https://localhost/workflows/x"}), "chat.teams"),
        (json!({"teams": "https://10.0.0.7/workflows/x"}), "chat.teams"),
    ] {
        let (status, body) = app.call("PUT", "/v1/subscribers/u-1", Some(&json!({"chat": chat}))).await;
        assert_eq!(fields(status, &body), [field], "{chat}");
    }
    let (status, _) = app.call("GET", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 404, "nothing half-written");
    // The providers' own hosts are taken.
    let good = json!({"chat": {"slack": "https://hooks.slack.com/services/T0/B0/XXXX",
        "teams": "https://prod-01.westus.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=s1gn",
        "discord": "https://discord.com/api/webhooks/1/tok"}});
    let (status, body) = app.call("PUT", "/v1/subscribers/u-1", Some(&good)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["chat"]["teams"], json!({"webhook": true, "last4": "s1gn"}));
    assert_eq!(body["chat"]["slack"]["webhook"], true);
    assert!(!body.to_string().contains("hooks.slack.com"), "{body}");

    let bad_inline = json!({"type": "t", "to": [{"slack_channel": "general"},
        {"discord_webhook": "https://evil.example/api/webhooks/1/x"}, {"teams_webhook": "https://localhost/x"}],
        "content": {"text": "hi"}});
    let (status, body) = app.post(&bad_inline).await;
    assert_eq!(fields(status, &body), ["to[0].slack_channel", "to[1].discord_webhook", "to[2].teams_webhook"]);

    // A retired Teams connector URL is refused when given, as the provider refuses it.
    let legacy = json!({"chat": {"teams": "https://contoso.webhook.office.com/webhookb2/x"}});
    let (status, body) = app.call("PUT", "/v1/subscribers/u-2", Some(&legacy)).await;
    assert_eq!(fields(status, &body), ["chat.teams"]);
    // Text Discord would refuse (over 2,000 characters) is a 422 now, not a failure at send;
    // the subscriber's Discord webhook is met when planning, an inline one when validating.
    let long = json!({"type": "t", "to": [{"discord_webhook": "https://discord.com/api/webhooks/1/tok"}],
        "content": {"text": "x".repeat(2001)}});
    let (status, body) = app.post(&long).await;
    assert_eq!(fields(status, &body), ["content.text"]);
    let long = json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "channels": ["chat"],
        "content": {"text": "x".repeat(2001)}});
    let (status, body) = app.post(&long).await;
    assert_eq!(fields(status, &body), ["content.text"]);
}

#[tokio::test]
async fn chat_content_sizes_are_checked_at_accept_and_at_template_put() {
    let app = TestApp::api_only().await;
    let to = json!([{"slack_channel": "C0123456789"}]);
    let long = "x".repeat(40_001);
    let cases = [
        (json!({"text": long}), "content.text"),
        (
            json!({"text": "hi", "structured": {"slack": vec![json!({"type": "divider"}); 51]}}),
            "content.structured.slack",
        ),
        (json!({"text": "hi", "structured": {"discord": vec![json!({}); 11]}}), "content.structured.discord"),
        (json!({"text": "hi", "structured": {"teams": {"body": "x".repeat(17 * 1024)}}}), "content.structured"),
        (json!({"text": "hi", "structured": {"whatsapp": []}}), "content.structured.whatsapp"),
    ];
    for (content, field) in &cases {
        let (status, body) = app.post(&json!({"type": "t", "to": to, "channels": ["chat"], "content": content})).await;
        assert_eq!(fields(status, &body), [*field]);
    }
    let (status, _) = app.call("PUT", "/v1/types/t", Some(&json!({"channels": ["chat"]}))).await;
    assert!(matches!(status, 200 | 201));
    for (content, field) in &cases {
        let (status, body) = app.call("PUT", "/v1/templates/t/chat", Some(content)).await;
        assert_eq!(fields(status, &body), [*field]);
    }
}

#[tokio::test]
async fn a_structured_template_renders_values_with_quotes_as_valid_json() {
    let app = TestApp::api_only().await;
    let (status, _) = app.call("PUT", "/v1/types/deploy.done", Some(&json!({"channels": ["chat"]}))).await;
    assert!(matches!(status, 200 | 201));
    let template = json!({"text": "Deployed {{ service }}",
        "structured": {"slack": [{"type": "section", "text": {"type": "mrkdwn", "text": "Deployed *{{ service }}*"}}],
                       "discord": [{"title": "{{ service }}", "description": "by {{ who }}"}]}});
    let (status, body) = app.call("PUT", "/v1/templates/deploy.done/chat", Some(&template)).await;
    assert_eq!(status, 200, "{body}");
    let tricky = r#"api "edge" \ {"x": 1} <!channel> & <https://evil|Click>"#;
    let id = app
        .accept(&json!({"type": "deploy.done", "to": [{"slack_channel": "C0123456789"}],
            "data": {"service": tricky, "who": "Ada\n"}}))
        .await;
    let deliveries = app.deliveries_with_content(id).await;
    let content = &deliveries[0]["content"];
    assert_eq!(deliveries[0]["recipient"], "slack:C0123456789");
    assert_eq!(content["text"], format!("Deployed {tricky}"));
    // Slack's markup is escaped too: no mention, no link from the data.
    let slack_escaped = tricky.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    assert_eq!(content["structured"]["slack"][0]["text"]["text"], format!("Deployed *{slack_escaped}*"));
    assert_eq!(content["structured"]["discord"][0]["title"], tricky);
    assert_eq!(content["structured"]["discord"][0]["description"], "by Ada\n");

    // A template that prints unescaped JSON breaks the document: a render failure, a 422.
    let raw = json!({"text": "x", "structured": {"slack": "{{ blocks | safe }}"}});
    let (status, body) = app.call("PUT", "/v1/templates/deploy.done/chat", Some(&raw)).await;
    assert_eq!(fields(status, &body), ["content.structured.slack"], "a string is no block list");
    let raw = json!({"text": "x", "structured": {"slack": [{"text": "{{ v | safe }}"}]}});
    let (status, body) = app.call("PUT", "/v1/templates/deploy.done/chat", Some(&raw)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post(&json!({"type": "deploy.done", "to": [{"slack_channel": "C0123456789"}], "data": {"v": "\"}]"}}))
        .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn preferences_and_erasure_apply_to_chat() {
    let app = TestApp::api_only().await;
    chat_subscriber(&app, "u-1").await;
    let prefs = json!({"channels": {"chat": false}});
    let (status, body) = app.call("PUT", "/v1/subscribers/u-1/preferences", Some(&prefs)).await;
    assert_eq!(status, 200, "{body}");
    let opted_out = app
        .accept(
            &json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "channels": ["chat"], "content": {"text": "hi"}}),
        )
        .await;
    let n = app.get(opted_out).await;
    let deliveries = n["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{n:#}");
    assert!(deliveries.iter().all(|d| d["status"] == "suppressed"), "{n:#}");

    let (status, _) = app.call("PUT", "/v1/subscribers/u-1/preferences", Some(&json!({}))).await;
    assert_eq!(status, 200);
    let by_id = app
        .accept(
            &json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "channels": ["chat"], "content": {"text": "hi"}}),
        )
        .await;
    // Sent to the same Slack id inline, without naming the subscriber: erased all the same.
    let by_address =
        app.accept(&json!({"type": "t", "to": [{"slack_channel": "U024BE7LH"}], "content": {"text": "hi"}})).await;
    let (status, _) = app.call("DELETE", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 204);
    for id in [opted_out, by_id, by_address] {
        let n = app.get(id).await;
        for d in n["deliveries"].as_array().unwrap() {
            assert_eq!(d["recipient"], "[erased]", "{n:#}");
        }
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers WHERE tenant_id = $1")
        .bind(app.tenant_id)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}
