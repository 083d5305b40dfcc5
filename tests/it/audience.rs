//! Who gets what: notifications sent by subscriber id and topic, rendered from the type's
//! templates in the subscriber's locale, filtered by preferences, deferred by quiet hours.

use std::time::Duration;

use domain::Channel;
use serde_json::{Value, json};
use worker::{SandboxConfig, SandboxFailure};

use crate::harness::{NOTIFIED, TestApp, WorkerOptions, within};

impl TestApp {
    async fn put(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.call("PUT", path, Some(&body)).await;
        assert!(matches!(status, 200 | 201), "PUT {path}: {status} {answer}");
        answer
    }

    /// The type `invoice.overdue` on `channels`, with English email and SMS templates.
    async fn invoice_type(&self, channels: &[&str]) {
        self.put("/v1/types/invoice.overdue", json!({"channels": channels})).await;
        self.put(
            "/v1/templates/invoice.overdue/email",
            json!({"subject": "Invoice {{ number }} is overdue", "text": "Hello {{ name }}, please pay {{ amount }}.",
                   "html": "<p>Hello {{ name }}, please pay <b>{{ amount }}</b>.</p>"}),
        )
        .await;
        self.put("/v1/templates/invoice.overdue/sms", json!({"text": "Invoice {{ number }}: pay {{ amount }}"})).await;
    }

    /// Inserts `count` subscribers `m-0`... with addresses, all members of `topic`, in two
    /// statements (set-up, not what the test checks).
    async fn topic_of(&self, topic: &str, count: i32) {
        let pool = self.env.store.pool();
        sqlx::query(
            "INSERT INTO subscribers (tenant_id, id, email) SELECT $1, 'm-' || i, 'member' || i || '@example.com'
             FROM generate_series(0, $2 - 1) i",
        )
        .bind(self.tenant_id)
        .bind(count)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO topic_members (tenant_id, topic, subscriber_id) SELECT $1, $2, 'm-' || i
             FROM generate_series(0, $3 - 1) i",
        )
        .bind(self.tenant_id)
        .bind(topic)
        .bind(count)
        .execute(pool)
        .await
        .unwrap();
    }
}

fn invoice(to: Value) -> Value {
    json!({"type": "invoice.overdue", "to": to, "data": {"number": "F-7", "name": "Ada", "amount": "12 EUR"}})
}

/// (channel, status, reason) of each delivery, in the order of the answer.
fn outcomes(notification: &Value) -> Vec<(String, String, Option<String>)> {
    notification["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["channel"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
                d["last_error_code"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_notification_by_subscriber_id_is_rendered_from_the_template_and_sent() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    app.invoice_type(&["email"]).await;
    app.put("/v1/subscribers/u-42", json!({"email": "ada@example.com", "locale": "en-GB"})).await;

    let id = app.accept(&invoice(json!([{"subscriber_id": "u-42"}]))).await;
    app.wait_for_status(id, "sent").await;
    let delivery = &app.deliveries_with_content(id).await[0];
    assert_eq!(delivery["recipient"], "ada@example.com");
    assert_eq!(delivery["subscriber_id"], "u-42");
    assert_eq!(delivery["locale"], "en");
    assert_eq!(delivery["content"]["subject"], "Invoice F-7 is overdue");

    // What the provider got is what was stored.
    let sent = app.sandbox_messages(Channel::Email);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["content"]["subject"], "Invoice F-7 is overdue");
    assert_eq!(sent[0]["content"]["text"], "Hello Ada, please pay 12 EUR.");
}

#[tokio::test]
async fn a_topic_of_ten_thousand_fans_out_in_one_request_without_duplicates() {
    let app = TestApp::api_only().await;
    app.invoice_type(&["email"]).await;
    app.topic_of("customers", 10_000).await;

    // m-7 is named again by id and by its address: it still gets one email.
    let (status, answer) = app
        .post(&invoice(json!([{"topic": "customers"}, {"subscriber_id": "m-7"}, {"email": "member7@example.com"},
                              {"email": "outsider@example.com"}])))
        .await;
    assert_eq!(status, 202, "{answer}");
    let deliveries = answer["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 10_001);
    let recipients: std::collections::HashSet<&str> =
        deliveries.iter().map(|d| d["recipient"].as_str().unwrap()).collect();
    assert_eq!(recipients.len(), 10_001);
    assert!(recipients.contains("outsider@example.com"));

    let (outbox,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(app.env.store.pool()).await.unwrap();
    assert_eq!(outbox, 10_001);
    let (rendered,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM deliveries WHERE content->>'subject' = 'Invoice F-7 is overdue' AND locale = 'en'",
    )
    .fetch_one(app.env.store.pool())
    .await
    .unwrap();
    assert_eq!(rendered, 10_001);
}

#[tokio::test]
async fn audience_selects_the_tenants_support_topic() {
    let app = TestApp::api_only().await;
    app.invoice_type(&["email"]).await;
    app.topic_of("support", 3).await;
    app.topic_of("customer", 0).await;

    let mut body = invoice(Value::Null);
    body.as_object_mut().unwrap().remove("to");
    body["audience"] = "support".into();
    let (status, answer) = app.post(&body).await;
    assert_eq!(status, 202, "{answer}");
    let mut ids: Vec<&str> =
        answer["deliveries"].as_array().unwrap().iter().map(|d| d["subscriber_id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["m-0", "m-1", "m-2"]);

    // An empty topic leaves nobody to notify.
    body["audience"] = "customer".into();
    let (status, answer) = app.post(&body).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "to");
}

#[tokio::test]
async fn templates_fall_back_from_the_subscribers_locale_to_its_language_to_the_tenant_default() {
    let app = TestApp::api_only().await;
    app.invoice_type(&["email"]).await;
    app.put(
        "/v1/templates/invoice.overdue/email?locale=pt",
        json!({"subject": "Fatura {{ number }}", "text": "Pague"}),
    )
    .await;
    app.put(
        "/v1/templates/invoice.overdue/email?locale=de-AT",
        json!({"subject": "Rechnung {{ number }}", "text": "Zahlen"}),
    )
    .await;
    app.put("/v1/subscribers/br", json!({"email": "br@example.com", "locale": "pt-BR"})).await;
    app.put("/v1/subscribers/at", json!({"email": "at@example.com", "locale": "de-AT"})).await;
    app.put("/v1/subscribers/de", json!({"email": "de@example.com", "locale": "de-DE"})).await;
    app.put("/v1/subscribers/none", json!({"email": "none@example.com"})).await;

    let id = app
        .accept(&invoice(json!([{"subscriber_id": "br"}, {"subscriber_id": "at"}, {"subscriber_id": "de"},
                                 {"subscriber_id": "none"}])))
        .await;
    let deliveries = app.deliveries_with_content(id).await;
    let rendered: Vec<(&str, &str, &str)> = deliveries
        .iter()
        .map(|d| {
            (
                d["subscriber_id"].as_str().unwrap(),
                d["locale"].as_str().unwrap(),
                d["content"]["subject"].as_str().unwrap(),
            )
        })
        .collect();
    let mut rendered = rendered;
    rendered.sort();
    assert_eq!(
        rendered,
        [
            ("at", "de-AT", "Rechnung F-7"),
            ("br", "pt", "Fatura F-7"),
            ("de", "en", "Invoice F-7 is overdue"),
            ("none", "en", "Invoice F-7 is overdue"),
        ]
    );
}

#[tokio::test]
async fn a_variable_missing_from_data_is_refused_at_accept_and_data_is_escaped_in_html_only() {
    let app = TestApp::api_only().await;
    app.invoice_type(&["email"]).await;
    app.put("/v1/subscribers/u-1", json!({"email": "a@example.com"})).await;

    let mut body = invoice(json!([{"subscriber_id": "u-1"}]));
    body["data"].as_object_mut().unwrap().remove("amount");
    let (status, answer) = app.post(&body).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "data.amount", "{answer}");
    let (notifications,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM notifications").fetch_one(app.env.store.pool()).await.unwrap();
    assert_eq!(notifications, 0, "nothing is written for a refused notification");

    let mut body = invoice(json!([{"subscriber_id": "u-1"}]));
    body["data"]["name"] = "<script>alert(1)</script>".into();
    let deliveries = app.deliveries_with_content(app.accept(&body).await).await;
    let content = &deliveries[0]["content"];
    assert_eq!(content["html"], "<p>Hello &lt;script&gt;alert(1)&lt;&#x2f;script&gt;, please pay <b>12 EUR</b>.</p>");
    assert_eq!(content["text"], "Hello <script>alert(1)</script>, please pay 12 EUR.");
}

#[tokio::test]
async fn preferences_opt_out_per_channel_and_per_type_but_critical_types_ignore_them() {
    let app = TestApp::api_only().await;
    app.invoice_type(&["email", "sms"]).await;
    app.put("/v1/types/security.alert", json!({"channels": ["email", "sms"], "critical": true})).await;
    app.put("/v1/templates/security.alert/email", json!({"subject": "New sign-in", "text": "Was it you?"})).await;
    app.put("/v1/templates/security.alert/sms", json!({"text": "New sign-in. Was it you?"})).await;
    app.put("/v1/subscribers/u-1", json!({"email": "a@example.com", "phone": "+15551230001"})).await;
    app.put("/v1/subscribers/u-2", json!({"email": "b@example.com"})).await;
    app.put(
        "/v1/subscribers/u-1/preferences",
        json!({"channels": {"sms": false}, "types": {"invoice.overdue": {"email": false}}}),
    )
    .await;

    let n = app.get(app.accept(&invoice(json!([{"subscriber_id": "u-1"}, {"subscriber_id": "u-2"}]))).await).await;
    let mut got = outcomes(&n);
    got.sort();
    let s = |c: &str, st: &str, r: Option<&str>| (c.to_owned(), st.to_owned(), r.map(str::to_owned));
    assert_eq!(
        got,
        [
            s("email", "pending", None),
            s("email", "suppressed", Some("opted_out")),
            s("sms", "suppressed", Some("no_address")),
            s("sms", "suppressed", Some("opted_out")),
        ]
    );

    let alert = json!({"type": "security.alert", "to": [{"subscriber_id": "u-1"}]});
    let n = app.get(app.accept(&alert).await).await;
    assert_eq!(outcomes(&n), [s("email", "pending", None), s("sms", "pending", None)]);

    // A subscriber who opted out of everything gets nothing: the notification is done.
    app.put("/v1/subscribers/u-2/preferences", json!({"channels": {"email": false}})).await;
    let (status, answer) = app.post(&invoice(json!([{"subscriber_id": "u-2"}]))).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "sent");
    let (outbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE notification_id = $1::uuid")
        .bind(answer["id"].as_str().unwrap())
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(outbox, 0);
}

#[tokio::test]
async fn quiet_hours_defer_to_the_end_of_the_window_in_the_subscribers_time_zone_across_dst() {
    let app = TestApp::api_with(|c| c.limits.max_schedule_ahead = Duration::from_secs(400 * 24 * 3600)).await;
    app.invoice_type(&["email"]).await;
    let quiet = json!({"quiet_hours": {"start": "22:00", "end": "07:00"}});
    for (id, tz) in [("ny", "America/New_York"), ("tokyo", "Asia/Tokyo"), ("utc", "UTC")] {
        app.put(&format!("/v1/subscribers/{id}"), json!({"email": format!("{id}@example.com"), "timezone": tz})).await;
        app.put(&format!("/v1/subscribers/{id}/preferences"), quiet.clone()).await;
    }

    let at = |send_at: &str| {
        let mut body = invoice(json!([{"subscriber_id": "ny"}, {"subscriber_id": "tokyo"}, {"subscriber_id": "utc"}]));
        body["send_at"] = send_at.into();
        body
    };
    let deferred = |n: &Value| -> Vec<(String, Value)> {
        let mut v: Vec<(String, Value)> = n["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["subscriber_id"].as_str().unwrap().to_owned(), d["next_attempt_at"].clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };

    // 14:00 UTC is 23:00 in Tokyo (quiet until 07:00 there, 22:00 UTC), 09:00 in New York.
    let n = app.get(app.accept(&at("2026-12-20T14:00:00Z")).await).await;
    assert_eq!(
        deferred(&n),
        [("ny".into(), Value::Null), ("tokyo".into(), "2026-12-20T22:00:00Z".into()), ("utc".into(), Value::Null)]
    );

    // 03:30 UTC on 14 March 2027 is 22:30 EST; clocks go forward at 02:00, so 07:00 the
    // next morning is EDT: 11:00 UTC, not 12:00.
    let n = app.get(app.accept(&at("2027-03-14T03:30:00Z")).await).await;
    assert_eq!(
        deferred(&n),
        [
            ("ny".into(), "2027-03-14T11:00:00Z".into()),
            ("tokyo".into(), Value::Null),
            ("utc".into(), "2027-03-14T07:00:00Z".into())
        ]
    );
    // The outbox holds the deferred work until then: deferred, not dropped.
    let due: Vec<(String,)> = sqlx::query_as(
        "SELECT to_char(o.available_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM outbox o
         JOIN deliveries d ON d.id = o.delivery_id WHERE d.notification_id = $1::uuid ORDER BY d.subscriber_id",
    )
    .bind(n["id"].as_str().unwrap())
    .fetch_all(app.env.store.pool())
    .await
    .unwrap();
    assert_eq!(
        due.into_iter().map(|r| r.0).collect::<Vec<_>>(),
        ["2027-03-14 11:00", "2027-03-14 03:30", "2027-03-14 07:00"]
    );
}

#[tokio::test]
async fn unknown_types_are_refused_when_the_tenant_requires_defined_types() {
    let app = TestApp::api_only().await;
    let adhoc =
        json!({"type": "made.up", "to": [{"email": "a@example.com"}], "content": {"subject": "s", "text": "t"}});
    app.accept(&adhoc).await;

    // Changed from another process (as `notify-admin set-tenant`): the API hears of it through
    // the change notification.
    app.env.store.set_tenant_settings(app.tenant_id, None, Some(false), None).await.unwrap();
    let answer = within(NOTIFIED, "the setting applied", || async {
        let (status, answer) = app.post(&adhoc).await;
        (status != 202).then_some(answer)
    })
    .await;
    assert_eq!(answer["status"], 422, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "type");

    // A type with no template for a channel needs inline content.
    app.put("/v1/types/made.up", json!({"channels": ["sms"]})).await;
    let (status, answer) = app.post(&json!({"type": "made.up", "to": [{"phone": "+15551230001"}]})).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "type");
    let inline = json!({"type": "made.up", "to": [{"phone": "+15551230001"}], "content": {"text": "hi"}});
    app.accept(&inline).await;
}

#[tokio::test]
async fn a_types_retry_policy_overrides_the_channels() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let always_fails =
        SandboxConfig { failure_kind: SandboxFailure::Retryable, failure_rate: 1.0, ..Default::default() };
    // The channel would retry after a minute; the type allows one attempt only.
    let _worker = app.start_worker(Channel::Email, WorkerOptions { sandbox: always_fails, ..Default::default() }).await;
    app.put("/v1/types/otp", json!({"channels": ["email"], "retry": {"max_attempts": 1}})).await;
    let id = app
        .accept(
            &json!({"type": "otp", "to": [{"email": "a@example.com"}], "content": {"subject": "Code", "text": "123"}}),
        )
        .await;
    let n = app.wait_for_status(id, "failed").await;
    assert_eq!(n["deliveries"][0]["attempt_count"], 1);
}

#[tokio::test]
async fn in_app_deliveries_are_written_to_the_inbox_at_accept_with_their_rendered_content() {
    let app = TestApp::api_only().await;
    app.put("/v1/types/invoice.overdue", json!({"channels": ["in_app", "email"]})).await;
    app.put(
        "/v1/templates/invoice.overdue/in_app",
        json!({"title": "Invoice {{ number }}", "body": "Please pay {{ amount }}.", "action_url": "/invoices/{{ number }}"}),
    )
    .await;
    app.put("/v1/templates/invoice.overdue/email", json!({"subject": "Invoice {{ number }}", "text": "Pay"})).await;
    app.put("/v1/subscribers/u-1", json!({"email": "a@example.com"})).await;
    app.put("/v1/subscribers/u-2", json!({})).await;
    app.put("/v1/subscribers/u-3", json!({})).await;
    app.put("/v1/subscribers/u-3/preferences", json!({"channels": {"in_app": false}})).await;

    let mut body = invoice(json!([{"subscriber_id": "u-1"}, {"subscriber_id": "u-2"}, {"subscriber_id": "u-3"}]));
    body["tags"] = json!(["billing"]);
    let (status, answer) = app.post(&body).await;
    assert_eq!(status, 202, "{answer}");
    // The email still waits for its worker; the inbox items are already there.
    assert_eq!(answer["status"], "pending");
    let mut got: Vec<(String, String, String)> = answer["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap().to_owned();
            (s("subscriber_id"), s("channel"), s("status"))
        })
        .collect();
    got.sort();
    let row = |s: &str, c: &str, st: &str| (s.to_owned(), c.to_owned(), st.to_owned());
    assert_eq!(
        got,
        [
            row("u-1", "email", "pending"),
            row("u-1", "in_app", "delivered"),
            row("u-2", "email", "suppressed"),
            row("u-2", "in_app", "delivered"),
            row("u-3", "email", "suppressed"),
            row("u-3", "in_app", "suppressed"),
        ]
    );

    let items: Vec<(String, String, String, String, Vec<String>)> = sqlx::query_as(
        "SELECT subscriber_id, title, body, action_url, tags FROM inbox_items WHERE tenant_id = $1 ORDER BY subscriber_id",
    )
    .bind(app.tenant_id)
    .fetch_all(app.env.store.pool())
    .await
    .unwrap();
    let item = |s: &str| {
        (
            s.to_owned(),
            "Invoice F-7".into(),
            "Please pay 12 EUR.".into(),
            "/invoices/F-7".into(),
            vec!["billing".into()],
        )
    };
    assert_eq!(items, [item("u-1"), item("u-2")]);

    // Only in-app: the notification is done when accepted.
    let mut body = invoice(json!([{"subscriber_id": "u-2"}]));
    body["channels"] = json!(["in_app"]);
    let (status, answer) = app.post(&body).await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("sent")), "{answer}");

    // Erasing a subscriber empties its inbox.
    let (status, _) = app.call("DELETE", "/v1/subscribers/u-2", None).await;
    assert_eq!(status, 204);
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM inbox_items WHERE subscriber_id = 'u-2'")
        .fetch_one(app.env.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_scheduled_in_app_item_stays_out_of_the_inbox_until_its_time() {
    let app = TestApp::api_only().await;
    app.put("/v1/subscribers/u-1", json!({})).await;
    let item = |send_at: Option<&str>| {
        let mut n = json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "channels": ["in_app"],
            "content": {"title": "Hi"}});
        if let Some(at) = send_at {
            n["send_at"] = at.into();
        }
        n
    };
    app.accept(&item(None)).await;
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    app.accept(&item(Some(&tomorrow))).await;
    let (status, token) = app.call("POST", "/v1/subscribers/u-1/token", None).await;
    assert_eq!(status, 200);
    let token = token["token"].as_str().unwrap();
    let inbox: Value =
        app.http.get(app.url("/v1/inbox")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    assert_eq!(inbox["items"].as_array().unwrap().len(), 1, "{inbox}");
    assert_eq!(inbox["unread_count"], 1);
}

/// The fields a 422 names.
fn refused_fields(status: u16, answer: &Value) -> Vec<String> {
    assert_eq!(status, 422, "{answer}");
    answer["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn an_in_app_action_url_is_https_a_path_or_http_where_the_tenant_allows_it() {
    let app = TestApp::api_only().await;
    app.put("/v1/subscribers/u-1", json!({})).await;
    let inline = |url: &str| {
        json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "channels": ["in_app"],
               "content": {"title": "Hi", "action_url": url}})
    };
    for bad in [
        "javascript:alert(document.cookie)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        " https://example.com",
        "java\tscript:alert(1)",
        "//evil.example/x",
        "/\\evil.example/x",
        "https://",
        "example.com/x",
        "http://example.com/x",
    ] {
        let (status, answer) = app.post(&inline(bad)).await;
        assert_eq!(refused_fields(status, &answer), ["content.action_url"], "{bad:?}: {answer}");
    }
    for good in ["https://example.com/orders/1?x=y#z", "HTTPS://example.com", "/orders/1"] {
        let (status, answer) = app.post(&inline(good)).await;
        assert_eq!(status, 202, "{good:?}: {answer}");
    }
    // A tenant that allows http (set from another process, as `notify-admin set-tenant`: the API
    // hears of it through the change notification).
    assert!(app.env.store.set_tenant_settings(app.tenant_id, None, None, Some(true)).await.unwrap());
    within(NOTIFIED, "http allowed", || async {
        (app.post(&inline("http://intranet.example/x")).await.0 == 202).then_some(())
    })
    .await;
    let (status, answer) = app.post(&inline("javascript:alert(1)")).await;
    assert_eq!(refused_fields(status, &answer), ["content.action_url"], "{answer}");
    assert!(app.env.store.set_tenant_settings(app.tenant_id, None, None, Some(false)).await.unwrap());
    within(NOTIFIED, "http refused again", || async {
        (app.post(&inline("http://intranet.example/x")).await.0 == 422).then_some(())
    })
    .await;

    // From a template: a source that can only make another scheme is refused when stored,
    // and what a template renders is checked like inline content.
    app.put("/v1/types/link", json!({"channels": ["in_app"]})).await;
    let (status, answer) = app
        .call("PUT", "/v1/templates/link/in_app", Some(&json!({"title": "Hi", "action_url": "javascript:{{ x }}"})))
        .await;
    assert_eq!(refused_fields(status, &answer), ["content.action_url"], "{answer}");
    app.put("/v1/templates/link/in_app", json!({"title": "Hi", "action_url": "{{ link }}"})).await;
    let templated = |link: &str| json!({"type": "link", "to": [{"subscriber_id": "u-1"}], "data": {"link": link}});
    for bad in ["javascript:alert(1)", "http://example.com"] {
        let (status, answer) = app.post(&templated(bad)).await;
        assert_eq!(refused_fields(status, &answer), ["content.action_url"], "{bad:?}: {answer}");
    }
    let (status, answer) = app.post(&templated("https://example.com/ok")).await;
    assert_eq!(status, 202, "{answer}");
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT action_url FROM inbox_items WHERE tenant_id = $1 AND action_url IS NOT NULL ORDER BY id",
    )
    .bind(app.tenant_id)
    .fetch_all(app.env.store.pool())
    .await
    .unwrap();
    assert!(
        stored.iter().all(|u| u.starts_with("https://")
            || u.starts_with("HTTPS://")
            || u.starts_with("/")
            || u == "http://intranet.example/x"),
        "{stored:?}"
    );
}
