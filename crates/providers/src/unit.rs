//! One provider = one unit: its channel and name, its settings (the operator's
//! `[<channel>.<name>]` section, or a tenant's integration), their validation, which of
//! them are secrets, and how a client and a credentials check are built from them.
//!
//! A worker binary is the list of its channel's units ([`crate::CATALOG`]); the API reads
//! the same units to validate a tenant's integration and to check its credentials. Adding
//! a provider is one module with one unit, and one line in the catalog.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bootstrap::ConfigError;
use domain::{Channel, Provider};
use futures_util::future::BoxFuture;
use serde::Serialize;
use uuid::Uuid;

use crate::http::SharedClient;

/// Where a unit's settings come from.
pub enum Source<'a> {
    /// The operator's configuration: `[<channel>.<name>]` of the layered config (file and
    /// `NOTIFY_*` variables). Errors name `<channel>.<name>.<key>` and its variable.
    Config(&'a figment::Figment),
    /// A tenant's integration, as stored (secrets already opened). Errors name
    /// `settings.<key>`, the field of the integration's request body.
    Integration(&'a Integration<'a>),
}

/// A tenant's integration as the unit sees it.
pub struct Integration<'a> {
    pub tenant_id: Uuid,
    /// The integration's settings: its JSON body's `settings`, secrets included.
    pub settings: &'a serde_json::Value,
    pub rules: &'a IntegrationRules,
}

/// What the operator allows tenants' integrations (`[integrations]`): a tenant cannot
/// point a client at an address of its choosing, except where the provider itself has
/// several (Novu's regions), and then never at a private or loopback address.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrationRules {
    /// Per provider name (`twilio`, `ses`, `slack`): the API base URL tenants' clients
    /// use instead of the provider's own. For stand-ins in tests and air-gapped
    /// deployments; tenants cannot set it.
    pub base_urls: BTreeMap<String, String>,
    /// Lets webhook URLs and base URLs of integrations and chat addresses point at private
    /// and loopback addresses, and at hosts other than the provider's (tests only).
    pub allow_private_hosts: bool,
    /// The API's public base URL (`https://notify.example.com`), where providers post the
    /// receipts of messages sent through tenants' integrations: a tenant's Twilio client
    /// sets `StatusCallback` to [`IntegrationRules::twilio_status_callback`]. Unset: a
    /// tenant's Twilio messages ask for no status callback.
    pub receipts_url: Option<String>,
}

impl IntegrationRules {
    /// Checks `receipts_url`: an http(s) URL with a host and nothing after its path, as
    /// Twilio signs the URL it is given.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(value) = &self.receipts_url else { return Ok(()) };
        let invalid =
            |message: &str| ConfigError::Invalid { key: "integrations.receipts_url".into(), message: message.into() };
        let url = reqwest::Url::parse(value.trim()).map_err(|_| invalid("must be an http or https URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid("must be an http or https URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must have no query, fragment or credentials"));
        }
        Ok(())
    }

    /// The tenant's own Twilio receipt route (`POST /v1/providers/twilio/status/{tenant}`)
    /// under `receipts_url`: the URL a tenant's client gives Twilio and the one the API
    /// checks Twilio's signature against, so the two never differ.
    pub fn twilio_status_callback(&self, tenant_id: Uuid) -> Option<String> {
        let base = self.receipts_url.as_deref().map(str::trim).filter(|u| !u.is_empty())?;
        Some(format!("{}/v1/providers/twilio/status/{tenant_id}", base.trim_end_matches('/')))
    }
}

/// What building a client may use.
pub struct Context<'a> {
    /// The process's one HTTP client: every provider shares its connection pool.
    pub http: &'a SharedClient,
    /// The worker's limit on one provider call; SDK timeouts must stay below it.
    pub provider_timeout: Duration,
}

/// What a credentials check came to: whether the provider accepted them, and what it said
/// (an account name, a workspace, its error), never a secret.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Checked {
    pub ok: bool,
    /// The provider's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The provider's error code, or ours (`connect`, `timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What the provider said: the account or workspace on success, its message on failure.
    pub detail: String,
}

impl Checked {
    /// A check that got no answer from the provider (it could not be reached, or its
    /// answer was unreadable), or that the provider refused without an HTTP status.
    pub fn failed(status: Option<u16>, code: &str, detail: impl Into<String>) -> Self {
        Self { ok: false, status, code: Some(code.to_owned()), detail: detail.into() }
    }
}

/// One provider. Implementations are unit structs in a `const`.
pub trait ProviderUnit: Send + Sync + 'static {
    fn channel(&self) -> Channel;

    /// The name `<channel>.providers` lists and integrations are stored under.
    fn name(&self) -> &'static str;

    /// The top-level setting keys that are secrets: sealed at rest, never returned, never
    /// logged (`auth_token`, `secret_access_key`, `webhook_url`).
    fn secrets(&self) -> &'static [&'static str];

    /// Reads and validates the settings, naming the first one missing or wrong.
    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError>;
}

/// A unit's validated settings.
pub trait ProviderSettings: Send + Sync + std::fmt::Debug {
    /// A client that sends with these settings.
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn Provider>>>;

    /// Proves the credentials without sending anything to anyone (SES GetAccount, a
    /// Twilio account fetch, Slack `auth.test`).
    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Checked>;
}
