//! Microsoft Teams through a Workflows webhook ("When a Teams webhook request is
//! received"; docs/providers.md, Teams): `POST <url>` with one Adaptive Card attachment,
//! the template's card (`content.structured.teams`) or the text in a wrapping TextBlock.
//!
//! The flow answers `202` (some `200`) with an empty body once its run is queued: the post
//! is accepted, whether the flow then delivers it only its owner sees. 400 (a card the
//! trigger refuses), 401/403 (a bad signature), 404/410 (the flow is gone) fail this
//! address's message for good.

use domain::{DeliveryJob, FailureKind, SendOutcome};
use reqwest::Url;
use serde_json::Value;

use crate::http::{self, Client};

pub const NAME: &str = "teams";

/// Teams refuses a message over about 28 KB; checked before sending, as it cannot pass.
pub const MAX_PAYLOAD_BYTES: usize = domain::chat::MAX_TEAMS_PAYLOAD_BYTES;

/// The message the Workflows template posts: it iterates `attachments` and posts each card.
pub fn payload(job: &DeliveryJob) -> Value {
    domain::chat::teams_payload(super::text(job), super::structured(job, "teams"))
}

/// Posts `job` to the webhook `url` (`address`, checked).
pub(super) async fn post(http: &Client, job: &DeliveryJob, address: &str, url: Url) -> SendOutcome {
    let body = payload(job).to_string();
    if body.len() > MAX_PAYLOAD_BYTES {
        let message = format!("the card is {} bytes, Teams takes at most {MAX_PAYLOAD_BYTES}", body.len());
        return super::failure(FailureKind::Permanent, "payload_too_large", &message, address, None);
    }
    let request = http.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    let answer = match http::send(request).await {
        Ok(answer) => answer,
        Err(failure) => return super::transport(failure, address),
    };
    if answer.status.is_success() {
        return super::webhook::accepted(NAME, &answer);
    }
    // Logic Apps errors are `{"error": {"code": "WorkflowNotFound", "message": …}}`.
    let error = answer.json().map(|body| body["error"].clone()).unwrap_or(Value::Null);
    let code = match error["code"].as_str() {
        Some(code) if code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            code.to_owned()
        }
        _ => http::status_code(answer.status),
    };
    let said = error["message"].as_str().unwrap_or("no detail");
    let message = format!("Teams refused the post ({}): {said}", answer.status);
    super::failure(super::webhook::kind(answer.status), code, &message, address, answer.retry_after)
}
