//! A worker's providers from the units of its channel: each name in `<channel>.providers`
//! is read through its unit (the sandbox is the runtime's own), checked before anything
//! connects, then built with the process's one HTTP client.

use std::sync::Arc;

use bootstrap::ConfigError;
use domain::Channel;
use providers::{Context, ProviderSettings, ProviderUnit, Source, http::SharedClient};
use tokio_util::sync::CancellationToken;

use crate::{Provider, SANDBOX, SandboxProvider, WorkerConfig};

/// The channel's providers as `<channel>.providers` lists them, their settings checked.
#[derive(Debug)]
pub struct Configured(Vec<Entry>);

#[derive(Debug)]
enum Entry {
    Sandbox,
    Unit(Box<dyn ProviderSettings>),
}

impl Configured {
    /// Reads the settings of each provider `config` names through the unit of that name
    /// among `units`, refusing a name no unit has and naming the first setting missing or
    /// wrong.
    pub fn read(
        channel: Channel,
        config: &WorkerConfig,
        figment: &figment::Figment,
        units: &[&dyn ProviderUnit],
    ) -> Result<Self, ConfigError> {
        let units: Vec<_> = units.iter().filter(|u| u.channel() == channel).collect();
        let mut entries = Vec::new();
        for name in &config.channel.providers {
            if name == SANDBOX {
                entries.push(Entry::Sandbox);
                continue;
            }
            let Some(unit) = units.iter().find(|u| u.name() == name) else {
                let known: Vec<&str> = std::iter::once(SANDBOX).chain(units.iter().map(|u| u.name())).collect();
                return Err(crate::unknown_provider(channel, name, &known));
            };
            entries.push(Entry::Unit(unit.settings(Source::Config(figment))?));
        }
        Ok(Self(entries))
    }

    /// Builds the providers in order, sharing one HTTP client (and its connection pool),
    /// which the clients of tenants' integrations share too.
    pub async fn build(
        &self,
        channel: Channel,
        config: &WorkerConfig,
        http: &SharedClient,
    ) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
        let ctx = Context { http, provider_timeout: config.worker.provider_timeout };
        let mut built = Vec::with_capacity(self.0.len());
        for entry in &self.0 {
            built.push(match entry {
                Entry::Sandbox => Arc::new(SandboxProvider::open(channel, config.channel.sandbox.clone()).await?),
                Entry::Unit(settings) => settings.build(&ctx).await?,
            });
        }
        Ok(built)
    }
}

/// Reads, builds and runs the providers `<channel>.providers` names from `units` (what a
/// worker binary does after parsing its configuration; the tests call it directly).
pub async fn run_units(
    channel: Channel,
    config: WorkerConfig,
    figment: &figment::Figment,
    units: &[&dyn ProviderUnit],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let http = Arc::new(SharedClient::new(config.worker.provider_timeout));
    let providers = Configured::read(channel, &config, figment, units)?.build(channel, &config, &http).await?;
    crate::runtime::run(channel, config, providers, shutdown).await
}

#[cfg(test)]
mod tests {
    use figment::providers::{Format, Toml};

    use super::*;

    fn read(channel: Channel, toml: &str) -> Result<Configured, ConfigError> {
        let figment = figment::Figment::from(Toml::string(toml));
        let config = WorkerConfig { channel: figment.extract_inner(channel.as_str()).unwrap(), ..Default::default() };
        let units: Vec<_> = providers::units(channel).collect();
        Configured::read(channel, &config, &figment, &units)
    }

    #[test]
    fn each_listed_provider_is_read_through_its_unit() {
        let configured = read(
            Channel::Whatsapp,
            r#"
            [whatsapp]
            providers = ["meta", "twilio", "sandbox"]
            [whatsapp.meta]
            access_token = "token"
            phone_number_id = 106540352242922
            [whatsapp.meta.template_by_tenant."0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"."order.shipped"]
            name = "order_shipped"
            language = "en_US"
            body_parameters = ["order"]
            [whatsapp.twilio]
            account_sid = "AC0123"
            auth_token = "secret"
            from = "+14155238886"
            "#,
        )
        .unwrap();
        assert_eq!(configured.0.len(), 3);
        assert!(matches!(configured.0[2], Entry::Sandbox));
    }

    #[test]
    fn an_unknown_name_is_refused_listing_the_channels_providers() {
        let err = read(Channel::Email, "[email]\nproviders = [\"postmark\"]\n").unwrap_err().to_string();
        assert!(err.contains("unknown provider `postmark`") && err.contains("sandbox, ses, smtp"), "{err}");
        // A unit of another channel is not this channel's.
        let err = read(Channel::Email, "[email]\nproviders = [\"twilio\"]\n").unwrap_err().to_string();
        assert!(err.contains("unknown provider `twilio`"), "{err}");
    }

    #[test]
    fn a_listed_provider_needs_its_section_and_valid_settings() {
        let err = read(Channel::Whatsapp, "[whatsapp]\nproviders = [\"meta\"]\n").unwrap_err().to_string();
        assert!(err.contains("`whatsapp.meta`") && err.contains("NOTIFY_WHATSAPP__META__*"), "{err}");
        let err = read(
            Channel::Whatsapp,
            "[whatsapp]\nproviders = [\"twilio\"]\n[whatsapp.twilio]\naccount_sid = \"AC1\"\nauth_token = \"t\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("whatsapp.twilio.from"), "{err}");
        let err = read(Channel::Email, "[email]\nproviders = [\"ses\"]\n[email.ses]\nregion = \"eu-west-1\"\nfrom = \"a@example.com\"\nregoin = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("regoin"), "{err}");
    }

    #[tokio::test]
    async fn the_providers_are_built_in_the_listed_order() {
        let configured = read(
            Channel::Email,
            r#"
            [email]
            providers = ["smtp", "ses"]
            [email.ses]
            region = "eu-west-1"
            from = "Notify <noreply@example.com>"
            configuration_set = "notify-events"
            attempt_timeout = "5s"
            access_key_id = "testing"
            secret_access_key = "testing"
            [email.smtp]
            host = "smtp.example.com"
            tls = "tls"
            username = "notify"
            password = "123456"
            from = "noreply@example.com"
            "#,
        )
        .unwrap();
        let http = SharedClient::new(WorkerConfig::default().worker.provider_timeout);
        let built = configured.build(Channel::Email, &WorkerConfig::default(), &http).await.unwrap();
        let names: Vec<&str> = built.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["smtp", "ses"]);
    }
}
