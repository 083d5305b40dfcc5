//! Slack incoming webhooks (docs/providers.md, Slack): `POST <url>` with `{text, blocks}` to
//! the URL after `slack_webhook:`, which is the credential and fixes the channel.
//!
//! Success is `200 ok`; errors are a plain-text code with a real status (`400 no_text`,
//! `403 invalid_token`, `404 no_service`, `410 channel_is_archived`). Every refusal is
//! this address's alone: the message fails for good and the provider carries on for others.

use domain::{DeliveryJob, SendOutcome};
use reqwest::Url;
use serde_json::json;

use crate::http::{self, Client};

pub const NAME: &str = "slack_webhook";

/// Posts `job` to the webhook `url` (`address`, checked).
pub(super) async fn post(http: &Client, job: &DeliveryJob, address: &str, url: Url) -> SendOutcome {
    let mut body = json!({"text": super::escape_slack(super::text(job))});
    if let Some(blocks) = super::structured(job, "slack") {
        body["blocks"] = blocks.clone();
    }
    let answer = match http::send(http.post(url).json(&body)).await {
        Ok(answer) => answer,
        Err(failure) => return super::transport(failure, address),
    };
    if answer.status.is_success() {
        return super::webhook::accepted(NAME, &answer);
    }
    let text = String::from_utf8_lossy(&answer.body);
    let code = super::webhook::code_or_status(&text, answer.status);
    let message = format!("Slack refused the webhook post ({}): {code}", answer.status);
    super::failure(super::webhook::kind(answer.status), code, &message, address, answer.retry_after)
}
