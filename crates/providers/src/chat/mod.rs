//! The chat providers: Slack through a bot token (`slack`), Slack incoming webhooks
//! (`slack_webhook`), Microsoft Teams Workflows webhooks (`teams`) and Discord webhooks
//! (`discord`), one module each; here what they share.
//!
//! A chat recipient is `<provider>:<address>` (`slack:C024BE91L`, `discord:https://…`), and
//! each provider serves only its own prefix. A webhook URL is a credential: it is checked
//! before every send (https, a host of the provider's) and kept out of every stored
//! failure message, as the whole URL and as any long part of it.

use std::{collections::BTreeMap, sync::Arc};

use bootstrap::ConfigError;
use domain::{DeliveryJob, FailureKind, Provider, SendFailure, SendOutcome};
use futures_util::{FutureExt, future::BoxFuture};
use reqwest::Url;
use serde_json::Value;

use crate::{Checked, Context, IntegrationRules, ProviderSettings, Source, http, settings};

pub mod discord;
pub mod slack;
pub mod slack_webhook;
pub mod teams;

pub use discord::{DiscordProvider, DiscordUnit};
pub use slack::{SlackProvider, SlackUnit};
pub use slack_webhook::{SlackWebhookProvider, SlackWebhookUnit};
pub use teams::{TeamsProvider, TeamsUnit};

/// The address of `job` for the provider `name`: what follows `<name>:` in its recipient.
pub fn address<'a>(job: &'a DeliveryJob, name: &str) -> Option<&'a str> {
    job.recipient.strip_prefix(name)?.strip_prefix(':')
}

/// Checks a chat recipient (`slack:U024BE7LH`, `teams:https://…`) as its provider will
/// before sending: a Slack channel, user or DM id, or a webhook URL on https at a host of
/// the provider's. `allow_private_hosts` (tests only) lets a webhook URL be plain http at
/// any host, a stand-in on the loopback.
pub fn check_recipient(recipient: &str, allow_private_hosts: bool) -> Result<(), String> {
    let (provider, address) = recipient.split_once(':').ok_or("must be `<provider>:<address>`".to_owned())?;
    match provider {
        slack::NAME => slack::channel_id(address).map(drop),
        slack_webhook::NAME => webhook_url(Webhook::Slack, address, allow_private_hosts).map(drop).map_err(Into::into),
        teams::NAME => webhook_url(Webhook::Teams, address, allow_private_hosts).map(drop).map_err(Into::into),
        discord::NAME => webhook_url(Webhook::Discord, address, allow_private_hosts).map(drop).map_err(Into::into),
        _ => Err(format!("`{provider}` is not a chat provider (slack, slack_webhook, teams, discord)")),
    }
}

/// The kinds of webhook URL, by the hosts their provider issues them on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Webhook {
    Slack,
    Teams,
    Discord,
}

impl Webhook {
    fn name(self) -> &'static str {
        match self {
            Webhook::Slack => slack_webhook::NAME,
            Webhook::Teams => teams::NAME,
            Webhook::Discord => discord::NAME,
        }
    }

    fn host_allowed(self, host: &str) -> bool {
        let under = |domain: &str| host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'));
        match self {
            Webhook::Slack => matches!(host, "hooks.slack.com" | "hooks.slack-gov.com"),
            // Workflows ("When a Teams webhook request is received"): Logic Apps hosts, and
            // Power Platform environments for newer flows. Office 365 connector URLs are retired.
            Webhook::Teams => under("logic.azure.com") || under("powerplatform.com"),
            Webhook::Discord => {
                matches!(host, "discord.com" | "discordapp.com" | "canary.discord.com" | "ptb.discord.com")
            }
        }
    }

    fn path_allowed(self, path: &str) -> bool {
        match self {
            Webhook::Slack | Webhook::Teams => true,
            Webhook::Discord => path.starts_with("/api/") && path.contains("/webhooks/"),
        }
    }
}

/// A webhook URL the provider `kind` issues: https at one of its hosts on the standard
/// port, no user info. `allow_private_hosts` (tests only) waives the host, port and scheme.
pub(crate) fn webhook_url(kind: Webhook, address: &str, allow_private_hosts: bool) -> Result<Url, &'static str> {
    let url = Url::parse(address).map_err(|_| "is not a URL")?;
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err("must not carry user info or a fragment");
    }
    let host = url.host_str().ok_or("must have a host")?;
    if allow_private_hosts {
        return if matches!(url.scheme(), "https" | "http") { Ok(url) } else { Err("must be an https URL") };
    }
    if url.scheme() != "https" || url.port().is_some_and(|p| p != 443) {
        return Err("must be an https URL on the standard port");
    }
    if !kind.host_allowed(&host.to_ascii_lowercase()) || !kind.path_allowed(url.path()) {
        return Err("is not a webhook URL of this provider");
    }
    Ok(url)
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
pub(crate) fn webhook_kind(status: reqwest::StatusCode) -> FailureKind {
    match status.as_u16() {
        429 => FailureKind::Retryable,
        500.. => FailureKind::Ambiguous,
        _ => FailureKind::Permanent,
    }
}

/// A unit's settings as read from its source, every value text, and how errors name them.
pub(crate) struct Read {
    values: BTreeMap<String, String>,
    /// `chat.slack` for the operator's section, `settings` for a tenant's integration.
    prefix: String,
    from_config: bool,
    pub allow_private_hosts: bool,
    /// The operator's base URL: `chat.<name>.base_url`, or `integrations.base_urls.<name>`.
    pub base_url: Option<String>,
}

impl Read {
    /// Reads `[chat.<name>]` or an integration's settings, refusing a key not in `keys`.
    /// `operator_base_url`: the operator may set this unit's base URL (never a tenant).
    pub fn new(source: &Source<'_>, name: &str, keys: &[&str], operator_base_url: bool) -> Result<Self, ConfigError> {
        let (raw, prefix, from_config, rules) = match source {
            Source::Config(figment) => {
                let section = format!("chat.{name}");
                let raw =
                    if figment.contains(&section) { figment.extract_inner(&section)? } else { Default::default() };
                let rules: IntegrationRules = if figment.contains("integrations") {
                    figment.extract_inner("integrations")?
                } else {
                    Default::default()
                };
                (raw, section, true, rules)
            }
            Source::Integration(integration) => {
                let raw = match integration.settings {
                    Value::Null => Default::default(),
                    Value::Object(map) => map.clone(),
                    _ => return Err(invalid_key("settings", "must be an object")),
                };
                (raw, "settings".to_owned(), false, integration.rules.clone())
            }
        };
        let mut values = BTreeMap::new();
        let mut base_url = None;
        for (key, value) in raw {
            let operator_key = from_config && operator_base_url && key == "base_url";
            if !keys.contains(&key.as_str()) && !operator_key {
                let takes = if keys.is_empty() { "none".to_owned() } else { keys.join(", ") };
                let message = format!("unknown setting; the {name} provider takes: {takes}");
                return Err(invalid_key(&format!("{prefix}.{key}"), &message));
            }
            let Value::String(value) = value else {
                return Err(invalid_key(&format!("{prefix}.{key}"), "must be text"));
            };
            if operator_key {
                base_url = Some(settings::base_url(&value, &prefix)?);
            } else {
                values.insert(key, value);
            }
        }
        if operator_base_url && !from_config {
            let given = rules.base_urls.get(name);
            let key = format!("integrations.base_urls.{name}");
            let checked = given.map(|url| settings::base_url(url, "integrations.base_urls"));
            // Named as the operator's setting: a tenant cannot set it.
            base_url =
                checked.transpose().map_err(|_| invalid_key(&key, "must be an http or https URL with a host"))?;
        }
        Ok(Self { values, prefix, from_config, allow_private_hosts: rules.allow_private_hosts, base_url })
    }

    /// The value of `key`, unless unset or blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, key: &str) -> Result<&str, ConfigError> {
        match self.get(key) {
            Some(value) => Ok(value),
            None if self.from_config => Err(settings::missing(&self.prefix, key)),
            None => Err(self.invalid(key, "is required")),
        }
    }

    pub fn invalid(&self, key: &str, message: &str) -> ConfigError {
        invalid_key(&format!("{}.{key}", self.prefix), message)
    }
}

fn invalid_key(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), message: message.to_owned() }
}

/// The settings of a webhook unit (`slack_webhook`, `teams`, `discord`): none of their own,
/// the URL in each address is the credential. Only the operator's rule on private hosts
/// (`integrations.allow_private_hosts`) applies.
#[derive(Debug)]
pub struct WebhookSettings {
    kind: Webhook,
    allow_private_hosts: bool,
}

impl WebhookSettings {
    pub(crate) fn read(source: &Source<'_>, kind: Webhook) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let read = Read::new(source, kind.name(), &[], false)?;
        Ok(Box::new(Self { kind, allow_private_hosts: read.allow_private_hosts }))
    }
}

impl ProviderSettings for WebhookSettings {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn Provider>>> {
        async move {
            let http = ctx.http.get()?;
            let allow_private_hosts = self.allow_private_hosts;
            Ok(match self.kind {
                Webhook::Slack => Arc::new(SlackWebhookProvider { http, allow_private_hosts }) as Arc<dyn Provider>,
                Webhook::Teams => Arc::new(TeamsProvider { http, allow_private_hosts }),
                Webhook::Discord => Arc::new(DiscordProvider { http, allow_private_hosts }),
            })
        }
        .boxed()
    }

    /// Nothing to prove: each address holds its own credential.
    fn check<'a>(&'a self, _ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        let detail = "nothing to check: the webhook URL is each chat address's own, checked when it is stored";
        futures_util::future::ready(Checked { ok: true, status: None, code: None, detail: detail.to_owned() }).boxed()
    }
}

/// The webhook URL of `job` for the provider `kind`, or the failure to record without
/// sending: a recipient of another provider, or a URL that is not the provider's.
pub(crate) fn webhook_address(
    job: &DeliveryJob,
    kind: Webhook,
    allow_private_hosts: bool,
) -> Result<(&str, Url), SendOutcome> {
    let Some(address) = address(job, kind.name()) else {
        return Err(failure(FailureKind::Permanent, "invalid_address", "not a recipient of this provider", "", None));
    };
    match webhook_url(kind, address, allow_private_hosts) {
        Ok(url) => Ok((address, url)),
        Err(problem) => Err(failure(
            FailureKind::Permanent,
            "invalid_address",
            &format!("the webhook URL {problem}"),
            address,
            None,
        )),
    }
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

    #[test]
    fn webhook_urls_must_be_the_providers() {
        let ok = |kind, url| webhook_url(kind, url, false).is_ok();
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
        assert!(webhook_url(Webhook::Discord, "http://127.0.0.1:9/api/webhooks/1/t", true).is_ok());
        assert!(webhook_url(Webhook::Discord, "ftp://127.0.0.1/x", true).is_err());
    }

    #[test]
    fn recipients_are_checked_by_their_prefix() {
        assert!(check_recipient("slack:C024BE91L", false).is_ok());
        assert!(check_recipient("slack:U024BE7LH", false).is_ok());
        assert!(check_recipient("slack:#general", false).is_err());
        assert!(check_recipient("teams:https://hooks.slack.com/services/x", false).is_err());
        assert!(check_recipient("slack_webhook:https://hooks.slack.com/services/x", false).is_ok());
        assert!(check_recipient("matrix:!room", false).is_err());
        assert!(check_recipient("C024BE91L", false).is_err());
    }
}
