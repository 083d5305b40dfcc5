use std::{collections::BTreeMap, path::Path, time::Duration};

use bootstrap::{ConfigError, Environment, SecretString};
use domain::{Channel, RetryPolicy};
use queue::Topology;
use serde::Deserialize;

use crate::SandboxConfig;

/// A worker's configuration: the shared settings at the top level of the config (so one
/// file or one set of environment variables serves every binary), and the settings of
/// its channel under the channel's name (`[email]`, `NOTIFY_EMAIL__RETRY__MAX_ATTEMPTS`).
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    pub database_url: Option<SecretString>,
    pub amqp_url: Option<SecretString>,
    pub database_max_connections: u32,
    /// `production` refuses the sandbox provider unless `worker.allow_sandbox`.
    pub environment: Environment,
    pub worker: WorkerSettings,
    pub broker: Topology,
    /// The keys that open tenants' integration secrets and sealed chat addresses.
    pub secrets: bootstrap::seal::SecretsConfig,
    /// What tenants' integrations may do (base URLs of stand-ins, private hosts in tests).
    pub integrations: providers::IntegrationRules,
    #[serde(skip)]
    pub channel: ChannelSettings,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            amqp_url: None,
            database_max_connections: 8,
            environment: Environment::default(),
            worker: WorkerSettings::default(),
            broker: Topology::default(),
            secrets: Default::default(),
            integrations: Default::default(),
            channel: ChannelSettings::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Messages taken from the broker at once, and so handled concurrently.
    pub prefetch: u16,
    /// A provider call that takes longer is abandoned and counts as an ambiguous failure.
    #[serde(with = "humantime_serde")]
    pub provider_timeout: Duration,
    /// On shutdown, how long in-flight messages may take before they are abandoned (the
    /// broker redelivers them).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Where `/healthz` and `/readyz` are served (`0.0.0.0:9090`); none when unset.
    pub listen: Option<std::net::SocketAddr>,
    /// How long a claim holds a delivery: no other message for it is sent before the
    /// lease runs out, and the relay's sweeper recovers a delivery whose holder died only
    /// after it. It must outlast a send to every provider in turn.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Lets a worker in production (`environment = "production"`) use the sandbox
    /// provider, which sends nothing: an overlay that forgot to name the real provider
    /// must not start silently.
    pub allow_sandbox: bool,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            prefetch: 32,
            provider_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(20),
            listen: None,
            lease: Duration::from_secs(120),
            allow_sandbox: false,
        }
    }
}

/// A channel's settings. Each provider's own settings sit beside these, under the
/// provider's name (`[sms.twilio]`), and are read by the provider's unit.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ChannelSettings {
    pub retry: RetryPolicy,
    /// Providers in order of preference. A retryable failure (or a paused provider)
    /// moves the attempt to the next one. The sandbox is the default, so a platform
    /// with no configuration runs without any cloud account.
    pub providers: Vec<String>,
    pub sandbox: SandboxConfig,
    /// Sends per second allowed to each provider, by provider name; no entry, no limit.
    pub rate_limits: BTreeMap<String, f64>,
    /// How long a provider is paused after a configuration or account error.
    #[serde(with = "humantime_serde")]
    pub circuit_cool_down: Duration,
    /// Whether a tenant's delivery may go through the providers above after the tenant's
    /// own integrations of the channel failed or when it has none. `false`: a tenant
    /// sends only through its own integrations, and one without any gets
    /// `no_integration` (retried, so connecting one later delivers).
    pub tenant_fallback: bool,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            providers: vec![crate::SANDBOX.into()],
            sandbox: SandboxConfig::default(),
            rate_limits: BTreeMap::new(),
            circuit_cool_down: Duration::from_secs(60),
            tenant_fallback: true,
        }
    }
}

/// A name in `<channel>.providers` that the worker does not know.
pub fn unknown_provider(channel: Channel, provider: &str, known: &[&str]) -> ConfigError {
    ConfigError::Invalid {
        key: format!("{channel}.providers"),
        message: format!("unknown provider `{provider}`; this worker knows {}", known.join(", ")),
    }
}

impl WorkerConfig {
    /// Loads and validates the configuration of the worker for `channel`.
    pub fn load(channel: Channel, file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(channel, &bootstrap::layered(file))
    }

    /// The configuration of the worker for `channel` from the layered settings, validated.
    pub fn from_figment(channel: Channel, figment: &figment::Figment) -> Result<Self, ConfigError> {
        let mut config: WorkerConfig = figment.extract()?;
        if figment.contains(channel.as_str()) {
            config.channel = figment.extract_inner(channel.as_str())?;
        }
        config.validate(channel)?;
        Ok(config)
    }

    pub fn validate(&self, channel: Channel) -> Result<(), ConfigError> {
        bootstrap::require(&self.database_url, "database_url")?;
        bootstrap::require(&self.amqp_url, "amqp_url")?;
        let invalid = |key: String, message: String| ConfigError::Invalid { key, message };
        self.channel.retry.validate().map_err(|e| invalid(format!("{channel}.retry.{}", e.field), e.message))?;
        if self.worker.prefetch == 0 {
            return Err(invalid("worker.prefetch".into(), "must be at least 1".into()));
        }
        if self.database_max_connections < 2 * store::RECORD_SLOTS {
            let message = format!(
                "must be at least {}: the outcome records hold {} for good",
                2 * store::RECORD_SLOTS,
                store::RECORD_SLOTS
            );
            return Err(invalid("database_max_connections".into(), message));
        }
        // The same rules as the API's: a tenant's client asks for receipts at this URL.
        self.integrations.validate()?;
        if self.channel.providers.is_empty() {
            return Err(invalid(format!("{channel}.providers"), "must name at least one provider".into()));
        }
        if self.environment == Environment::Production
            && !self.worker.allow_sandbox
            && self.channel.providers.iter().any(|p| p == crate::SANDBOX)
        {
            return Err(invalid(
                format!("{channel}.providers"),
                "names the sandbox, which sends nothing, in production (environment = \"production\"): name the \
                 channel's real providers, or set worker.allow_sandbox = true"
                    .into(),
            ));
        }
        // Each provider in turn may take the whole timeout, and recording takes a moment.
        let sends = u32::try_from(self.channel.providers.len() + 1).unwrap_or(u32::MAX);
        if self.worker.lease < self.worker.provider_timeout.saturating_mul(sends) {
            return Err(invalid(
                "worker.lease".into(),
                format!(
                    "must be at least worker.provider_timeout times (providers + 1), {:?}",
                    self.worker.provider_timeout.saturating_mul(sends)
                ),
            ));
        }
        if let Some((name, _)) = self.channel.rate_limits.iter().find(|(_, r)| !(**r > 0.0 && r.is_finite())) {
            return Err(invalid(
                format!("{channel}.rate_limits.{name}"),
                "must be a number of sends per second above 0".into(),
            ));
        }
        // A worker takes a provider's rate slot before it claims, and holds `prefetch`
        // messages: the last of them waits prefetch / rate for its slot, and a slower
        // rate than that leaves messages unclaimed in the worker longer than a lease.
        let prefetch = f64::from(self.worker.prefetch);
        if let Some((name, rate)) =
            self.channel.rate_limits.iter().find(|(_, r)| prefetch / **r > self.worker.lease.as_secs_f64())
        {
            return Err(invalid(
                format!("{channel}.rate_limits.{name}"),
                format!(
                    "{rate}/s paces worker.prefetch ({prefetch}) messages over {:.0}s, longer than worker.lease \
                     ({:?}): lower worker.prefetch, raise the rate or lengthen the lease",
                    prefetch / rate,
                    self.worker.lease
                ),
            ));
        }
        let rate = self.channel.sandbox.failure_rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(invalid(format!("{channel}.sandbox.failure_rate"), "must be between 0 and 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_missing_setting_is_named() {
        let err = WorkerConfig::default().validate(Channel::Email).unwrap_err().to_string();
        assert!(err.contains("`database_url`") && err.contains("NOTIFY_DATABASE_URL"), "{err}");
    }

    #[test]
    fn integration_rules_are_checked_as_the_api_checks_them() {
        let mut config = WorkerConfig {
            database_url: Some("postgres://db/notify".into()),
            amqp_url: Some("amqp://broker".into()),
            ..Default::default()
        };
        assert!(config.validate(Channel::Sms).is_ok());
        config.integrations.receipts_url = Some("https://user:pw@notify.example.com".into());
        let err = config.validate(Channel::Sms).unwrap_err().to_string();
        assert!(err.contains("integrations.receipts_url"), "{err}");
    }

    #[test]
    fn the_file_sets_shared_and_per_channel_settings() {
        let mut file = temp_config_file();
        writeln!(
            file.1,
            r#"
            database_url = "postgres://db/notify"
            amqp_url = "amqp://broker"
            [worker]
            provider_timeout = "3s"
            [sms.retry]
            max_attempts = 7
            initial_delay = "5s"
            [email.sandbox]
            failure_rate = 0.5
            "#
        )
        .unwrap();
        let sms = WorkerConfig::load(Channel::Sms, Some(&file.0)).unwrap();
        assert_eq!(sms.channel.retry.max_attempts, 7);
        assert_eq!(sms.channel.retry.initial_delay, Duration::from_secs(5));
        assert_eq!(sms.channel.retry.max_delay, RetryPolicy::default().max_delay);
        assert_eq!(sms.worker.provider_timeout, Duration::from_secs(3));
        assert_eq!(sms.channel.sandbox.failure_rate, 0.0);
        let email = WorkerConfig::load(Channel::Email, Some(&file.0)).unwrap();
        assert_eq!(email.channel.retry, RetryPolicy::default());
        assert_eq!(email.channel.sandbox.failure_rate, 0.5);
        std::fs::remove_file(&file.0).unwrap();
    }

    #[test]
    fn a_bad_value_is_refused() {
        let mut file = temp_config_file();
        writeln!(file.1, "database_url = \"x\"\namqp_url = \"y\"\n[novu.retry]\njitter = 3.0").unwrap();
        let err = WorkerConfig::load(Channel::Novu, Some(&file.0)).unwrap_err().to_string();
        assert!(err.contains("novu.retry.jitter"), "{err}");
        std::fs::remove_file(&file.0).unwrap();

        let mut file = temp_config_file();
        writeln!(file.1, "database_url = \"x\"\namqp_url = \"y\"\n[sms.retry]\nmax_delay = \"30days\"").unwrap();
        let err = WorkerConfig::load(Channel::Sms, Some(&file.0)).unwrap_err().to_string();
        assert!(err.contains("sms.retry.max_delay") && err.contains("7 days"), "{err}");
        std::fs::remove_file(&file.0).unwrap();
    }

    #[test]
    fn a_rate_limit_too_slow_for_the_prefetch_within_a_lease_is_refused() {
        let mut config = WorkerConfig {
            database_url: Some("postgres://db/notify".into()),
            amqp_url: Some("amqp://broker".into()),
            ..Default::default()
        };
        config.worker.prefetch = 64;
        config.worker.lease = Duration::from_secs(30);
        config.channel.rate_limits.insert("sandbox".into(), 2.0);
        let err = config.validate(Channel::Sms).unwrap_err().to_string();
        assert!(
            err.contains("sms.rate_limits.sandbox") && err.contains("worker.prefetch") && err.contains("worker.lease"),
            "{err}"
        );
        // 64 messages at 2.2/s take 29 s: within the lease.
        config.channel.rate_limits.insert("sandbox".into(), 2.2);
        config.validate(Channel::Sms).unwrap();
    }

    #[test]
    fn a_worker_in_production_refuses_the_sandbox_unless_allowed() {
        let mut config = WorkerConfig {
            database_url: Some("postgres://db/notify".into()),
            amqp_url: Some("amqp://broker".into()),
            ..Default::default()
        };
        config.validate(Channel::Email).unwrap();
        config.environment = Environment::Production;
        let err = config.validate(Channel::Email).unwrap_err().to_string();
        assert!(err.contains("email.providers") && err.contains("worker.allow_sandbox"), "{err}");
        config.worker.allow_sandbox = true;
        config.validate(Channel::Email).unwrap();
        config.worker.allow_sandbox = false;
        config.channel.providers = vec!["ses".into()];
        config.validate(Channel::Email).unwrap();
    }

    #[test]
    fn the_environment_is_read_from_the_shared_settings() {
        let mut file = temp_config_file();
        writeln!(file.1, "database_url = \"x\"\namqp_url = \"y\"\nenvironment = \"production\"").unwrap();
        let err = WorkerConfig::load(Channel::Sms, Some(&file.0)).unwrap_err().to_string();
        assert!(err.contains("sms.providers"), "{err}");
        std::fs::remove_file(&file.0).unwrap();
    }

    fn temp_config_file() -> (std::path::PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!("notify-config-{}.toml", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }
}
