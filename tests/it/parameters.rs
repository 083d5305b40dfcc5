//! Path and query parameters: a NUL character (`%00`), which PostgreSQL's text cannot hold,
//! is refused before any handler runs, naming the parameter, wherever it is.

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

    // A topic cursor is a member's id in hex: one that decodes to a NUL is not one we gave.
    let cursor = hex::encode("u\0");
    let (status, problem) = app.call("GET", &format!("/v1/topics/staff/subscribers?cursor={cursor}"), None).await;
    assert_eq!((status, named(&problem)), (422, vec!["cursor"]), "{problem}");

    // Nothing was written or erased.
    let (status, subscriber) = app.call("GET", "/v1/subscribers/u-1", None).await;
    assert_eq!((status, &subscriber["email"]), (200, &json!("u1@example.com")));
    let (status, types) = app.call("GET", "/v1/types", None).await;
    assert_eq!((status, &types["items"]), (200, &json!([])));
}
