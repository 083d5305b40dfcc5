//! `/v1/me/preferences`: an end user reads and changes their own preferences with their
//! subscriber token; the tenant's critical types are shown and cannot be turned off.

use serde_json::{Value, json};

use crate::harness::TestApp;

async fn as_subscriber(app: &TestApp, token: &str, method: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app.http.request(method.parse().unwrap(), app.url("/v1/me/preferences")).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_end_user_manages_their_own_preferences_but_not_a_critical_type() {
    let app = TestApp::api_only().await;
    for (path, body) in [
        ("/v1/subscribers/u-1", json!({"email": "u1@example.com"})),
        ("/v1/types/security.alert", json!({"channels": ["email"], "critical": true})),
        ("/v1/types/newsletter", json!({"channels": ["email"], "category": "marketing"})),
    ] {
        let (status, answer) = app.call("PUT", path, Some(&body)).await;
        assert_eq!(status, 201, "{path}: {answer}");
    }
    let (_, token) = app.call("POST", "/v1/subscribers/u-1/token", None).await;
    let token = token["token"].as_str().unwrap().to_owned();

    let (status, mine) = as_subscriber(&app, &token, "GET", None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["preferences"], json!({"channels": {}, "types": {}, "categories": {}, "quiet_hours": null}));
    assert_eq!(
        mine["types"],
        json!([
            {"key": "newsletter", "category": "marketing", "channels": ["email"], "critical": false},
            {"key": "security.alert", "category": null, "channels": ["email"], "critical": true}
        ])
    );

    let chosen = json!({"channels": {}, "types": {"newsletter": {"email": false}}, "categories": {"marketing": {"email": false}},
        "quiet_hours": {"start": "22:00", "end": "07:00"}});
    let (status, mine) = as_subscriber(&app, &token, "PUT", Some(chosen.clone())).await;
    assert_eq!((status, &mine["preferences"]), (200, &chosen), "{mine}");
    let (status, stored) = app.call("GET", "/v1/subscribers/u-1/preferences", None).await;
    assert_eq!((status, stored), (200, chosen.clone()), "the tenant sees what the user chose");

    // A critical type cannot be turned off (turning it on is no change), and nothing changes.
    let off = json!({"types": {"security.alert": {"email": false}}});
    let (status, problem) = as_subscriber(&app, &token, "PUT", Some(off)).await;
    assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!("types.security.alert.email")), "{problem}");
    let (_, stored) = app.call("GET", "/v1/subscribers/u-1/preferences", None).await;
    assert_eq!(stored, chosen);

    // The API key is not a subscriber token; an erased subscriber's token opens nothing.
    let (status, _) = as_subscriber(&app, &app.api_key.clone(), "GET", None).await;
    assert_eq!(status, 401);
    let (status, _) = app.call("DELETE", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 204);
    let (status, _) = as_subscriber(&app, &token, "GET", None).await;
    assert_eq!(status, 401);
}
