//! A notification read back is bounded whatever its fan-out: counts, the first deliveries
//! without their rendered content, and a cursor to page the rest.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::{bounds::topic_of, harness::TestApp};

const MEMBERS: usize = 250;

fn deliveries(page: &Value) -> &Vec<Value> {
    page.as_array().unwrap()
}

#[tokio::test]
async fn a_large_fan_out_reads_back_bounded_and_pages_its_deliveries() {
    let app = TestApp::api_only().await;
    let (status, _) = app.call("PUT", "/v1/types/digest", Some(&json!({"channels": ["email"]}))).await;
    assert_eq!(status, 201);
    let template = json!({"subject": "Digest", "text": "{{ subscriber.id }}: {{ subscriber.data.x }}"});
    let (status, _) = app.call("PUT", "/v1/templates/digest/email", Some(&template)).await;
    assert_eq!(status, 200);
    topic_of(&app, "staff", MEMBERS as i32).await;
    let id = app.accept(&json!({"type": "digest", "to": [{"topic": "staff"}]})).await;

    let n = app.get(id).await;
    assert_eq!(n["delivery_count"], MEMBERS, "{}", n["delivery_count"]);
    assert_eq!(n["delivery_counts"], json!({"email": {"pending": MEMBERS}}));
    let shown = deliveries(&n["deliveries"]);
    assert_eq!(shown.len(), 100, "the view shows the first 100 deliveries");
    assert!(shown.iter().all(|d| d.get("content").is_none()), "no rendered content by default");
    assert_eq!(n["events_truncated"], false);
    let cursor = n["deliveries_cursor"].as_str().expect("a cursor to the rest").to_owned();
    assert_eq!(cursor, shown[99]["id"]);

    // Paged from the view's cursor, with their content: every delivery once.
    let mut seen: Vec<String> = shown.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let (status, page) = app
            .call("GET", &format!("/v1/notifications/{id}/deliveries?limit=60&include=content&cursor={cursor}"), None)
            .await;
        assert_eq!(status, 200, "{page}");
        for d in deliveries(&page["items"]) {
            let subscriber = d["subscriber_id"].as_str().unwrap();
            assert_eq!(d["content"]["text"], format!("{subscriber}: x of {subscriber}"));
            seen.push(d["id"].as_str().unwrap().to_owned());
        }
        next = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), MEMBERS);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), MEMBERS, "no delivery twice");
    let (status, first) = app.call("GET", &format!("/v1/notifications/{id}/deliveries?limit=500"), None).await;
    assert_eq!((status, deliveries(&first["items"]).len()), (200, MEMBERS));
    assert!(first.get("next_cursor").is_none());
    assert!(deliveries(&first["items"]).iter().all(|d| d.get("content").is_none()));

    // The answer to a cancel is as bounded.
    let (status, cancelled) = app.call("POST", &format!("/v1/notifications/{id}/cancel"), None).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["delivery_counts"], json!({"email": {"cancelled": MEMBERS}}));
    assert_eq!(deliveries(&cancelled["deliveries"]).len(), 100);

    for (query, field) in [("include=html", "include"), ("cursor=nope", "cursor"), ("limit=501", "limit"), ("x=1", "x")]
    {
        let (status, problem) = app.call("GET", &format!("/v1/notifications/{id}/deliveries?{query}"), None).await;
        assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!(field)), "{query}: {problem}");
    }
    let other = uuid::Uuid::now_v7();
    let (status, _) = app.call("GET", &format!("/v1/notifications/{other}/deliveries"), None).await;
    assert_eq!(status, 404);
}
