//! Slack through a bot token (docs/providers.md, Slack): `POST {base_url}/chat.postMessage`
//! with `Authorization: Bearer xoxb-…`, to the channel id after `slack:` (a user id `U…`/
//! `W…` posts in the app's direct messages with that user).
//!
//! Slack answers errors with HTTP 200 and `{"ok": false, "error": "…"}`: only `ok: true` is
//! a send. Token errors are `Config` (the tenant's installation is broken: the worker pauses
//! that integration), errors of the destination or the message are `Permanent`.

use std::sync::Arc;

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{Channel, DeliveryJob, FailureKind, Provider, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    http::{self, Answer, Client},
    settings::{self, Refused},
};

pub const NAME: &str = "slack";
pub const DEFAULT_BASE_URL: &str = "https://slack.com/api";

/// The `slack` unit: `[chat.slack]`, or a tenant's integration.
pub struct SlackUnit;

const REFUSED: Refused<'static> =
    Refused { config: &[], integration: &[("base_url", "a tenant's client calls Slack's API")] };

/// `[chat.slack]`, and a tenant's integration but for `base_url`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SlackConfig {
    /// The app's bot token, `xoxb-…`.
    bot_token: Option<SecretString>,
    /// Slack's Web API, `https://slack.com/api`; the operator's only, for a stand-in.
    base_url: Option<String>,
}

impl ProviderUnit for SlackUnit {
    fn channel(&self) -> Channel {
        Channel::Chat
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn secrets(&self) -> &'static [&'static str] {
        &["bot_token"]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let (config, section) = settings::read::<SlackConfig>(&source, Channel::Chat, NAME, &REFUSED)?;
        let base_url = match (&source, settings::given(&config.base_url)) {
            (Source::Integration(integration), _) => {
                settings::integration_base_url(integration.rules, NAME, DEFAULT_BASE_URL)
            }
            (Source::Config(_), Some(url)) => settings::base_url(url, &section, "base_url")?,
            (Source::Config(_), None) => DEFAULT_BASE_URL.to_owned(),
        };
        let token = section.required_secret(&config.bot_token, "bot_token")?.expose_secret().trim();
        // `xoxe.xoxb-` is a bot token of an app with token rotation.
        if !(token.starts_with("xoxb-") || token.starts_with("xoxe.xoxb-")) {
            return Err(section.invalid("bot_token", "must be a Slack bot token (`xoxb-…`)"));
        }
        let mut authorization = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| section.invalid("bot_token", "holds characters a header cannot carry"))?;
        authorization.set_sensitive(true);
        Ok(Box::new(SlackSettings { authorization, base_url }))
    }
}

#[derive(Debug)]
pub struct SlackSettings {
    /// `Bearer <token>`, marked sensitive so that it never shows in a debug print.
    authorization: HeaderValue,
    base_url: String,
}

impl SlackSettings {
    fn provider(&self, http: Client) -> SlackProvider {
        SlackProvider { http, authorization: self.authorization.clone(), base_url: self.base_url.clone() }
    }
}

impl ProviderSettings for SlackSettings {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn Provider>>> {
        async move { Ok(Arc::new(self.provider(ctx.http.get()?)) as Arc<dyn Provider>) }.boxed()
    }

    /// `auth.test`: the workspace and the bot user the token belongs to.
    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        async move {
            let http = match ctx.http.get() {
                Ok(http) => http,
                Err(e) => {
                    return Checked { ok: false, status: None, code: Some("client".into()), detail: e.to_string() };
                }
            };
            self.provider(http).auth_test().await
        }
        .boxed()
    }
}

pub struct SlackProvider {
    http: Client,
    authorization: HeaderValue,
    base_url: String,
}

impl SlackProvider {
    async fn call(&self, method: &str, body: &Value) -> Result<Answer, domain::SendFailure> {
        let request = self
            .http
            .post(format!("{}/{method}", self.base_url))
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.to_string());
        http::send(request).await
    }

    async fn deliver(&self, job: &DeliveryJob) -> SendOutcome {
        let Some(address) = super::address(job, NAME) else {
            return super::failure(FailureKind::Permanent, "invalid_address", "not a slack: recipient", "", None);
        };
        let channel = match channel_id(address) {
            Ok(channel) => channel,
            Err(message) => {
                return super::failure(FailureKind::Permanent, "invalid_address", &message, address, None);
            }
        };
        let mut body = json!({
            "channel": channel,
            "text": super::escape_slack(super::text(job)),
            "unfurl_links": false,
        });
        if let Some(blocks) = super::structured(job, "slack") {
            body["blocks"] = blocks.clone();
        }
        match self.call("chat.postMessage", &body).await {
            Ok(answer) => outcome(&answer, channel),
            Err(failure) => super::transport(failure, address),
        }
    }

    async fn auth_test(&self) -> Checked {
        let answer = match self.call("auth.test", &json!({})).await {
            Ok(answer) => answer,
            Err(failure) => {
                return Checked { ok: false, status: None, code: Some(failure.code), detail: failure.message };
            }
        };
        let status = Some(answer.status.as_u16());
        let body = answer.json().unwrap_or(Value::Null);
        let field = |key: &str| body[key].as_str().unwrap_or("?").to_owned();
        match body["ok"].as_bool() {
            Some(true) => Checked {
                ok: true,
                status,
                code: None,
                detail: format!(
                    "workspace {} ({}), bot user {} ({})",
                    field("team"),
                    field("team_id"),
                    field("user"),
                    field("user_id")
                ),
            },
            Some(false) => {
                let error = field("error");
                Checked {
                    ok: false,
                    status,
                    code: Some(error.clone()),
                    detail: format!("Slack refused the token: {error}"),
                }
            }
            None => Checked {
                ok: false,
                status,
                code: Some(http::status_code(answer.status)),
                detail: format!("Slack answered {} without `ok`", answer.status),
            },
        }
    }
}

impl Provider for SlackProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn serves(&self, job: &DeliveryJob) -> bool {
        super::address(job, NAME).is_some()
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.deliver(job).boxed()
    }
}

/// A conversation id `chat.postMessage` takes: a channel (`C…`, `G…`), a DM (`D…`) or a
/// user (`U…`, `W…`) to write to directly, by the rule the API checks it with when given.
/// Names (`#general`) are refused: they change.
pub(crate) fn channel_id(address: &str) -> Result<&str, String> {
    if domain::chat::is_slack_id(address) {
        Ok(address)
    } else {
        Err("a Slack address is a channel id (C…, G…) or a user id (U…, W…)".to_owned())
    }
}

/// Reads Slack's answer: `ok: true` is the only send, whatever the status.
fn outcome(answer: &Answer, channel: &str) -> SendOutcome {
    let body = answer.json();
    let ok = body.as_ref().and_then(|b| b["ok"].as_bool());
    if ok == Some(true) {
        let body = body.unwrap_or_default();
        let ts = body["ts"].as_str().unwrap_or_default();
        // For a user id Slack answers the DM's channel id: with `ts` it names the message.
        let posted_in = body["channel"].as_str().unwrap_or(channel);
        return SendOutcome::Sent(SendReceipt {
            provider_message_id: format!("{posted_in}/{ts}"),
            response_excerpt: Some(format!("ts={ts}")),
        });
    }
    let status = answer.status;
    let error = body.as_ref().and_then(|b| b["error"].as_str()).map(str::to_owned);
    let Some(error) = error.filter(|_| ok == Some(false)) else {
        // No Slack answer at all: a rate limit, Slack down, or a proxy's page.
        let kind = match status.as_u16() {
            429 => FailureKind::Retryable,
            500.. => FailureKind::Ambiguous,
            // A 200 without `ok` may have posted; another status means the base URL is wrong.
            200 => FailureKind::Ambiguous,
            _ => FailureKind::Config,
        };
        let message = format!("Slack answered {status} without a Slack answer");
        return super::failure(kind, http::status_code(status), &message, channel, answer.retry_after);
    };
    let mut message = format!("Slack refused the message: {error}");
    if let Some(body) = &body {
        if let Some(needed) = body["needed"].as_str() {
            message.push_str(&format!(" (needs the scope {needed})"));
        }
        if let Some(details) = body["response_metadata"]["messages"].as_array() {
            let details: Vec<&str> = details.iter().filter_map(Value::as_str).collect();
            if !details.is_empty() {
                message.push_str(&format!(": {}", details.join("; ")));
            }
        }
    }
    let kind = if status.as_u16() == 429 { FailureKind::Retryable } else { classify(&error, status) };
    let code: String = error.chars().take(64).collect();
    super::failure(kind, code, &message, channel, answer.retry_after)
}

/// Slack's error codes in the failure buckets.
fn classify(error: &str, status: reqwest::StatusCode) -> FailureKind {
    match error {
        "ratelimited" | "rate_limited" => FailureKind::Retryable,
        // "Some aspect of the operation may have succeeded".
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => FailureKind::Ambiguous,
        "invalid_auth"
        | "not_authed"
        | "token_revoked"
        | "token_expired"
        | "account_inactive"
        | "missing_scope"
        | "team_access_not_granted"
        | "no_permission"
        | "ekm_access_denied"
        | "org_login_required"
        | "team_added_to_org"
        | "not_allowed_token_type"
        | "invalid_token" => FailureKind::Config,
        _ if status.is_server_error() => FailureKind::Ambiguous,
        // The destination (`channel_not_found`, `not_in_channel`, `is_archived`,
        // `user_not_found`, `restricted_action…`) or the message (`msg_too_long`, `no_text`,
        // `invalid_blocks`, `too_many_attachments`, `invalid_arguments`), and codes we do
        // not know: retrying sends the same request to the same answer.
        _ => FailureKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[test]
    fn errors_are_sorted_into_the_buckets() {
        let ok = StatusCode::OK;
        for code in [
            "channel_not_found",
            "not_in_channel",
            "is_archived",
            "msg_too_long",
            "no_text",
            "invalid_blocks",
            "user_not_found",
        ] {
            assert_eq!(classify(code, ok), FailureKind::Permanent, "{code}");
        }
        for code in [
            "invalid_auth",
            "not_authed",
            "token_revoked",
            "token_expired",
            "account_inactive",
            "missing_scope",
            "team_access_not_granted",
        ] {
            assert_eq!(classify(code, ok), FailureKind::Config, "{code}");
        }
        for code in ["internal_error", "fatal_error", "service_unavailable"] {
            assert_eq!(classify(code, ok), FailureKind::Ambiguous, "{code}");
        }
        assert_eq!(classify("ratelimited", ok), FailureKind::Retryable);
        assert_eq!(classify("something_new", StatusCode::BAD_GATEWAY), FailureKind::Ambiguous);
    }

    #[test]
    fn addresses_are_conversation_ids() {
        for id in ["C024BE91L", "G012AB3CD", "D024BE91L", "U024BE7LH", "W012A3CDE"] {
            assert!(channel_id(id).is_ok(), "{id}");
        }
        for id in ["#general", "c024be91l", "C", "C02 4", "X024BE91L", ""] {
            assert!(channel_id(id).is_err(), "{id}");
        }
    }
}
