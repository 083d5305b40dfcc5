//! The served OpenAPI document matches the handlers: a request built from each
//! documented operation and its examples gets one of its documented success answers. It
//! is the committed `openapi.json`, which an OpenAPI validator accepts.

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

    // What the other examples refer to: the type of the template examples, the subscriber
    // of the topic examples.
    let (status, _) =
        app.call("PUT", "/v1/types/invoice.overdue", Some(&serde_json::json!({"channels": ["email"]}))).await;
    assert_eq!(status, 201);
    let (status, _) =
        app.call("PUT", "/v1/subscribers/u-42", Some(&serde_json::json!({"email": "u42@example.com"}))).await;
    assert_eq!(status, 201);
    // An inbox item of u-42 for the inbox operations, and u-42's token to call them with.
    let inbox = serde_json::json!({"type": "openapi.inbox", "to": [{"subscriber_id": "u-42"}], "channels": ["in_app"],
        "content": {"title": "Hello"}});
    let (status, accepted) = app.post(&inbox).await;
    assert_eq!(status, 202, "{accepted}");
    let item = accepted["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let (status, token) = app.call("POST", "/v1/subscribers/u-42/token", None).await;
    assert_eq!(status, 200, "{token}");
    let token = token["token"].as_str().unwrap().to_owned();
    // A webhook endpoint for the operations on one.
    let (status, endpoint) =
        app.call("POST", "/v1/webhooks", Some(&serde_json::json!({"url": "https://hooks.example.com/openapi"}))).await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();

    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // Writes before reads before deletes, so each operation finds what it names; the
    // subscriber's erasure last (its devices and inbox go with it, and its token).
    let rank = |method: &str| ["put", "post", "patch", "get", "delete"].iter().position(|m| *m == method).unwrap_or(4);
    let mut operations: Vec<(&String, &String, &Value)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().iter().map(move |(method, op)| (path, method, op)))
        .collect();
    operations.sort_by_key(|(path, method, _)| {
        (rank(method), path.as_str() == "/v1/subscribers/{id}" && *method == "delete", path.as_str())
    });
    let mut checked = 0;
    for (path, method, operation) in operations {
        // Provider receipts must be signed by the provider (receipts.rs tests them), and
        // are not configured here: they answer 404.
        if operation["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t == "providers")) {
            continue;
        }
        let mut path = path.clone();
        for p in operation["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
            let name = p["name"].as_str().unwrap();
            let value = match (name, p["example"].as_str()) {
                ("id", _) if path.starts_with("/v1/deliveries/") => failed_delivery.clone(),
                ("id", _) if path.starts_with("/v1/notifications/") => scheduled.clone(),
                ("id", _) if path.starts_with("/v1/inbox/") => item.clone(),
                ("id", _) if path.starts_with("/v1/webhooks/") => endpoint.clone(),
                (_, Some(example)) => example.to_owned(),
                _ => panic!("{method} {path}: path parameter `{name}` has no example"),
            };
            path = path.replace(&format!("{{{name}}}"), &value);
        }
        let mut url = app.url(&path);
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
        let schemes: Vec<&String> = operation["security"]
            .as_array()
            .map(|s| s.iter().flat_map(|r| r.as_object().unwrap().keys()).collect())
            .unwrap_or_default();
        let public = operation["security"].is_array() && schemes.is_empty();
        if schemes.iter().any(|s| *s == "subscriber_token") {
            request = request.bearer_auth(&token);
        } else if !public {
            request = request.bearer_auth(&app.api_key);
        }
        if let Some(example) = operation["requestBody"]["content"]["application/json"].get("example") {
            let mut example = example.clone();
            // A replay's window must be within the last 14 days: the example's, moved to now.
            if path.ends_with("/replay") {
                let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
                example["since"] = hour_ago.format(&time::format_description::well_known::Rfc3339).unwrap().into();
                example.as_object_mut().unwrap().remove("until");
            }
            request = request.json(&example);
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
    assert_eq!(checked, 56, "every operation was tried");
}

#[test]
fn every_operation_has_a_unique_operation_id_a_tag_and_the_crate_version() {
    // The document itself (the served one is compared with the committed one below).
    let doc: Value = serde_json::from_str(&notify_api::openapi_json()).unwrap();
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"), "info.version is the crates' version");
    let mut ids = std::collections::HashMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let where_ = format!("{method} {path}");
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{where_}: no operationId"));
            // Client generators turn these into method names: camelCase, starting lower.
            assert!(
                id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{where_}: operationId {id:?}"
            );
            assert!(operation["tags"].as_array().is_some_and(|t| t.len() == 1), "{where_}: one tag");
            if let Some(other) = ids.insert(id.to_owned(), where_.clone()) {
                panic!("operationId {id} of both {other} and {where_}");
            }
        }
    }
    assert!(ids.len() >= 57, "{} operations", ids.len());
}

#[tokio::test]
async fn the_committed_openapi_json_is_the_served_document() {
    let app = TestApp::api_only().await;
    let served: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(served == committed, "{} is not the served document: run `cargo xtask openapi`", path.display());
}

#[test]
fn an_openapi_validator_accepts_the_committed_document() {
    // Installed beside schemathesis by `cargo xtask test`.
    let validator = crate::schemathesis::schemathesis().with_file_name("openapi-spec-validator");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json");
    let output = std::process::Command::new(&validator)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e} (`cargo xtask test` installs it)", validator.display()));
    assert!(
        output.status.success(),
        "openapi-spec-validator refuses openapi.json:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
