use std::{net::SocketAddr, path::Path, time::Duration};

use bootstrap::{ConfigError, SecretString};
use serde::Deserialize;

use crate::rate_limit::Rate;

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    pub database_url: Option<SecretString>,
    /// The broker: the API publishes the deliveries it accepts (`hand_off`), and carries
    /// inbox events between API replicas (`notify.inbox`). Unset: the relays publish
    /// everything, and inbox sockets hear only of changes made through this replica.
    pub amqp_url: Option<SecretString>,
    pub database_max_connections: u32,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where `/metrics` (with `/healthz` and `/readyz`) is served, off the public port, as
    /// the relay's and workers' `listen` (`0.0.0.0:9090`); none when unset.
    pub ops_listen: Option<SocketAddr>,
    pub limits: Limits,
    pub idempotency: Idempotency,
    /// The intake rate of a tenant that has none of its own.
    pub rate_limit: Rate,
    /// Delivery receipts from the providers.
    pub receipts: Receipts,
    /// The end-user inbox: subscriber tokens.
    pub inbox: InboxSettings,
    /// The inbox WebSocket (`/v1/inbox/ws`): heartbeat and per-socket queue.
    pub inbox_socket: crate::inbox::socket::SocketSettings,
    /// What every request reads (callers, tenant settings, types, compiled templates).
    pub cache: CacheSettings,
    /// Publishing accepted deliveries from the API, right after their commit.
    pub hand_off: crate::handoff::HandOffSettings,
    /// What one client may take of this replica: timeouts, requests in flight, key
    /// lookups, the inbox's rate per subscriber.
    pub admission: crate::admission::AdmissionSettings,
    /// The keys that seal tenants' integration secrets and chat webhook URLs at rest.
    pub secrets: bootstrap::seal::SecretsConfig,
    /// What tenants' integrations may do (base URLs of stand-ins, private hosts in tests).
    pub integrations: providers::IntegrationRules,
    /// What tenants' webhook endpoints may be (`http://` URLs).
    pub webhooks: crate::routes::webhooks::WebhookSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            amqp_url: None,
            database_max_connections: 16,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            ops_listen: None,
            limits: Limits::default(),
            idempotency: Idempotency::default(),
            rate_limit: Rate::default(),
            receipts: Receipts::default(),
            inbox: InboxSettings::default(),
            inbox_socket: Default::default(),
            cache: CacheSettings::default(),
            hand_off: Default::default(),
            admission: Default::default(),
            secrets: Default::default(),
            integrations: Default::default(),
            webhooks: Default::default(),
        }
    }
}

/// The cache of callers by API key, tenant settings, notification types and compiled
/// templates (`store::cache`), kept true by the database's change notifications.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Entries kept at most (a caller, a tenant's settings, a type or a type's templates
    /// each count one), least recently used out first; 0 turns the cache off.
    pub capacity: usize,
    /// API keys found unknown that are remembered (apart from the entries above), so a
    /// client repeating one costs no database read; 0 remembers none.
    pub unknown_keys: usize,
    /// How long an unknown key is remembered. A key created meanwhile is heard of at once
    /// (every unknown key is then forgotten); this bounds the rest.
    #[serde(with = "humantime_serde")]
    pub unknown_key_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { capacity: 10_000, unknown_keys: store::UNKNOWN_KEYS, unknown_key_ttl: store::UNKNOWN_KEY_TTL }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// How far ahead `send_at` may be.
    #[serde(with = "humantime_serde")]
    pub max_schedule_ahead: Duration,
    /// How long a delivery must have been stranded (not final, no outbox row, no live
    /// claim) before `POST /v1/deliveries/{id}/retry` queues it again; as the relay's
    /// `relay.stranded_after`.
    #[serde(with = "humantime_serde")]
    pub stranded_after: Duration,
    /// Subscribers whose `data` (up to 64 KiB each) a request holds at once while it renders
    /// templates that use `subscriber`: memory per request is about this times 64 KiB,
    /// whatever the size of its topics.
    pub subscriber_data_page: usize,
    /// Render steps (minijinja's fuel) one request may spend on its templates in all, for
    /// every recipient of its topics: past it, the request is a `422` on `type`.
    pub render_fuel: u64,
    /// Push devices a subscriber keeps: registering one more removes the one updated least
    /// recently (audited as `evicted`).
    pub max_devices_per_subscriber: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_schedule_ahead: Duration::from_secs(90 * 24 * 3600),
            stranded_after: STRANDED_AFTER,
            subscriber_data_page: 500,
            render_fuel: domain::plan::RENDER_FUEL_PER_REQUEST,
            max_devices_per_subscriber: domain::push::MAX_DEVICES_PER_SUBSCRIBER,
        }
    }
}

/// The default of `limits.stranded_after` and the relay's `relay.stranded_after`.
pub const STRANDED_AFTER: Duration = Duration::from_secs(600);

impl Limits {
    pub fn domain(&self) -> domain::request::Limits {
        domain::request::Limits {
            max_schedule_ahead: time::Duration::try_from(self.max_schedule_ahead).unwrap_or(time::Duration::MAX),
            render_fuel: self.render_fuel,
            allow_private_hosts: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Idempotency {
    /// How long a key is remembered (at least 24 h, as the API promises).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often expired keys are deleted.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
}

impl Default for Idempotency {
    fn default() -> Self {
        Self { retention: Duration::from_secs(24 * 3600), purge_interval: Duration::from_secs(3600) }
    }
}

/// The end-user inbox (`/v1/inbox`): how subscriber tokens are signed and how long they last.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboxSettings {
    /// The HMAC-SHA256 key of subscriber tokens, at least 32 bytes; the same on every
    /// replica. Unset: a random key made at start, so a token verifies only on the replica
    /// that issued it, until it restarts.
    pub token_secret: Option<SecretString>,
    /// How long a subscriber token is valid (at most 24 h).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Origins (`https://app.example.com`, scheme, host and port as a browser sends them in
    /// `Origin`) whose pages may call the endpoints a subscriber token opens (the inbox and
    /// the subscriber's devices) from the browser; none by default (no CORS headers).
    pub cors_origins: Vec<String>,
}

/// The longest a subscriber token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Default for InboxSettings {
    fn default() -> Self {
        Self { token_secret: None, token_ttl: Duration::from_secs(3600), cors_origins: Vec::new() }
    }
}

/// Delivery receipts (`/v1/providers/...`). A provider's endpoint answers `404` until its
/// settings are given: without a secret to check signatures with, nothing is accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Receipts {
    pub twilio: Option<TwilioReceipts>,
    pub ses: Option<SesReceipts>,
    pub meta: Option<MetaReceipts>,
}

/// Twilio's `StatusCallback` (docs/providers.md §9.1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioReceipts {
    /// The account's auth token, the key of `X-Twilio-Signature`.
    pub auth_token: SecretString,
    /// The public URL of `/v1/providers/twilio/status`, exactly as Twilio calls it (the
    /// `StatusCallback` without its query). The signature covers it, and behind a proxy the
    /// URL this process sees is another.
    pub public_url: String,
}

/// SES events through an SNS topic (docs/providers.md §9.2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesReceipts {
    /// The hosts a `SigningCertURL` or `SubscribeURL` may name, as a regular expression
    /// matched against the whole host.
    #[serde(default = "default_cert_host_pattern")]
    pub cert_host_pattern: String,
    /// Accept `http` certificate URLs as well as `https`: for a local stand-in only, so it
    /// is refused with a pattern that admits AWS's hosts.
    #[serde(default)]
    pub allow_http_certs: bool,
    /// The topics whose messages are accepted; any other is refused.
    pub topic_arns: Vec<String>,
    /// Organizations (`O` of the issuer) whose certificates are taken as SNS's.
    #[serde(default = "default_cert_issuers")]
    pub cert_issuers: Vec<String>,
}

/// Exactly SNS's regional hosts: `sns.<region>.amazonaws.com` (GovCloud's `us-gov-…`
/// regions included) and, in China, `sns.cn-<…>.amazonaws.com.cn`; never an S3
/// virtual-hosted name such as `sns.s3-accelerate.amazonaws.com`.
pub const DEFAULT_CERT_HOST_PATTERN: &str =
    r"sns\.[a-z]{2}(-gov)?-[a-z]+-[0-9]+\.amazonaws\.com|sns\.cn-[a-z]+-[0-9]+\.amazonaws\.com\.cn";

fn default_cert_host_pattern() -> String {
    DEFAULT_CERT_HOST_PATTERN.into()
}

fn default_cert_issuers() -> Vec<String> {
    vec!["Amazon".into()]
}

/// Meta's WhatsApp Cloud API webhook (docs/providers.md §9.3).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaReceipts {
    /// The app secret, the key of `X-Hub-Signature-256`.
    pub app_secret: SecretString,
    /// What Meta must send as `hub.verify_token` when it verifies the webhook.
    pub verify_token: SecretString,
}

impl Config {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Config = bootstrap::layered(file).extract()?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        bootstrap::require(&self.database_url, "database_url")?;
        let invalid = |key: &str, message: &str| ConfigError::Invalid { key: key.into(), message: message.into() };
        if self.idempotency.retention < Duration::from_secs(24 * 3600) {
            return Err(invalid("idempotency.retention", "must be at least 24h"));
        }
        if self.database_max_connections < 2 * store::ACCEPT_SLOTS {
            let message = format!(
                "must be at least {}: the accepts hold {} for good",
                2 * store::ACCEPT_SLOTS,
                store::ACCEPT_SLOTS
            );
            return Err(ConfigError::Invalid { key: "database_max_connections".into(), message });
        }
        if self.limits.max_devices_per_subscriber == 0 {
            return Err(invalid("limits.max_devices_per_subscriber", "must be at least 1"));
        }
        crate::cors::layer(&self.inbox.cors_origins)?;
        if self.limits.subscriber_data_page == 0 {
            return Err(invalid("limits.subscriber_data_page", "must be at least 1"));
        }
        if self.rate_limit.per_second == 0 || self.rate_limit.burst == 0 {
            return Err(invalid("rate_limit", "per_second and burst must be at least 1"));
        }
        crate::receipts::Receipts::new(&self.receipts)?;
        self.integrations.validate()?;
        self.inbox_socket.validate()?;
        self.admission.validate()?;
        self.hand_off.validate()?;
        self.webhooks.validate().map_err(|e| ConfigError::Invalid { key: e.field, message: e.message })?;
        crate::inbox::token::TokenKey::from_settings(&self.inbox)?;
        self.secrets.keyring()?;
        Ok(())
    }
}
