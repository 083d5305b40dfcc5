//! Slack incoming webhooks (docs/providers.md, Slack): `POST <url>` with `{text, blocks}` to
//! the URL after `slack_webhook:`, which is the credential and fixes the channel.
//!
//! Success is `200 ok`; errors are a plain-text code with a real status (`400 no_text`,
//! `403 invalid_token`, `404 no_service`, `410 channel_is_archived`). Every refusal is
//! this address's alone: the message fails for good and the provider carries on for others.

use domain::{Channel, DeliveryJob, Provider, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use serde_json::json;
use uuid::Uuid;

use super::{Webhook, WebhookSettings};
use crate::{
    ProviderSettings, ProviderUnit, Source,
    http::{self, Client},
};

pub const NAME: &str = "slack_webhook";

/// The `slack_webhook` unit: no settings, the URL is in each address.
pub struct SlackWebhookUnit;

impl ProviderUnit for SlackWebhookUnit {
    fn channel(&self) -> Channel {
        Channel::Chat
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn secrets(&self) -> &'static [&'static str] {
        &[]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, bootstrap::ConfigError> {
        WebhookSettings::read(&source, Webhook::Slack)
    }
}

pub struct SlackWebhookProvider {
    pub(super) http: Client,
    pub(super) allow_private_hosts: bool,
}

impl SlackWebhookProvider {
    async fn deliver(&self, job: &DeliveryJob) -> SendOutcome {
        let (address, url) = match super::webhook_address(job, Webhook::Slack, self.allow_private_hosts) {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        let mut body = json!({"text": super::escape_slack(super::text(job))});
        if let Some(blocks) = super::structured(job, "slack") {
            body["blocks"] = blocks.clone();
        }
        let answer = match http::send(self.http.post(url).json(&body)).await {
            Ok(answer) => answer,
            Err(failure) => return super::transport(failure, address),
        };
        if answer.status.is_success() {
            // Slack returns no id for a webhook post: ours names it in the attempts log.
            return SendOutcome::Sent(SendReceipt {
                provider_message_id: format!("{NAME}-{}", Uuid::now_v7()),
                response_excerpt: Some(format!("status={}", answer.status.as_u16())),
            });
        }
        let text = String::from_utf8_lossy(&answer.body);
        let code = super::code_or_status(&text, answer.status);
        let message = format!("Slack refused the webhook post ({}): {code}", answer.status);
        super::failure(super::webhook_kind(answer.status), code, &message, address, answer.retry_after)
    }
}

impl Provider for SlackWebhookProvider {
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
