//! The served OpenAPI document matches the handlers: a request built from each
//! documented operation and its examples gets one of its documented success answers.

use domain::Channel;
use serde_json::Value;
use worker::{SandboxConfig, SandboxFailure};

use crate::harness::{TestApp, WorkerOptions, email};

#[tokio::test]
async fn every_documented_example_succeeds() {
    let app = TestApp::api_only().await;
    let _relay = app.start_relay(100).await;
    let fails_once =
        SandboxConfig { failure_kind: SandboxFailure::Permanent, fail_first_attempts: 1, ..Default::default() };
    let _worker = app.start_worker(Channel::Email, WorkerOptions { sandbox: fails_once, ..Default::default() }).await;

    // Ids for the path parameters: a failed delivery to retry, a scheduled notification
    // to read and cancel.
    let failed = app.wait_for_status(app.accept(&email("a@example.com")).await, "failed").await;
    let failed_delivery = failed["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let mut later = email("b@example.com");
    later["send_at"] = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .into();
    let scheduled = app.accept(&later).await.to_string();

    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // Provider receipts must be signed by the provider (receipts.rs tests them), and
            // are not configured here: they answer 404.
            if operation["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t == "providers")) {
                continue;
            }
            let id = if path.starts_with("/v1/deliveries/") { &failed_delivery } else { &scheduled };
            let mut url = app.url(&path.replace("{id}", id));
            let query: Vec<String> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query" && !p["example"].is_null())
                .map(|p| {
                    let example = match &p["example"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{}={example}", p["name"].as_str().unwrap())
                })
                .collect();
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }
            let mut request = app.http.request(method.to_uppercase().parse().unwrap(), &url);
            let public =
                operation["security"].as_array().is_some_and(|s| s.iter().all(|r| r.as_object().unwrap().is_empty()));
            if !public {
                request = request.bearer_auth(&app.api_key);
            }
            if let Some(example) = operation["requestBody"]["content"]["application/json"].get("example") {
                request = request.json(example);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16().to_string();
            let documented: Vec<&String> =
                operation["responses"].as_object().unwrap().keys().filter(|s| s.starts_with('2')).collect();
            assert!(
                documented.contains(&&status),
                "{} {path}: answered {status}, documented {documented:?}: {}",
                method.to_uppercase(),
                response.text().await.unwrap()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 8, "every operation was tried");
}
