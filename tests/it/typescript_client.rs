//! The TypeScript client (`clients/typescript`) against the real API: its types are
//! generated from the committed `openapi.json` and must be current, and its tests
//! (`node --test`) run against an API started here. `cargo xtask test` installs and builds
//! the package first (`NOTIFY_TEST_TS_CLIENT` names it).

use std::{path::PathBuf, time::Duration};

use serde_json::json;

use crate::harness::TestApp;

fn package() -> PathBuf {
    match std::env::var("NOTIFY_TEST_TS_CLIENT") {
        Ok(dir) => dir.into(),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript"),
    }
}

#[tokio::test]
async fn the_generated_types_are_those_of_the_committed_document() {
    let dir = package();
    let generator = dir.join("node_modules/.bin/openapi-typescript");
    assert!(generator.exists(), "{} is missing: `cargo xtask test` installs the package", generator.display());
    let out = tempfile::tempdir().unwrap();
    let generated = out.path().join("schema.d.ts");
    let status = tokio::process::Command::new(&generator)
        .arg(dir.join("../../openapi.json"))
        .arg("-o")
        .arg(&generated)
        .output()
        .await
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let committed = std::fs::read_to_string(dir.join("src/schema.d.ts")).unwrap();
    assert!(
        std::fs::read_to_string(&generated).unwrap() == committed,
        "clients/typescript/src/schema.d.ts is not what openapi.json generates: run `npm run generate` there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_passes_its_tests_against_the_api() {
    let app = TestApp::api_only().await;
    for (path, body) in [
        ("/v1/subscribers/agent", json!({"email": "agent@example.com"})),
        ("/v1/subscribers/buyer", json!({"email": "buyer@example.com"})),
        ("/v1/topics/support/subscribers", json!({"add": ["agent"]})),
        ("/v1/topics/customer/subscribers", json!({"add": ["buyer"]})),
        ("/v1/classifications", json!({"classes": {"mapping": {"audience": "customer", "priority": "low"}}})),
    ] {
        let (status, answer) = app.call("PUT", path, Some(&body)).await;
        assert!(status == 200 || status == 201, "{path}: {answer}");
    }
    let limited = TestApp::api_with(|c| c.rate_limit = notify_api::Rate { per_second: 1, burst: 1 }).await;

    let dir = package();
    assert!(dir.join("dist/index.js").exists(), "the package is not built: `cargo xtask test` builds it");
    let run = tokio::process::Command::new("node")
        .args(["--test", "test/client.test.js"])
        .current_dir(&dir)
        .env("NOTIFY_URL", app.url(""))
        .env("NOTIFY_API_KEY", &app.api_key)
        .env("NOTIFY_LIMITED_URL", limited.url(""))
        .env("NOTIFY_LIMITED_API_KEY", &limited.api_key)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run).await.expect("node --test ends").unwrap();
    assert!(
        output.status.success(),
        "node --test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
