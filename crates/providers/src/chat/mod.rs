//! The chat providers: Slack through a bot token (`slack`), Slack incoming webhooks
//! (`slack_webhook`), Microsoft Teams Workflows webhooks (`teams`) and Discord webhooks
//! (`discord`), one module each; here what they share.
//!
//! A chat recipient is `<provider>:<address>` (`slack:C024BE91L`, `discord:https://…`), and
//! each provider serves only its own prefix. A webhook URL is a credential: it is checked
//! before every send (https, a host of the provider's) and kept out of every stored
//! failure message, as the whole URL and as any long part of it.

use domain::{DeliveryJob, FailureKind, SendFailure, SendOutcome};
use reqwest::Url;
use serde_json::Value;

use crate::http;

pub mod discord;
pub mod slack;
pub mod slack_webhook;
pub mod teams;
pub mod webhook;

pub use slack::{SlackProvider, SlackUnit};
pub use webhook::{Webhook, WebhookProvider, WebhookUnit};

/// The chat units, as the catalog lists them.
pub const SLACK: SlackUnit = SlackUnit;
pub const SLACK_WEBHOOK: WebhookUnit = WebhookUnit(Webhook::Slack);
pub const TEAMS: WebhookUnit = WebhookUnit(Webhook::Teams);
pub const DISCORD: WebhookUnit = WebhookUnit(Webhook::Discord);

/// The address of `job` for the provider `name`: what follows `<name>:` in its recipient.
pub fn address<'a>(job: &'a DeliveryJob, name: &str) -> Option<&'a str> {
    job.recipient.strip_prefix(name)?.strip_prefix(':')
}

/// The provider's own part of the content: `content.structured[key]`, unless absent or null.
pub(crate) fn structured<'a>(job: &'a DeliveryJob, key: &str) -> Option<&'a Value> {
    job.content.structured.as_ref()?.get(key).filter(|v| !v.is_null())
}

/// The job's text; chat content always has one (checked at accept), empty otherwise.
pub(crate) fn text(job: &DeliveryJob) -> &str {
    job.content.text.as_deref().unwrap_or("")
}

/// Slack's markup escaping: exactly `&`, `<` and `>`, which also disarms `<!channel>` and
/// `<@U…>` mentions written into the text.
pub fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `text` without the address or any part of it that may hold its secret: the URL whole,
/// its path and query, and every path segment or query value of 8 characters or more (a
/// webhook's token, a flow's signature).
pub(crate) fn redact(text: &str, address: &str) -> String {
    let mut parts = vec![address.to_owned()];
    if let Ok(url) = Url::parse(address) {
        parts.push(url.path().to_owned());
        parts.extend(url.query().map(str::to_owned));
        parts.extend(url.path_segments().into_iter().flatten().map(str::to_owned));
        parts.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
    }
    parts.retain(|p| p.chars().count() >= 8);
    // Longest first, so that a URL goes whole rather than in pieces.
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut text = text.to_owned();
    for part in parts {
        text = text.replace(&part, "<recipient>");
    }
    text
}

/// A failure for the attempts log, the address and its parts redacted.
pub(crate) fn failure(
    kind: FailureKind,
    code: impl Into<String>,
    message: &str,
    address: &str,
    retry_after: Option<std::time::Duration>,
) -> SendOutcome {
    SendOutcome::Failed(http::failure(kind, code, &redact(message, address), address, retry_after))
}

/// A failure of the HTTP stack ([`http::send`]), redacted as every other.
pub(crate) fn transport(failure: SendFailure, address: &str) -> SendOutcome {
    let message = redact(&failure.message, address);
    SendOutcome::Failed(SendFailure { message, ..failure })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_is_escaped() {
        assert_eq!(escape_slack("a & b <!channel> <@U1> c>d"), "a &amp; b &lt;!channel&gt; &lt;@U1&gt; c&gt;d");
    }

    #[test]
    fn every_part_of_a_webhook_url_is_redacted() {
        let url = "https://discord.com/api/webhooks/123456789012/sEcReT-ToKeN_abc?thread_id=99887766554";
        let text = format!(
            "failed for {url}; token sEcReT-ToKeN_abc; thread 99887766554; path /api/webhooks/123456789012/sEcReT-ToKeN_abc"
        );
        let redacted = redact(&text, url);
        for secret in ["sEcReT-ToKeN_abc", "123456789012", "99887766554"] {
            assert!(!redacted.contains(secret), "{redacted}");
        }
        assert!(redacted.starts_with("failed for <recipient>;"), "{redacted}");
    }
}
