//! Templates: stored per type, channel and locale, compiled when they are put, and
//! previewed with data.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestApp;

/// Defines a notification type for a tenant directly in the database.
async fn define_type(app: &TestApp, tenant_id: Uuid, key: &str) {
    sqlx::query("INSERT INTO notification_types (tenant_id, key, channels) VALUES ($1, $2, $3)")
        .bind(tenant_id)
        .bind(key)
        .bind(vec!["email".to_owned(), "sms".to_owned()])
        .execute(app.env.store.pool())
        .await
        .unwrap();
}

/// The fields a `422` names, in order.
fn rejected(status: u16, body: &Value) -> Vec<String> {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "validation_failed", "{body}");
    body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

fn invoice_email() -> Value {
    json!({"subject": "Invoice {{ invoice.number }} is overdue",
           "text": "Hello {{ name }}, please pay {{ invoice.amount }}.",
           "html": "<p>Hello {{ name }}</p>"})
}

#[tokio::test]
async fn a_template_is_put_read_and_deleted_per_locale() {
    let app = TestApp::api_only().await;
    define_type(&app, app.tenant_id, "invoice.overdue").await;

    let (status, view) =
        app.call("PUT", "/v1/templates/invoice.overdue/email?locale=pt-br", Some(&invoice_email())).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["type"], "invoice.overdue");
    assert_eq!(view["channel"], "email");
    assert_eq!(view["locale"], "pt-BR");
    assert_eq!(view["content"], invoice_email());
    assert!(view["created_at"].as_str().unwrap().ends_with('Z'), "{view}");

    // Any spelling of the locale names the same template.
    let (status, got) = app.call("GET", "/v1/templates/invoice.overdue/email?locale=PT_BR", None).await;
    assert_eq!((status, &got), (200, &view));

    // Replacing keeps created_at and moves updated_at.
    let replaced = json!({"subject": "Reminder", "text": "Please pay."});
    let (status, again) = app.call("PUT", "/v1/templates/invoice.overdue/email?locale=pt-BR", Some(&replaced)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["content"], replaced);
    assert_eq!(again["created_at"], view["created_at"]);

    // Without a locale: the tenant's default (`en`), a different template.
    let (status, _) = app.call("GET", "/v1/templates/invoice.overdue/email", None).await;
    assert_eq!(status, 404);
    let sms = json!({"text": "Invoice {{ invoice.number }} is overdue"});
    let (status, default) = app.call("PUT", "/v1/templates/invoice.overdue/sms", Some(&sms)).await;
    assert_eq!(status, 200, "{default}");
    assert_eq!(default["locale"], "en");
    let (status, got) = app.call("GET", "/v1/templates/invoice.overdue/sms?locale=en", None).await;
    assert_eq!((status, &got["content"]), (200, &sms));

    let (status, body) = app.call("DELETE", "/v1/templates/invoice.overdue/email?locale=pt-br", None).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = app.call("GET", "/v1/templates/invoice.overdue/email?locale=pt-BR", None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call("DELETE", "/v1/templates/invoice.overdue/email?locale=pt-BR", None).await;
    assert_eq!(status, 404);
    // The other template is still there.
    let (status, _) = app.call("GET", "/v1/templates/invoice.overdue/sms", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_template_that_does_not_compile_is_refused_naming_the_field() {
    let app = TestApp::api_only().await;
    define_type(&app, app.tenant_id, "invoice.overdue").await;
    let broken = json!({"subject": "Invoice {{ number", "text": "fine", "html": "<p>\n{% if paid %}</p>"});
    let (status, body) = app.call("PUT", "/v1/templates/invoice.overdue/email", Some(&broken)).await;
    assert_eq!(rejected(status, &body), ["content.subject", "content.html"]);
    assert!(body["errors"][1]["message"].as_str().unwrap().contains("line 2"), "{body}");
    let (status, _) = app.call("GET", "/v1/templates/invoice.overdue/email", None).await;
    assert_eq!(status, 404, "nothing was stored");
}

#[tokio::test]
async fn bad_paths_and_bodies_are_refused_naming_the_field() {
    let app = TestApp::api_only().await;
    define_type(&app, app.tenant_id, "invoice.overdue").await;
    let put = |path: &'static str, body: Value| {
        let app = &app;
        async move { app.call("PUT", path, Some(&body)).await }
    };

    let (status, body) = put("/v1/templates/no.such.type/email", invoice_email()).await;
    assert_eq!(rejected(status, &body), ["type"]);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("PUT /v1/types/no.such.type"), "{body}");

    let (status, body) = put("/v1/templates/invoice.overdue/pigeon", invoice_email()).await;
    assert_eq!(rejected(status, &body), ["channel"]);
    let (status, body) = app.call("GET", "/v1/templates/invoice.overdue/pigeon", None).await;
    assert_eq!(rejected(status, &body), ["channel"]);

    let (status, body) = put("/v1/templates/invoice.overdue/email?locale=english!", invoice_email()).await;
    assert_eq!(rejected(status, &body), ["locale"]);

    // Fields the channel does not use, and a missing required one.
    let (status, body) = put("/v1/templates/invoice.overdue/sms", invoice_email()).await;
    assert_eq!(rejected(status, &body), ["content.subject", "content.html"]);
    let (status, body) = put("/v1/templates/invoice.overdue/email", json!({"text": "no subject"})).await;
    assert_eq!(rejected(status, &body), ["content.subject"]);
    let (status, body) = put("/v1/templates/invoice.overdue/novu", json!({"text": "x"})).await;
    assert_eq!(rejected(status, &body), ["channel"]);
    let (status, body) = put("/v1/templates/invoice.overdue/email", json!({"subject": "s", "txt": "typo"})).await;
    assert_eq!(rejected(status, &body), ["content.txt"]);
}

#[tokio::test]
async fn preview_renders_inline_sources_escaping_html_only() {
    let app = TestApp::api_only().await;
    let request = json!({"channel": "email",
        "content": {"subject": "Hi {{ subscriber.name }}", "text": "{{ note }}", "html": "<p>{{ note }}</p>"},
        "data": {"note": "Tom & <Jerry>"}, "subscriber": {"name": "<Ada>"}});
    let (status, body) = app.call("POST", "/v1/templates/preview", Some(&request)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"channel": "email", "content": {"subject": "Hi <Ada>", "text": "Tom & <Jerry>",
            "html": "<p>Tom &amp; &lt;Jerry&gt;</p>"}})
    );
}

#[tokio::test]
async fn preview_names_a_missing_variable() {
    let app = TestApp::api_only().await;
    let preview = |data: Value| {
        let app = &app;
        async move {
            let request = json!({"channel": "sms", "content": {"text": "Order {{ order.id }} for {{ customer }}"},
                "data": data});
            app.call("POST", "/v1/templates/preview", Some(&request)).await
        }
    };
    let (status, body) = preview(json!({"customer": "Ada"})).await;
    assert_eq!(rejected(status, &body), ["data.order"]);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("text"), "{body}");
    let (status, body) = preview(json!({"customer": "Ada", "order": {}})).await;
    assert_eq!(rejected(status, &body), ["data.order.id"]);
    let (status, body) = preview(json!({"order": {"id": 7}})).await;
    assert_eq!(rejected(status, &body), ["data.customer"]);
    let (status, body) = preview(json!({"order": {"id": 7}, "customer": "Ada"})).await;
    assert_eq!((status, &body["content"]["text"]), (200, &json!("Order 7 for Ada")), "{body}");

    // Sources that do not compile are named as at PUT time.
    let request = json!({"channel": "sms", "content": {"text": "{{ oops"}});
    let (status, body) = app.call("POST", "/v1/templates/preview", Some(&request)).await;
    assert_eq!(rejected(status, &body), ["content.text"]);
}

#[tokio::test]
async fn preview_of_a_stored_template_follows_the_locale_fallback_chain() {
    let app = TestApp::api_only().await;
    define_type(&app, app.tenant_id, "invoice.overdue").await;
    for (locale, text) in [("en", "Invoice {{ n }} is overdue"), ("pt", "Fatura {{ n }} vencida")] {
        let (status, body) = app
            .call("PUT", &format!("/v1/templates/invoice.overdue/sms?locale={locale}"), Some(&json!({"text": text})))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let preview = |locale: Option<&str>| {
        let mut request = json!({"type": "invoice.overdue", "channel": "sms", "data": {"n": 42}});
        if let Some(locale) = locale {
            request["locale"] = locale.into();
        }
        let app = &app;
        async move { app.call("POST", "/v1/templates/preview", Some(&request)).await }
    };
    let (status, body) = preview(Some("pt-br")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"channel": "sms", "locale": "pt", "content": {"text": "Fatura 42 vencida"}}));
    let (_, body) = preview(Some("de")).await;
    assert_eq!((&body["locale"], &body["content"]["text"]), (&json!("en"), &json!("Invoice 42 is overdue")));
    let (_, body) = preview(None).await;
    assert_eq!(body["locale"], "en");

    // No email template in any locale of the chain; a type that does not exist.
    let request = json!({"type": "invoice.overdue", "channel": "email", "data": {}});
    let (status, body) = app.call("POST", "/v1/templates/preview", Some(&request)).await;
    assert_eq!(rejected(status, &body), ["type"]);
    let request = json!({"type": "nothing", "channel": "sms", "data": {}});
    let (status, body) = app.call("POST", "/v1/templates/preview", Some(&request)).await;
    assert_eq!(rejected(status, &body), ["type"]);
    // Both or neither of type and content.
    let request = json!({"type": "invoice.overdue", "channel": "sms", "content": {"text": "x"}});
    let (status, body) = app.call("POST", "/v1/templates/preview", Some(&request)).await;
    assert_eq!(rejected(status, &body), ["type"]);
    let (status, body) = app.call("POST", "/v1/templates/preview", Some(&json!({"channel": "sms"}))).await;
    assert_eq!(rejected(status, &body), ["type"]);
}

#[tokio::test]
async fn another_tenant_s_templates_are_not_found() {
    let app = TestApp::api_only().await;
    define_type(&app, app.tenant_id, "invoice.overdue").await;
    let (status, _) = app.call("PUT", "/v1/templates/invoice.overdue/email", Some(&invoice_email())).await;
    assert_eq!(status, 200);

    let other = app.env.store.create_tenant("other").await.unwrap();
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut request = app.http.request(method.parse().unwrap(), app.url(path)).bearer_auth(&other.api_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, _) = call("GET", "/v1/templates/invoice.overdue/email", None).await;
    assert_eq!(status, 404);
    let (status, _) = call("DELETE", "/v1/templates/invoice.overdue/email", None).await;
    assert_eq!(status, 404);
    // The other tenant has no such type, so it cannot put one either.
    let (status, body) = call("PUT", "/v1/templates/invoice.overdue/email", Some(invoice_email())).await;
    assert_eq!(rejected(status, &body), ["type"]);
    let preview = json!({"type": "invoice.overdue", "channel": "email", "data": {"name": "x"}});
    let (status, body) = call("POST", "/v1/templates/preview", Some(preview)).await;
    assert_eq!(rejected(status, &body), ["type"]);

    // The owner's template is untouched.
    let (status, body) = app.call("GET", "/v1/templates/invoice.overdue/email", None).await;
    assert_eq!((status, &body["content"]), (200, &invoice_email()));
}
