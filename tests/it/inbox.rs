//! The end-user inbox over REST: subscriber tokens, listing, counts and changes, and that a
//! subscriber sees only its own items.

use std::time::Duration;

use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use crate::harness::TestApp;

const SECRET: &str = "an inbox token secret of 32+ bytes!";

/// Any call with `bearer` as the credential; status and JSON body (`null` when none).
async fn call_as(app: &TestApp, bearer: &str, method: &str, path: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = app.http.request(method, app.url(path)).bearer_auth(bearer).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put_subscriber(app: &TestApp, api_key: &str, id: &str) {
    let response = app
        .http
        .put(app.url(&format!("/v1/subscribers/{id}")))
        .bearer_auth(api_key)
        .json(&json!({"email": format!("{id}@example.com")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// A subscriber token issued with `api_key`.
async fn token(app: &TestApp, api_key: &str, subscriber: &str) -> String {
    let (status, body) = call_as(app, api_key, "POST", &format!("/v1/subscribers/{subscriber}/token")).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// An inbox item as the intake would write it (one notification per item).
async fn add_item(app: &TestApp, tenant_id: Uuid, subscriber: &str, kind: &str, tags: &[&str]) -> Uuid {
    let pool = app.env.store.pool();
    let notification = Uuid::now_v7();
    sqlx::query("INSERT INTO notifications (id, tenant_id, type, priority) VALUES ($1, $2, $3, 'normal')")
        .bind(notification)
        .bind(tenant_id)
        .bind(kind)
        .execute(pool)
        .await
        .unwrap();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO inbox_items (id, tenant_id, subscriber_id, notification_id, type, title, body, action_url, tags,
                                  created_at)
         VALUES ($1, $2, $3, $4, $5, 'Title', 'Body', 'https://example.com/x', $6, now())",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(subscriber)
    .bind(notification)
    .bind(kind)
    .bind(tags.iter().map(|t| t.to_string()).collect::<Vec<_>>())
    .execute(pool)
    .await
    .unwrap();
    id
}

fn ids(page: &Value) -> Vec<Uuid> {
    page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn tokens_are_issued_for_the_tenants_subscribers_and_checked() {
    let app = TestApp::api_with(|c| {
        c.inbox.token_secret = Some(SECRET.into());
        c.inbox.token_ttl = Duration::from_secs(120);
    })
    .await;
    put_subscriber(&app, &app.api_key, "u-1").await;

    let (status, body) = app.call("POST", "/v1/subscribers/nobody/token", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let (status, issued) = app.call("POST", "/v1/subscribers/u-1/token", None).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["subscriber_id"], "u-1");
    let expires_at = OffsetDateTime::parse(issued["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let left = expires_at - OffsetDateTime::now_utc();
    assert!(left > time::Duration::seconds(100) && left <= time::Duration::seconds(120), "{left}");
    let token = issued["token"].as_str().unwrap();
    assert_eq!(call_as(&app, token, "GET", "/v1/inbox/count").await, (200, json!({"unread_count": 0})));

    // The configured secret signs them: a token made with it elsewhere (another replica) works.
    let key = notify_api::TokenKey::new(SECRET.as_bytes());
    let incarnation = app.env.store.subscriber_incarnation(app.tenant_id, "u-1").await.unwrap().unwrap();
    let (elsewhere, _) = key.issue(app.tenant_id, "u-1", incarnation, Duration::from_secs(60));
    assert_eq!(call_as(&app, &elsewhere, "GET", "/v1/inbox/count").await.0, 200);

    // Expired, tampered, signed with another key, absent.
    let (expired, _) = key.issue(app.tenant_id, "u-1", incarnation, Duration::ZERO);
    let (other_key, _) =
        notify_api::TokenKey::new(&[7; 32]).issue(app.tenant_id, "u-1", incarnation, Duration::from_secs(60));
    let (signed, tag) = token.rsplit_once('.').unwrap();
    let tampered = format!("{signed}x.{tag}");
    for bad in [expired.as_str(), other_key.as_str(), tampered.as_str(), "v1.garbage.garbage"] {
        let (status, body) = call_as(&app, bad, "GET", "/v1/inbox").await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{bad}");
    }
    let response = app.http.get(app.url("/v1/inbox")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    // An API key is not a subscriber token, and a subscriber token is not an API key.
    assert_eq!(call_as(&app, &app.api_key, "GET", "/v1/inbox").await.0, 401);
    assert_eq!(call_as(&app, &app.api_key, "POST", "/v1/inbox/read-all").await.0, 401);
    assert_eq!(call_as(&app, token, "GET", "/v1/notifications").await.0, 401);
    assert_eq!(call_as(&app, token, "POST", "/v1/subscribers/u-1/token").await.0, 401);
    assert_eq!(call_as(&app, token, "GET", "/v1/subscribers/u-1").await.0, 401);
}

#[tokio::test]
async fn the_inbox_lists_newest_first_by_page_and_filter() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let t = app.tenant_id;
    let mut all = vec![
        add_item(&app, t, "u-1", "order.shipped", &["orders"]).await,
        add_item(&app, t, "u-1", "order.shipped", &["orders", "vip"]).await,
        add_item(&app, t, "u-1", "invoice.due", &["billing"]).await,
        add_item(&app, t, "u-1", "order.shipped", &[]).await,
        add_item(&app, t, "u-1", "invoice.due", &["billing", "vip"]).await,
    ];
    all.sort();
    all.reverse(); // newest first
    let token = token(&app, &app.api_key, "u-1").await;

    let (status, page) = call_as(&app, &token, "GET", "/v1/inbox").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), all);
    assert_eq!(page["unread_count"], 5);
    assert!(page.get("next_cursor").is_none(), "the last page has no cursor: {page}");
    let item = &page["items"][0];
    assert_eq!(item["type"], "invoice.due");
    assert_eq!(item["tags"], json!(["billing", "vip"]));
    assert_eq!((item["title"].as_str(), item["body"].as_str()), (Some("Title"), Some("Body")));
    assert_eq!(item["action_url"], "https://example.com/x");
    assert!(item["read_at"].is_null() && item["archived_at"].is_null());
    assert!(OffsetDateTime::parse(item["created_at"].as_str().unwrap(), &Rfc3339).is_ok());
    assert!(item["notification_id"].is_string());

    // Pages of two, following the cursor.
    let mut seen = vec![];
    let mut path = "/v1/inbox?limit=2".to_owned();
    loop {
        let (status, page) = call_as(&app, &token, "GET", &path).await;
        assert_eq!(status, 200, "{page}");
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/inbox?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, all);

    // Filters.
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox?type=invoice.due").await;
    assert_eq!(ids(&page), vec![all[0], all[2]]);
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox?tag=vip").await;
    assert_eq!(ids(&page), vec![all[0], all[3]]);
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox?tag=vip&type=order.shipped").await;
    assert_eq!(ids(&page), vec![all[3]]);
    assert_eq!(call_as(&app, &token, "POST", &format!("/v1/inbox/{}/read", all[0])).await.0, 200);
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox?unread_only=true").await;
    assert_eq!(ids(&page), all[1..].to_vec());
    assert_eq!(page["unread_count"], 4);
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox?unread_only=false&limit=1").await;
    assert_eq!(ids(&page), vec![all[0]]);
    assert!(page["items"][0]["read_at"].is_string());
    assert_eq!(page["next_cursor"], all[0].to_string());
    assert_eq!(page["unread_count"], 4, "the count ignores filters and paging");

    // Bad parameters name themselves.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("cursor=abc", "cursor"),
        ("unread_only=yes", "unread_only"),
        ("status=sent", "status"),
    ] {
        let (status, body) = call_as(&app, &token, "GET", &format!("/v1/inbox?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}");
    }
    assert_eq!(call_as(&app, &token, "GET", "/v1/inbox?limit=100").await.0, 200);
}

#[tokio::test]
async fn changes_answer_the_unread_count() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let t = app.tenant_id;
    let a = add_item(&app, t, "u-1", "order.shipped", &[]).await;
    let b = add_item(&app, t, "u-1", "order.shipped", &[]).await;
    let c = add_item(&app, t, "u-1", "order.shipped", &[]).await;
    let token = token(&app, &app.api_key, "u-1").await;
    let count = |n: i64| (200, json!({"unread_count": n}));

    assert_eq!(call_as(&app, &token, "GET", "/v1/inbox/count").await, count(3));
    assert_eq!(call_as(&app, &token, "POST", &format!("/v1/inbox/{a}/read")).await, count(2));
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox").await;
    let read_at = page["items"][2]["read_at"].clone();
    assert!(read_at.is_string());
    assert_eq!(call_as(&app, &token, "POST", &format!("/v1/inbox/{a}/read")).await, count(2), "reading again");
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox").await;
    assert_eq!(page["items"][2]["read_at"], read_at, "the first read time stays");
    assert_eq!(call_as(&app, &token, "POST", &format!("/v1/inbox/{a}/unread")).await, count(3));
    assert_eq!(call_as(&app, &token, "POST", &format!("/v1/inbox/{a}/unread")).await, count(3));

    // Archived: out of the list and the count, back with include_archived.
    assert_eq!(call_as(&app, &token, "POST", &format!("/v1/inbox/{b}/archive")).await, count(2));
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox").await;
    assert_eq!(ids(&page), vec![c, a]);
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox?include_archived=true").await;
    assert_eq!(ids(&page), vec![c, b, a]);
    assert!(page["items"][1]["archived_at"].is_string());

    // Deleted: gone.
    assert_eq!(call_as(&app, &token, "DELETE", &format!("/v1/inbox/{c}")).await, count(1));
    let (status, body) = call_as(&app, &token, "DELETE", &format!("/v1/inbox/{c}")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(call_as(&app, &token, "POST", &format!("/v1/inbox/{c}/read")).await.0, 404);
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox?include_archived=true").await;
    assert_eq!(ids(&page), vec![b, a]);

    // Read all: the archived unread item too.
    assert_eq!(call_as(&app, &token, "POST", "/v1/inbox/read-all").await, count(0));
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox?include_archived=true").await;
    assert!(page["items"].as_array().unwrap().iter().all(|i| i["read_at"].is_string()), "{page}");
    assert_eq!(call_as(&app, &token, "POST", "/v1/inbox/read-all").await, count(0));
    let d = add_item(&app, t, "u-1", "order.shipped", &[]).await;
    assert_eq!(call_as(&app, &token, "GET", "/v1/inbox/count").await, count(1));
    let (_, page) = call_as(&app, &token, "GET", "/v1/inbox?unread_only=true").await;
    assert_eq!(ids(&page), vec![d]);

    // Ids that name nothing.
    for path in [
        format!("/v1/inbox/{}/read", Uuid::now_v7()),
        "/v1/inbox/not-a-uuid/read".to_owned(),
        "/v1/inbox/not-a-uuid/archive".to_owned(),
    ] {
        assert_eq!(call_as(&app, &token, "POST", &path).await.0, 404, "{path}");
    }
    assert_eq!(call_as(&app, &token, "DELETE", "/v1/inbox/not-a-uuid").await.0, 404);
}

#[tokio::test]
async fn a_subscriber_sees_only_its_own_items() {
    let app = TestApp::api_only().await;
    let other = app.env.store.create_tenant("other").await.unwrap();
    for id in ["u-1", "u-2"] {
        put_subscriber(&app, &app.api_key, id).await;
    }
    put_subscriber(&app, &other.api_key, "u-1").await;
    let mine = add_item(&app, app.tenant_id, "u-1", "order.shipped", &["orders"]).await;
    let neighbours = add_item(&app, app.tenant_id, "u-2", "order.shipped", &["orders"]).await;
    let other_tenants = add_item(&app, other.tenant_id, "u-1", "order.shipped", &["orders"]).await;
    let me = token(&app, &app.api_key, "u-1").await;
    let neighbour = token(&app, &app.api_key, "u-2").await;
    let namesake = token(&app, &other.api_key, "u-1").await;

    // Each token lists its own subscriber's items in its own tenant.
    for (token, item) in [(&me, mine), (&neighbour, neighbours), (&namesake, other_tenants)] {
        let (status, page) = call_as(&app, token, "GET", "/v1/inbox").await;
        assert_eq!(status, 200);
        assert_eq!(ids(&page), vec![item]);
        assert_eq!(page["unread_count"], 1);
        let (_, page) = call_as(&app, token, "GET", "/v1/inbox?tag=orders&type=order.shipped").await;
        assert_eq!(ids(&page), vec![item]);
    }

    // Another's item is a 404 whatever the change, and stays as it was.
    for (token, foreign) in [(&me, neighbours), (&me, other_tenants), (&namesake, mine), (&neighbour, mine)] {
        for (method, path) in [
            ("POST", format!("/v1/inbox/{foreign}/read")),
            ("POST", format!("/v1/inbox/{foreign}/unread")),
            ("POST", format!("/v1/inbox/{foreign}/archive")),
            ("DELETE", format!("/v1/inbox/{foreign}")),
        ] {
            assert_eq!(call_as(&app, token, method, &path).await.0, 404, "{method} {path}");
        }
    }
    // A cursor naming another's item only positions the page.
    let (_, page) = call_as(&app, &me, "GET", &format!("/v1/inbox?cursor={other_tenants}")).await;
    assert_eq!(ids(&page), vec![mine]);

    // Read-all touches only the caller's items.
    assert_eq!(call_as(&app, &me, "POST", "/v1/inbox/read-all").await, (200, json!({"unread_count": 0})));
    for token in [&neighbour, &namesake] {
        let (_, page) = call_as(&app, token, "GET", "/v1/inbox").await;
        assert_eq!(page["unread_count"], 1);
        assert!(page["items"][0]["read_at"].is_null() && page["items"][0]["archived_at"].is_null());
    }
    // The other tenant's key cannot issue tokens for this tenant's subscribers.
    assert_eq!(call_as(&app, &other.api_key, "POST", "/v1/subscribers/u-2/token").await.0, 404);
}

#[tokio::test]
async fn a_token_issued_before_an_erasure_does_not_read_the_namesake_made_after_it() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let before = token(&app, &app.api_key, "u-1").await;
    assert_eq!(call_as(&app, &before, "GET", "/v1/inbox/count").await, (200, json!({"unread_count": 0})));

    let (status, _) = app.call("DELETE", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 204);
    // Erased, the subscriber's token is refused at once.
    assert_eq!(call_as(&app, &before, "GET", "/v1/inbox").await.0, 401);

    // Another person is given the id `u-1`; their inbox is theirs alone.
    put_subscriber(&app, &app.api_key, "u-1").await;
    let theirs = add_item(&app, app.tenant_id, "u-1", "order.shipped", &[]).await;
    for (method, path) in [
        ("GET", "/v1/inbox".to_owned()),
        ("GET", "/v1/inbox/count".to_owned()),
        ("POST", format!("/v1/inbox/{theirs}/read")),
        ("POST", "/v1/inbox/read-all".to_owned()),
        ("DELETE", format!("/v1/inbox/{theirs}")),
    ] {
        let (status, body) = call_as(&app, &before, method, &path).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{method} {path}: {body}");
    }
    let after = token(&app, &app.api_key, "u-1").await;
    let (status, page) = call_as(&app, &after, "GET", "/v1/inbox").await;
    assert_eq!((status, ids(&page)), (200, vec![theirs]), "untouched by the old token: {page}");
    assert_eq!(page["unread_count"], 1);
}

/// An inbox item is stamped with the database's clock, which its readers compare with
/// (`created_at <= now()`), not the API host's: with the host's, an API a second ahead of
/// the database would hide every new item (and lose its live push) for that second. The
/// accept's transaction time is what its email's outbox row is due at (no broker: no
/// grace).
#[tokio::test]
async fn an_inbox_item_is_stamped_with_the_databases_clock() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let (status, answer) = app
        .call(
            "POST",
            "/v1/notifications",
            Some(&json!({"type": "t", "to": [{"subscriber_id": "u-1"}], "channels": ["in_app", "email"],
                         "content": {"subject": "Hi", "text": "Hello", "title": "Hi", "body": "Hello"}})),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let (item, sent, due): (OffsetDateTime, OffsetDateTime, OffsetDateTime) = sqlx::query_as(
        "SELECT i.created_at, d.sent_at, o.available_at
         FROM inbox_items i JOIN deliveries d ON d.id = i.id JOIN outbox o ON o.notification_id = i.notification_id",
    )
    .fetch_one(app.env.store.pool())
    .await
    .unwrap();
    assert_eq!((item, sent), (due, due), "the item and its delivery are stamped at the accept's transaction time");
    let token = token(&app, &app.api_key, "u-1").await;
    let (status, page) = call_as(&app, &token, "GET", "/v1/inbox").await;
    assert_eq!((status, page["items"].as_array().map(Vec::len)), (200, Some(1)), "{page}");
}
