//! `GET /v1/notifications`: filters and cursor pagination, newest first.

use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestApp, email};

impl TestApp {
    /// `GET path` with another tenant's key; the JSON answer.
    async fn get_as(&self, api_key: &str, path: &str) -> Value {
        self.http.get(self.url(path)).bearer_auth(api_key).send().await.unwrap().json().await.unwrap()
    }

    async fn list(&self, query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(&format!("/v1/notifications?{query}")))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

#[tokio::test]
async fn pages_over_250_notifications_while_more_arrive_see_each_once() {
    let app = TestApp::api_only().await;
    let existing: HashSet<Uuid> = app.accept_many(250).await.into_iter().collect();

    let inserting = async {
        for i in 0..50 {
            app.accept(&email(&format!("late{i}@example.com"))).await;
        }
    };
    let paging = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(c) => format!("limit=40&cursor={c}"),
                None => "limit=40".into(),
            };
            let (status, page) = app.list(&query).await;
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 40);
            seen.extend(items.iter().map(|n| n["id"].as_str().unwrap().parse::<Uuid>().unwrap()));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break seen,
            }
        }
    };
    let ((), seen) = tokio::join!(inserting, paging);

    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an item came twice");
    assert!(existing.is_subset(&unique), "{} of the 250 are missing", existing.difference(&unique).count());
}

#[tokio::test]
async fn newest_first_with_filters() {
    let app = TestApp::api_only().await;
    let first = app.accept(&email("a@example.com")).await;
    let mut tagged = email("b@example.com");
    tagged["correlation_id"] = "order-7".into();
    tagged["type"] = "order.shipped".into();
    let second = app.accept(&tagged).await;
    let third = app.accept(&email("c@example.com")).await;

    let (_, all) = app.list("").await;
    let ids: Vec<String> =
        all["items"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec![third.to_string(), second.to_string(), first.to_string()]);
    assert!(all.get("next_cursor").is_none());

    let (_, by_correlation) = app.list("correlation_id=order-7").await;
    assert_eq!(by_correlation["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_correlation["items"][0]["id"], json!(second.to_string()));
    let (_, by_type) = app.list("type=order.shipped&status=pending").await;
    assert_eq!(by_type["items"].as_array().unwrap().len(), 1);
    let (_, none_sent) = app.list("status=sent").await;
    assert!(none_sent["items"].as_array().unwrap().is_empty());

    let created = app.get(second).await["created_at"].as_str().unwrap().to_owned();
    let (_, after) = app.list(&format!("created_after={}", created.replace('+', "%2B"))).await;
    assert_eq!(after["items"].as_array().unwrap().len(), 2, "second and third");
    let (_, before) = app.list(&format!("created_before={}", created.replace('+', "%2B"))).await;
    assert_eq!(before["items"].as_array().unwrap().len(), 1, "first");
}

#[tokio::test]
async fn bad_query_parameters_are_422_naming_them() {
    let app = TestApp::api_only().await;
    for (query, field) in [
        ("cursor=nonsense", "cursor"),
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("status=lost", "status"),
        ("created_after=yesterday", "created_after"),
        ("colour=red", "colour"),
    ] {
        let (status, problem) = app.list(query).await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(problem["errors"][0]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn another_tenants_notifications_are_not_listed() {
    let app = TestApp::api_only().await;
    app.accept(&email("a@example.com")).await;
    let other = app.env.store.create_tenant("other").await.unwrap();
    let page = app.get_as(&other.api_key, "/v1/notifications").await;
    assert!(page["items"].as_array().unwrap().is_empty());
}

/// Concurrent single requests share one commit whatever their tenant (group commit): each
/// notification still belongs to the tenant whose key sent it, and only it sees it.
#[tokio::test]
async fn concurrent_requests_of_two_tenants_each_land_in_their_own_tenant() {
    use futures_util::future::join_all;

    let app = TestApp::api_only().await;
    let other = app.env.store.create_tenant("other").await.unwrap();
    let send = |key: String, to: String| {
        let app = &app;
        async move {
            let response =
                app.http.post(app.url("/v1/notifications")).bearer_auth(&key).json(&email(&to)).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 202);
            let answer: Value = response.json().await.unwrap();
            answer["id"].as_str().unwrap().parse::<Uuid>().unwrap()
        }
    };
    let ours = (0..20).map(|i| send(app.api_key.clone(), format!("ours{i}@example.com")));
    let theirs = (0..20).map(|i| send(other.api_key.clone(), format!("theirs{i}@example.com")));
    let (ours, theirs) = tokio::join!(join_all(ours), join_all(theirs));

    let ids = |page: &Value| -> HashSet<Uuid> {
        page["items"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().parse().unwrap()).collect()
    };
    let (status, page) = app.list("limit=100").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), ours.iter().copied().collect());
    let page = app.get_as(&other.api_key, "/v1/notifications?limit=100").await;
    assert_eq!(ids(&page), theirs.iter().copied().collect());

    let (status, _) = app.call("GET", &format!("/v1/notifications/{}", theirs[0]), None).await;
    assert_eq!(status, 404, "another tenant's notification is not found");
    let theirs_seen = app.get_as(&other.api_key, &format!("/v1/notifications/{}", theirs[0])).await;
    let recipient = theirs_seen["deliveries"][0]["recipient"].as_str().unwrap();
    assert!(recipient.starts_with("theirs"), "{theirs_seen:#}");
}
