//! The example service (`examples/vendor-import`, Node.js on `@notify/client`), as seed 000
//! would run it: a purchase order without a vendor name makes its handler call
//! `notify("Vendor Name is missing", "HIGH")`, and the notification reaches the tenant's
//! support topic with the order as its record.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_service_notifies_support_of_a_missing_vendor_name() {
    let app = TestApp::api_only().await;
    for (path, body) in [
        ("/v1/subscribers/agent", json!({"email": "agent@example.com"})),
        ("/v1/topics/support/subscribers", json!({"add": ["agent"]})),
    ] {
        let (status, answer) = app.call("PUT", path, Some(&body)).await;
        assert!(status == 200 || status == 201, "{path}: {answer}");
    }

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/vendor-import");
    assert!(dir.join("node_modules/@notify/client").exists(), "`cargo xtask test` installs the example's dependencies");
    let mut service = tokio::process::Command::new("node")
        .arg("server.js")
        .current_dir(&dir)
        .env("NOTIFY_URL", app.url(""))
        .env("NOTIFY_API_KEY", &app.api_key)
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(service.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the service starts")
        .unwrap()
        .and_then(|line| line.strip_prefix("listening on ").map(str::to_owned))
        .expect("the service says its port");

    let orders = format!("http://127.0.0.1:{port}/purchase-orders");
    let imported: Value = app
        .http
        .post(&orders)
        .json(&json!({"id": "PO-8", "vendor_name": "ACME"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(imported, json!({"imported": true}));
    let refused: Value = app
        .http
        .post(&orders)
        .header("X-Request-Id", "req-7")
        .json(&json!({"id": "PO-7"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refused["imported"], false, "{refused}");

    let (status, n) =
        app.call("GET", &format!("/v1/notifications/{}", refused["notification"].as_str().unwrap()), None).await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["deliveries"][0]["recipient"], "agent@example.com", "the support topic's member");
    assert_eq!(
        (&n["type"], &n["severity"], &n["priority"], &n["correlation_id"], &n["data"]["record_id"]),
        (&json!("error"), &json!("high"), &json!("high"), &json!("req-7"), &json!("PO-7"))
    );
    let (_, all) = app.call("GET", "/v1/notifications", None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "the imported order notified no one");
}
