//! Discord webhooks (docs/providers.md, Discord): `POST <url>?wait=true` with `{content,
//! embeds, allowed_mentions: {"parse": []}}`. With `wait=true` Discord answers the message
//! it saved (its `id`); without it, a message it drops is not an error.
//!
//! Never a ping: `allowed_mentions` parses none, and `@everyone`/`@here` in the text are
//! broken with a zero-width space so that they do not even read as a mention. A 404
//! (Unknown Webhook, 10015) or 401/403 means the webhook is gone for good: Discord asks
//! that it is not tried again, and restricts addresses that keep trying.

use std::time::Duration;

use domain::{DeliveryJob, FailureKind, SendOutcome, SendReceipt};
use reqwest::Url;
use serde_json::{Value, json};

use crate::http::{self, Answer, Client};

pub const NAME: &str = "discord";

/// Discord's limit on `content`, in characters.
pub const MAX_CONTENT_CHARS: usize = domain::chat::MAX_DISCORD_TEXT_CHARS;

/// `@everyone` and `@here` with a zero-width space after the `@`: shown alike, never a mention.
pub fn without_mass_mentions(text: &str) -> String {
    domain::chat::discord_text(text)
}

/// Posts `job` to the webhook `url` (`address`, checked).
pub(super) async fn post(http: &Client, job: &DeliveryJob, address: &str, mut url: Url) -> SendOutcome {
    let content = without_mass_mentions(super::text(job));
    let chars = content.chars().count();
    if chars > MAX_CONTENT_CHARS {
        let message = format!("the text is {chars} characters, Discord takes at most {MAX_CONTENT_CHARS}");
        return super::failure(FailureKind::Permanent, "content_too_long", &message, address, None);
    }
    let mut body = json!({"content": content, "allowed_mentions": {"parse": []}});
    if let Some(embeds) = super::structured(job, "discord") {
        // One embed object or a list of them.
        body["embeds"] = if embeds.is_array() { embeds.clone() } else { json!([embeds]) };
    }
    // `wait=true` whatever the URL says (a `thread_id` in it stays).
    let kept: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != "wait").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair("wait", "true");
    match http::send(http.post(url).json(&body)).await {
        Ok(answer) => outcome(&answer, address),
        Err(failure) => super::transport(failure, address),
    }
}

fn outcome(answer: &Answer, address: &str) -> SendOutcome {
    let body = answer.json().unwrap_or(Value::Null);
    if answer.status.is_success() {
        return match body["id"].as_str() {
            Some(id) => SendOutcome::Sent(SendReceipt { provider_message_id: id.to_owned(), response_excerpt: None }),
            // With `wait=true` a saved message comes back; without one, whether it was saved is unknown.
            None => {
                let message = format!("Discord answered {} without the message", answer.status);
                super::failure(FailureKind::Ambiguous, "no_message_id", &message, address, None)
            }
        };
    }
    let status = answer.status.as_u16();
    // `{"message": "Unknown Webhook", "code": 10015}`; a 429 adds `retry_after` in seconds.
    let said = body["message"].as_str().unwrap_or("no detail");
    let discord_code = body["code"].as_u64();
    let code = match (status, discord_code) {
        (429, _) => "rate_limited".to_owned(),
        (_, Some(10015)) => "unknown_webhook".to_owned(),
        _ => http::status_code(answer.status),
    };
    let retry_after = body["retry_after"]
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
        .or(answer.retry_after);
    let detail = discord_code.map_or_else(String::new, |c| format!(" (code {c})"));
    let message = format!("Discord refused the message ({}): {said}{detail}", answer.status);
    super::failure(super::webhook::kind(answer.status), code, &message, address, retry_after)
}
