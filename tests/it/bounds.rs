//! Bounds that keep one tenant from hurting all: retry delays, metric labels, fan-out and
//! rendered sizes, NUL characters.

use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn a_type_whose_retry_delay_is_unbounded_is_422_naming_the_field() {
    let app = TestApp::api_only().await;
    for (retry, field) in [
        (json!({"max_delay": "1000years"}), "retry.max_delay"),
        (json!({"initial_delay": "8days", "max_delay": "7days"}), "retry.initial_delay"),
        (json!({"max_attempts": 1000}), "retry.max_attempts"),
    ] {
        let (status, problem) =
            app.call("PUT", "/v1/types/invoice.overdue", Some(&json!({"channels": ["email"], "retry": retry}))).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, _) = app.call("GET", "/v1/types/invoice.overdue", None).await;
    assert_eq!(status, 404, "nothing stored");
    let (status, stored) = app
        .call(
            "PUT",
            "/v1/types/invoice.overdue",
            Some(&json!({"channels": ["email"], "retry": {"max_delay": "7days"}})),
        )
        .await;
    assert_eq!(status, 201, "{stored}");
}
