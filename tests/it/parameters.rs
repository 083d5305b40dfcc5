//! Path and query parameters: a NUL character (`%00`), which PostgreSQL's text cannot hold,
//! is refused before any handler runs, naming the parameter, wherever it is. And bodies,
//! cursors and keys are taken as the OpenAPI document declares them.

use serde_json::{Value, json};

use crate::harness::TestApp;

/// Any call with `bearer` as the credential; status and JSON body.
async fn call_as(app: &TestApp, bearer: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.http.request(method, app.url(path)).bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn named(problem: &Value) -> Vec<&str> {
    problem["errors"].as_array().map(|e| e.iter().filter_map(|e| e["field"].as_str()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn a_nul_character_in_a_path_or_query_parameter_is_422_naming_it() {
    let app = TestApp::api_only().await;
    let (status, _) = app.call("PUT", "/v1/subscribers/u-1", Some(&json!({"email": "u1@example.com"}))).await;
    assert_eq!(status, 201);
    let (status, _) = app.call("PUT", "/v1/topics/staff/subscribers", Some(&json!({"add": ["u-1"]}))).await;
    assert_eq!(status, 200);
    let (status, body) = app.call("POST", "/v1/subscribers/u-1/token", None).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let template = json!({"subject": "Hi", "text": "Hello"});

    let key = app.api_key.clone();
    let cases: Vec<(&str, String, Option<Value>, &str, &str)> = vec![
        ("GET", "/v1/subscribers/u%00-1".into(), None, &key, "id"),
        ("DELETE", "/v1/subscribers/u%00-1".into(), None, &key, "id"),
        ("GET", "/v1/subscribers/u%00-1/preferences".into(), None, &key, "id"),
        ("POST", "/v1/subscribers/u%00-1/token".into(), None, &key, "id"),
        ("GET", "/v1/types/a%00b".into(), None, &key, "key"),
        ("PUT", "/v1/types/a%00b".into(), Some(json!({"channels": ["email"]})), &key, "key"),
        ("GET", "/v1/templates/a%00b/email".into(), None, &key, "type"),
        ("PUT", "/v1/templates/a%00b/email".into(), Some(template.clone()), &key, "type"),
        ("DELETE", "/v1/templates/a%00b/email".into(), None, &key, "type"),
        ("GET", "/v1/templates/invoice/email?locale=d%00e".into(), None, &key, "locale"),
        ("GET", "/v1/topics/st%00aff/subscribers".into(), None, &key, "key"),
        ("GET", "/v1/notifications?type=a%00b".into(), None, &key, "type"),
        ("GET", "/v1/inbox?type=a%00b".into(), None, &token, "type"),
        ("GET", "/v1/inbox?tag=a%00b".into(), None, &token, "tag"),
        ("GET", "/v1/inbox?unread_only=true&tag=%00".into(), None, &token, "tag"),
    ];
    for (method, path, body, bearer, parameter) in &cases {
        let (status, problem) = call_as(&app, bearer, method, path, body.as_ref()).await;
        assert_eq!((status, named(&problem)), (422, vec![*parameter]), "{method} {path}: {problem}");
    }

    // A topic cursor is a position among the ids, in hex. One holding a NUL (which no id
    // holds, nor can PostgreSQL's text) is the position without it: `u`, before `u-1`.
    let cursor = hex::encode("u\0");
    let (status, page) = app.call("GET", &format!("/v1/topics/staff/subscribers?cursor={cursor}"), None).await;
    assert_eq!((status, &page["items"]), (200, &json!(["u-1"])), "{page}");

    // Nothing was written or erased.
    let (status, subscriber) = app.call("GET", "/v1/subscribers/u-1", None).await;
    assert_eq!((status, &subscriber["email"]), (200, &json!("u1@example.com")));
    let (status, types) = app.call("GET", "/v1/types", None).await;
    assert_eq!((status, &types["items"]), (200, &json!([])));
}

/// What the OpenAPI document declares is what the API takes: a body and every object in
/// it are JSON objects (serde would fill a struct from an array of its fields), a page's
/// cursor of the declared shape is a position, and a topic key of the wrong shape is
/// refused rather than listed as an empty topic.
#[tokio::test]
async fn bodies_cursors_and_keys_are_taken_as_the_document_declares() {
    let app = TestApp::api_only().await;
    for (method, path, body, field) in [
        ("PUT", "/v1/subscribers/u-1", json!([null, null]), "(body)"),
        ("PUT", "/v1/subscribers/u-1", json!({"chat": [null, null, null]}), "chat"),
        ("PUT", "/v1/subscribers/u-1/preferences", json!({"quiet_hours": ["22:00", "07:00"]}), "quiet_hours"),
        ("PUT", "/v1/types/t", json!({"channels": ["email"], "retry": [3]}), "retry"),
        ("POST", "/v1/notifications", json!({"type": "t", "to": [["a@example.com"]]}), "to[0]"),
        ("POST", "/v1/notifications/batch", json!([{"type": "t"}]), "(body)"),
    ] {
        let (status, problem) = app.call(method, path, Some(&body)).await;
        assert_eq!((status, named(&problem)), (422, vec![field]), "{method} {path} {body}: {problem}");
    }
    let (status, _) = app.call("GET", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 404, "a refused body wrote nothing");

    // Any cursor of the declared shape is a position in the list, far past or far ahead.
    let id = app
        .accept(&json!({"type": "t", "to": [{"email": "a@example.com"}], "content": {"subject": "s", "text": "t"}}))
        .await;
    let far_ahead = format!("7f{}", "f".repeat(46));
    let (status, page) = app.call("GET", &format!("/v1/notifications?cursor={far_ahead}"), None).await;
    assert_eq!((status, &page["items"][0]["id"]), (200, &json!(id.to_string())), "{page}");
    let (status, page) = app.call("GET", &format!("/v1/notifications?cursor={}", "0".repeat(48)), None).await;
    assert_eq!((status, &page["items"]), (200, &json!([])), "{page}");

    let (status, problem) = app.call("GET", "/v1/topics/bad%20key/subscribers", None).await;
    assert_eq!((status, named(&problem)), (422, vec!["key"]), "{problem}");
}
