//! The served OpenAPI document fuzzed by schemathesis (PyPI) with every check: its
//! examples and random cases of every operation against a running API answer no 5xx, only
//! documented statuses and bodies, take what the document allows (but for the rules
//! `tests/schemathesis.toml` lists) and refuse what it does not. `cargo xtask test`
//! installs it into `.venv-schemathesis` and points `NOTIFY_TEST_SCHEMATHESIS` at it.

use std::{path::PathBuf, time::Duration};

use serde_json::json;

use crate::harness::TestApp;

/// Random cases per operation: enough to find what a malformed parameter or body does,
/// few enough that the run takes a minute or so.
const MAX_EXAMPLES: &str = "30";

pub(crate) fn schemathesis() -> PathBuf {
    if let Ok(st) = std::env::var("NOTIFY_TEST_SCHEMATHESIS") {
        return st.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-schemathesis/bin/st")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_passes_every_schemathesis_check() {
    // A rate high enough that the fuzzing is not all 429s.
    let app = TestApp::api_with(|c| c.rate_limit = notify_api::Rate { per_second: 10_000, burst: 10_000 }).await;
    // What the examples refer to: a type of the template examples, a subscriber of the
    // topic examples.
    let (status, _) = app.call("PUT", "/v1/types/invoice.overdue", Some(&json!({"channels": ["email"]}))).await;
    assert_eq!(status, 201);
    let (status, _) = app.call("PUT", "/v1/subscribers/u-42", Some(&json!({"email": "u42@example.com"}))).await;
    assert_eq!(status, 201);

    let (status, token) = app.call("POST", "/v1/subscribers/u-42/token", None).await;
    assert_eq!(status, 200, "{token}");
    let token = token["token"].as_str().unwrap().to_owned();

    // The inbox's operations take a subscriber token, the others the API key. Both run
    // before the verdict, so one run shows every finding.
    let findings = [
        fuzz(&app, &app.api_key, &["--exclude-tag", "inbox"]).await,
        fuzz(&app, &token, &["--include-tag", "inbox"]).await,
    ];
    let findings: Vec<String> = findings.into_iter().flatten().collect();
    assert!(findings.is_empty(), "schemathesis found failures:\n{}", findings.join("\n"));
}

/// Runs schemathesis over the operations `filter` selects, with `bearer` as credential;
/// its report when it found a failure.
async fn fuzz(app: &TestApp, bearer: &str, filter: &[&str]) -> Option<String> {
    let st = schemathesis();
    assert!(st.exists(), "{} is missing: `cargo xtask test` installs schemathesis", st.display());
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let run = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &app.url("/openapi.json")])
        .args([
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "22",
            // No string may hold a NUL (the document's description says so; a free-form
            // object such as `data` cannot declare it on its strings).
            "--generation-allow-x00",
            "false",
        ])
        .args(["--header", &format!("Authorization: Bearer {bearer}")])
        // One worker: with two threads, Python 3.11's `ast` (which hypothesis uses to
        // describe its filters) can fail with "AST constructor recursion depth mismatch"
        // (CPython gh-106905), an error of the tool's, not a finding.
        .args(["--request-timeout", "10", "--workers", "1", "--no-color"])
        .args(filter)
        // Its caches (`.schemathesis`, `.hypothesis`) go to the test's own directory.
        .current_dir(app.sandbox.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run).await.expect("schemathesis ends").unwrap();
    (!output.status.success())
        .then(|| format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}
