//! Bounds that keep one tenant from hurting all: retry delays, metric labels, fan-out and
//! rendered sizes, NUL characters.

use std::collections::HashMap;

use domain::{
    NewNotification,
    plan::{Budget, SubscriberData, plan_all},
    request::Limits,
    subscriber::Subscriber,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::harness::TestApp;

#[tokio::test]
async fn a_type_whose_retry_delay_is_unbounded_is_422_naming_the_field() {
    let app = TestApp::api_only().await;
    for (retry, field) in [
        (json!({"max_delay": "1000years"}), "retry.max_delay"),
        (json!({"initial_delay": "8days", "max_delay": "7days"}), "retry.initial_delay"),
        (json!({"max_attempts": 1000}), "retry.max_attempts"),
    ] {
        let (status, problem) =
            app.call("PUT", "/v1/types/invoice.overdue", Some(&json!({"channels": ["email"], "retry": retry}))).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, _) = app.call("GET", "/v1/types/invoice.overdue", None).await;
    assert_eq!(status, 404, "nothing stored");
    let (status, stored) = app
        .call(
            "PUT",
            "/v1/types/invoice.overdue",
            Some(&json!({"channels": ["email"], "retry": {"max_delay": "7days"}})),
        )
        .await;
    assert_eq!(status, 201, "{stored}");
}

async fn batch(app: &TestApp, items: Vec<Value>) -> Vec<Value> {
    let response = app
        .http
        .post(app.url("/v1/notifications/batch"))
        .bearer_auth(&app.api_key)
        .json(&json!({ "notifications": items }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["results"].as_array().unwrap().clone()
}

async fn put(app: &TestApp, path: &str, body: Value) {
    let (status, answer) = app.call("PUT", path, Some(&body)).await;
    assert!(matches!(status, 200 | 201), "PUT {path}: {status} {answer}");
}

/// `count` subscribers `<topic>-0`... with addresses and `data.x` = `x of <id>`, members of
/// `topic`, in two statements.
pub async fn topic_of(app: &TestApp, topic: &str, count: i32) {
    let pool = app.env.store.pool();
    sqlx::query(
        "INSERT INTO subscribers (tenant_id, id, email, data)
         SELECT $1, $2 || '-' || i, $2 || i || '@example.com', jsonb_build_object('x', 'x of ' || $2 || '-' || i)
         FROM generate_series(0, $3 - 1) i",
    )
    .bind(app.tenant_id)
    .bind(topic)
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO topic_members (tenant_id, topic, subscriber_id) SELECT $1, $2, $2 || '-' || i
         FROM generate_series(0, $3 - 1) i",
    )
    .bind(app.tenant_id)
    .bind(topic)
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

async fn deliveries(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM deliveries").fetch_one(app.env.store.pool()).await.unwrap();
    n
}

fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_topic_over_the_fan_out_cap_is_422_on_to_before_rendering_and_writes_nothing() {
    let app = TestApp::api_only().await;
    put(&app, "/v1/types/news", json!({"channels": ["email"]})).await;
    // Renders for no one: every render would be a `data.missing` error.
    put(&app, "/v1/templates/news/email", json!({"subject": "News", "text": "{{ missing }}"})).await;
    topic_of(&app, "everyone", 50_001).await;

    let (status, problem) = app.post(&json!({"type": "news", "to": [{"topic": "everyone"}]})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["to"], "refused on the count alone, nothing rendered: {problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("50000"), "{problem}");

    // In a batch the item over the cap is refused alone.
    let results = batch(
        &app,
        vec![json!({"type": "news", "to": [{"topic": "everyone"}]}), crate::harness::email("a@example.com")],
    )
    .await;
    assert_eq!(results[0]["status"], 422, "{results:?}");
    assert_eq!(results[0]["error"]["errors"][0]["field"], "to");
    assert_eq!(results[1]["status"], 202, "{results:?}");
    assert_eq!((app.notification_count().await, deliveries(&app).await), (1, 1));
}

#[tokio::test]
async fn a_batch_shares_one_fan_out_budget_in_item_order() {
    let app = TestApp::api_only().await;
    topic_of(&app, "north", 30_000).await;
    topic_of(&app, "south", 30_000).await;
    let to = |topic: &str| {
        json!({"type": "news", "to": [{"topic": topic}], "channels": ["email"],
               "content": {"subject": "News", "text": "Hello"}})
    };
    let results = batch(&app, vec![to("north"), to("south"), crate::harness::email("a@example.com")]).await;
    let statuses: Vec<_> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [202, 422, 202], "{:?}", results[1]);
    assert_eq!(results[1]["error"]["errors"][0]["field"], "to");
    assert!(results[1]["error"]["errors"][0]["message"].as_str().unwrap().contains("another request"));
    assert_eq!((app.notification_count().await, deliveries(&app).await), (2, 30_001));
    // Alone, the refused item fits.
    assert_eq!(app.post(&to("south")).await.0, 202);
}

#[tokio::test]
async fn an_oversized_render_is_422_naming_the_field_and_writes_nothing() {
    let app = TestApp::api_only().await;
    put(&app, "/v1/types/report", json!({"channels": ["email"]})).await;
    put(&app, "/v1/templates/report/email", json!({"subject": "Report", "html": "{{ blob }}{{ blob }}{{ blob }}"}))
        .await;
    let blob = "x".repeat(60 * 1024);
    let (status, problem) =
        app.post(&json!({"type": "report", "to": [{"email": "a@example.com"}], "data": {"blob": blob}})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["content.html"], "{problem}");

    // Each delivery within bounds, but together more than one request may render.
    put(&app, "/v1/templates/report/email", json!({"subject": "Report", "html": "{{ blob }}{{ blob }}"})).await;
    topic_of(&app, "staff", 600).await;
    let (status, problem) =
        app.post(&json!({"type": "report", "to": [{"topic": "staff"}], "data": {"blob": blob}})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["to"], "{problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("MiB"), "{problem}");
    assert_eq!((app.notification_count().await, deliveries(&app).await), (0, 0));
}

/// The type `digest` on email, its template showing the subscriber's id and `data.x`.
async fn digest_type(app: &TestApp) {
    put(app, "/v1/types/digest", json!({"channels": ["email"]})).await;
    put(
        app,
        "/v1/templates/digest/email",
        json!({"subject": "Digest", "text": "{{ subscriber.id }}: {{ subscriber.data.x }}"}),
    )
    .await;
}

/// (subscriber, rendered text) of each delivery of `notification`, by subscriber.
async fn rendered(app: &TestApp, notification: &Value) -> Vec<(String, String)> {
    let id: uuid::Uuid = notification["id"].as_str().unwrap().parse().unwrap();
    sqlx::query_as("SELECT subscriber_id, content->>'text' FROM deliveries WHERE notification_id = $1 ORDER BY 1")
        .bind(id)
        .fetch_all(app.env.store.pool())
        .await
        .unwrap()
}

/// What each of `ids` gets from the `digest` template.
fn own_content(ids: impl IntoIterator<Item = i32>) -> Vec<(String, String)> {
    ids.into_iter().map(|i| (format!("staff-{i}"), format!("staff-{i}: x of staff-{i}"))).collect()
}

#[tokio::test]
async fn a_topic_larger_than_a_data_page_renders_every_member_its_own_content_once() {
    let app = TestApp::api_with(|c| c.limits.subscriber_data_page = 2).await;
    digest_type(&app).await;
    topic_of(&app, "staff", 5).await;

    // `staff-3` is named directly and through the topic: one delivery.
    let (status, answer) =
        app.post(&json!({"type": "digest", "to": [{"subscriber_id": "staff-3"}, {"topic": "staff"}]})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(rendered(&app, &answer).await, own_content(0..5));

    // Batch items share the pages; each still renders with its own subscribers' data.
    let results = batch(
        &app,
        vec![
            json!({"type": "digest", "to": [{"topic": "staff"}]}),
            json!({"type": "digest", "to": [{"subscriber_id": "staff-1"}]}),
        ],
    )
    .await;
    assert_eq!((results[0]["status"].as_u64(), results[1]["status"].as_u64()), (Some(202), Some(202)), "{results:?}");
    assert_eq!(rendered(&app, &results[0]["notification"]).await, own_content(0..5));
    assert_eq!(rendered(&app, &results[1]["notification"]).await, own_content([1]));
}

/// The store's data pages, with the subscribers each was asked for.
struct Recording<D> {
    store: D,
    pages: Vec<Vec<String>>,
}

impl<D: SubscriberData> SubscriberData for Recording<D> {
    type Error = D::Error;

    fn load(
        &mut self,
        subscribers: &[&Subscriber],
    ) -> impl Future<Output = Result<HashMap<String, String>, Self::Error>> + Send {
        self.pages.push(subscribers.iter().map(|s| s.id.clone()).collect());
        self.store.load(subscribers)
    }
}

#[tokio::test]
async fn a_topic_is_planned_holding_one_page_of_its_members_data_at_a_time() {
    let app = TestApp::api_only().await;
    digest_type(&app).await;
    topic_of(&app, "staff", 7).await;
    let request: NewNotification =
        serde_json::from_value(json!({"type": "digest", "to": [{"subscriber_id": "staff-3"}, {"topic": "staff"}]}))
            .unwrap();
    let n = request.validate(Limits::default(), OffsetDateTime::now_utc()).unwrap();
    let store = &app.env.store;

    let directory = store.directory(app.tenant_id, &[&n]).await.unwrap();
    assert_eq!(directory.subscribers.len(), 7);
    assert!(directory.subscribers.values().all(|l| l.subscriber.data.is_empty()), "members are listed without data");
    let mut data = Recording { store: store.subscriber_data(app.tenant_id), pages: vec![] };
    let mut plans =
        plan_all(&[&n], &directory, OffsetDateTime::now_utc(), &mut Budget::default(), 3, &mut data).await.unwrap();

    // Never more than a page of 3; each member read once, in the order named.
    let pages: Vec<Vec<&str>> = data.pages.iter().map(|p| p.iter().map(String::as_str).collect()).collect();
    assert_eq!(pages, [vec!["staff-3", "staff-0", "staff-1"], vec!["staff-2", "staff-4", "staff-5"], vec!["staff-6"]]);
    let plan = plans.pop().unwrap().unwrap();
    let mut texts: Vec<(String, String)> = plan
        .deliveries
        .iter()
        .map(|d| (d.subscriber_id.clone().unwrap(), d.content.as_ref().unwrap().text.clone().unwrap()))
        .collect();
    texts.sort();
    assert_eq!(texts, own_content(0..7));
}

#[tokio::test]
async fn members_are_listed_with_only_the_preferences_planning_consults() {
    let app = TestApp::api_only().await;
    put(&app, "/v1/types/digest", json!({"channels": ["email", "sms"], "category": "news"})).await;
    topic_of(&app, "staff", 2).await;
    // A document may hold 1,000 entries (up to 256 KiB); a topic's members are many.
    let others =
        |value: Value| (0..400).map(|i| (format!("other.{i}"), value.clone())).collect::<serde_json::Map<_, _>>();
    let mut types = others(json!({"email": true}));
    types.insert("digest".into(), json!({"email": false}));
    let mut categories = others(json!({"sms": true}));
    categories.insert("news".into(), json!({"sms": false}));
    let quiet = json!({"start": "00:00", "end": "23:59"});
    let document = json!({"channels": {"sms": true}, "types": types, "categories": categories, "quiet_hours": quiet});
    put(&app, "/v1/subscribers/staff-0/preferences", document).await;

    let request: NewNotification = serde_json::from_value(
        json!({"type": "digest", "to": [{"topic": "staff"}], "content": {"subject": "News", "text": "Hello"}}),
    )
    .unwrap();
    let n = request.validate(Limits::default(), OffsetDateTime::now_utc()).unwrap();
    let directory = app.env.store.directory(app.tenant_id, &[&n]).await.unwrap();
    let listed = serde_json::to_value(&directory.subscribers["staff-0"].preferences).unwrap();
    assert_eq!(
        listed,
        json!({"channels": {"sms": true}, "types": {"digest": {"email": false}}, "categories": {"news": {"sms": false}},
               "quiet_hours": quiet})
    );
    assert_eq!(serde_json::to_value(&directory.subscribers["staff-1"].preferences).unwrap()["types"], json!({}));

    // And they still decide: the type's entry beats the category's, which beats the channel's.
    sqlx::query("UPDATE subscribers SET phone = '+15551234567' WHERE id = 'staff-0'")
        .execute(app.env.store.pool())
        .await
        .unwrap();
    let (status, answer) = app
        .post(&json!({"type": "digest", "to": [{"subscriber_id": "staff-0"}],
                      "content": {"subject": "News", "text": "Hello"}}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let reasons: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT channel, last_error_code FROM deliveries ORDER BY channel")
            .fetch_all(app.env.store.pool())
            .await
            .unwrap();
    let opted_out = Some("opted_out".to_owned());
    assert_eq!(reasons, [("email".into(), opted_out.clone()), ("sms".into(), opted_out)]);
}

#[tokio::test]
async fn a_nul_character_is_422_naming_the_field_and_refuses_only_its_batch_item() {
    let app = TestApp::api_only().await;
    let with = |field: &str, value: Value| {
        let mut n = crate::harness::email("a@example.com");
        n[field] = value;
        n
    };
    let cases = [
        (with("data", json!({"order": {"note": "a\u{0}b"}})), "data.order.note"),
        (with("content", json!({"subject": "Hi", "text": "nul\u{0}"})), "content.text"),
        (with("correlation_id", json!("order\u{0}1")), "correlation_id"),
    ];
    for (body, field) in &cases {
        let (status, problem) = app.post(body).await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(fields(&problem), [*field], "{problem}");
    }
    let (status, problem) = app.call("GET", "/v1/notifications?correlation_id=a%00b", None).await;
    assert_eq!((status, fields(&problem)), (422, vec!["correlation_id"]), "{problem}");
    // A subscriber's data, a template: every JSON body is checked.
    let (status, problem) = app.call("PUT", "/v1/subscribers/u-1", Some(&json!({"data": {"x": "\u{0}"}}))).await;
    assert_eq!((status, fields(&problem)), (422, vec!["data.x"]), "{problem}");
    assert_eq!(app.notification_count().await, 0);

    let (bad, field) = cases[0].clone();
    let results =
        batch(&app, vec![crate::harness::email("b@example.com"), bad, crate::harness::email("c@example.com")]).await;
    let statuses: Vec<_> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [202, 422, 202], "{results:?}");
    assert_eq!(results[1]["error"]["errors"][0]["field"], field);
    assert_eq!(app.notification_count().await, 2);
}

#[tokio::test]
async fn metrics_are_on_the_side_port_only_and_made_up_methods_and_paths_add_no_series() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = TestApp::api_with(|c| c.ops_listen = Some(([127, 0, 0, 1], port).into())).await;
    let side = |path: &str| format!("http://127.0.0.1:{port}{path}");
    crate::harness::eventually("the side port", || async {
        let r = app.http.get(side("/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404, "not on the public port");

    let scrape = || async { app.http.get(side("/metrics")).send().await.unwrap().text().await.unwrap() };
    let series = |text: &str| text.lines().filter(|l| l.starts_with("notify_http_requests_total{")).count();
    for i in 0..3 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let r = app.http.request(method, app.url("/v1/notifications")).send().await.unwrap();
        assert_eq!(r.status(), 405);
        let r = app.http.get(app.url(&format!("/no/such/path/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    let text = scrape().await;
    assert!(!text.contains("MADEUP") && !text.contains("/no/such"), "{text}");
    assert!(
        text.contains(r#"notify_http_requests_total{method="other",route="/v1/notifications",status="405"} 3"#),
        "{text}"
    );
    // The three made-up paths and the public `/metrics`.
    assert!(text.contains(r#"notify_http_requests_total{method="GET",route="unmatched",status="404"} 4"#), "{text}");
    // More of the same adds to the counts, not to the series.
    let before = series(&text);
    let r = app.http.request(reqwest::Method::from_bytes(b"ANOTHER").unwrap(), app.url("/v1/x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r =
        app.http.request(reqwest::Method::from_bytes(b"YETANOTHER").unwrap(), app.url("/v1/x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(series(&scrape().await), before + 1, "one series for both: other, unmatched, 404");
}
