//! What the three webhook providers share (`slack_webhook`, `teams`, `discord`): the URL in
//! each address is the credential, so their unit has no settings and nothing to check,
//! and one provider type checks the URL and hands it to its kind's `post`.

use std::sync::Arc;

use bootstrap::ConfigError;
use domain::{Channel, DeliveryJob, FailureKind, Provider, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use reqwest::Url;
use uuid::Uuid;

use serde::Deserialize;

use super::{discord, failure, slack_webhook, teams};
use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    http::{self, Client},
    settings::{self, Refused},
};

/// The kinds of webhook URL and their one URL rule, shared with the API's check of an
/// address when it is given.
pub use domain::chat::Webhook;

/// A webhook URL the provider `kind` issues ([`Webhook::url`]), checked again before each send.
pub(crate) fn url(kind: Webhook, address: &str, allow_private_hosts: bool) -> Result<Url, &'static str> {
    kind.url(address, allow_private_hosts)
}

/// The unit of one kind of webhook. Its only setting is the operator's rule on private
/// hosts (`integrations.allow_private_hosts`); a section or an integration with any key of
/// its own is refused.
pub struct WebhookUnit(pub Webhook);

/// `[chat.<name>]` and a tenant's integration: empty, each address holds its own URL.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookConfig {}

impl ProviderUnit for WebhookUnit {
    fn channel(&self) -> Channel {
        Channel::Chat
    }

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn secrets(&self) -> &'static [&'static str] {
        &[]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let nothing = Refused { config: &[], integration: &[] };
        settings::read_or_default::<WebhookConfig>(&source, Channel::Chat, self.0.name(), &nothing)?;
        let allow_private_hosts = settings::rules(&source)?.allow_private_hosts;
        Ok(Box::new(WebhookSettings { kind: self.0, allow_private_hosts }))
    }
}

#[derive(Debug)]
pub struct WebhookSettings {
    kind: Webhook,
    allow_private_hosts: bool,
}

impl ProviderSettings for WebhookSettings {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn Provider>>> {
        async move {
            let provider = WebhookProvider {
                kind: self.kind,
                http: ctx.http.get()?,
                allow_private_hosts: self.allow_private_hosts,
            };
            Ok(Arc::new(provider) as Arc<dyn Provider>)
        }
        .boxed()
    }

    /// Nothing to prove: each address holds its own credential.
    fn check<'a>(&'a self, _ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        let detail = "nothing to check: the webhook URL is each chat address's own, checked when it is stored";
        futures_util::future::ready(Checked { ok: true, status: None, code: None, detail: detail.to_owned() }).boxed()
    }
}

pub struct WebhookProvider {
    kind: Webhook,
    http: Client,
    allow_private_hosts: bool,
}

impl WebhookProvider {
    async fn deliver(&self, job: &DeliveryJob) -> SendOutcome {
        let Some(address) = super::address(job, self.kind.name()) else {
            return failure(FailureKind::Permanent, "invalid_address", "not a recipient of this provider", "", None);
        };
        let url = match url(self.kind, address, self.allow_private_hosts) {
            Ok(url) => url,
            Err(problem) => {
                let message = format!("the webhook URL {problem}");
                return failure(FailureKind::Permanent, "invalid_address", &message, address, None);
            }
        };
        match self.kind {
            Webhook::Slack => slack_webhook::post(&self.http, job, address, url).await,
            Webhook::Teams => teams::post(&self.http, job, address, url).await,
            Webhook::Discord => discord::post(&self.http, job, address, url).await,
        }
    }
}

impl Provider for WebhookProvider {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn serves(&self, job: &DeliveryJob) -> bool {
        super::address(job, self.kind.name()).is_some()
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.deliver(job).boxed()
    }
}

/// A post the webhook took. It returns no id: ours names the post in the attempts log.
pub(crate) fn accepted(name: &str, answer: &http::Answer) -> SendOutcome {
    SendOutcome::Sent(SendReceipt {
        provider_message_id: format!("{name}-{}", Uuid::now_v7()),
        response_excerpt: Some(format!("status={}", answer.status.as_u16())),
    })
}

/// A webhook answer's error code: the provider's plain-text code (`no_service`), else
/// `http_<status>`.
pub(crate) fn code_or_status(text: &str, status: reqwest::StatusCode) -> String {
    let text = text.trim();
    if !text.is_empty() && text.len() <= 64 && text.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        text.to_owned()
    } else {
        http::status_code(status)
    }
}

/// How a webhook's answer without a code of its own is sorted. The URL is this one
/// address's credential: a refusal (401/403), a removed webhook (404/410) or a bad payload
/// fails this message for good, and never pauses the provider for every other address.
pub(crate) fn kind(status: reqwest::StatusCode) -> FailureKind {
    match status.as_u16() {
        429 => FailureKind::Retryable,
        500.. => FailureKind::Ambiguous,
        _ => FailureKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_must_be_the_providers() {
        let ok = |kind, address| url(kind, address, false).is_ok();
        assert!(ok(Webhook::Slack, "https://hooks.slack.com/services/T0/B0/x"));
        assert!(!ok(Webhook::Slack, "http://hooks.slack.com/services/T0/B0/x"));
        assert!(!ok(Webhook::Slack, "https://hooks.slack.com.evil.example/services/x"));
        assert!(!ok(Webhook::Slack, "https://hooks.slack.com:8443/services/x"));
        assert!(!ok(Webhook::Slack, "https://user:pw@hooks.slack.com/services/x"));
        assert!(ok(
            Webhook::Teams,
            "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x"
        ));
        assert!(ok(
            Webhook::Teams,
            "https://default1.environment.api.powerplatform.com/powerautomate/automations/direct/workflows/x"
        ));
        assert!(!ok(Webhook::Teams, "https://evillogic.azure.com/workflows"));
        assert!(!ok(Webhook::Teams, "https://acme.webhook.office.com/webhookb2/x"));
        assert!(ok(Webhook::Discord, "https://discord.com/api/webhooks/1/t"));
        assert!(!ok(Webhook::Discord, "https://discord.com/api/users/@me"));
        assert!(!ok(Webhook::Discord, "https://127.0.0.1/api/webhooks/1/t"));
        assert!(url(Webhook::Discord, "http://127.0.0.1:9/api/webhooks/1/t", true).is_ok());
        assert!(url(Webhook::Discord, "ftp://127.0.0.1/x", true).is_err());
    }
}
