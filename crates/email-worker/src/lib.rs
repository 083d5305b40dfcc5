//! The email channel worker: consumes `notify.email` and sends through the configured
//! providers, in order of preference: Amazon SES (`ses`), an SMTP server (`smtp`), or the
//! sandbox.

mod mail;
mod ses;
mod smtp;

use std::{path::Path, sync::Arc};

use bootstrap::ConfigError;
use domain::Channel;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use worker::{Provider, SandboxProvider, WorkerConfig};

pub use ses::{SesConfig, SesProvider};
pub use smtp::{SmtpConfig, SmtpProvider, SmtpTls};

pub const CHANNEL: Channel = Channel::Email;

/// The providers this worker knows, by the names `email.providers` lists.
pub const PROVIDERS: &[&str] = &["sandbox", "ses", "smtp"];

#[derive(Debug)]
pub struct Config {
    pub worker: WorkerConfig,
    pub providers: Providers,
}

/// The settings of each provider, under `[email.<provider>]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Providers {
    pub ses: Option<SesConfig>,
    pub smtp: Option<SmtpConfig>,
}

pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let config =
        Config { worker: WorkerConfig::load(CHANNEL, file)?, providers: worker::channel_section(CHANNEL, file)? };
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Every provider named in `email.providers` exists and has valid settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let provider_timeout = self.worker.worker.provider_timeout;
        for name in &self.worker.channel.providers {
            match name.as_str() {
                "sandbox" => {}
                "ses" => worker::provider_settings(CHANNEL, &self.providers.ses, "ses")?.validate(provider_timeout)?,
                "smtp" => {
                    worker::provider_settings(CHANNEL, &self.providers.smtp, "smtp")?.validate(provider_timeout)?
                }
                _ => {
                    return Err(worker::unknown_provider(CHANNEL, name, PROVIDERS));
                }
            }
        }
        Ok(())
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    for name in &config.worker.channel.providers {
        providers.push(match name.as_str() {
            "sandbox" => Arc::new(SandboxProvider::open(CHANNEL, config.worker.channel.sandbox.clone()).await?),
            "ses" => {
                Arc::new(SesProvider::new(worker::provider_settings(CHANNEL, &config.providers.ses, "ses")?).await?)
            }
            "smtp" => Arc::new(SmtpProvider::new(worker::provider_settings(CHANNEL, &config.providers.smtp, "smtp")?)?),
            other => anyhow::bail!("unknown {CHANNEL} provider `{other}`"),
        });
    }
    worker::run(CHANNEL, config.worker, providers, shutdown).await
}

#[cfg(test)]
mod tests {
    use std::{io::Write, time::Duration};

    use super::*;

    fn with_providers(providers: &[&str], settings: Providers) -> Config {
        let mut worker = WorkerConfig::default();
        worker.channel.providers = providers.iter().map(|p| p.to_string()).collect();
        Config { worker, providers: settings }
    }

    #[test]
    fn a_listed_provider_needs_its_settings() {
        let err = with_providers(&["ses"], Providers::default()).validate().unwrap_err().to_string();
        assert!(err.contains("`email.ses`") && err.contains("NOTIFY_EMAIL__SES__*"), "{err}");
        let err = with_providers(&["sandbox", "smtp"], Providers::default()).validate().unwrap_err().to_string();
        assert!(err.contains("`email.smtp`"), "{err}");
        let err = with_providers(&["postmark"], Providers::default()).validate().unwrap_err().to_string();
        assert!(err.contains("unknown provider `postmark`"), "{err}");
        let ses = SesConfig::new("eu-west-1", "noreply@example.com");
        with_providers(&["ses"], Providers { ses: Some(ses), smtp: None }).validate().unwrap();
    }

    #[test]
    fn provider_settings_come_from_the_file() {
        let path = std::env::temp_dir().join(format!("notify-email-{}.toml", uuid::Uuid::new_v4()));
        let mut file = std::fs::File::create(&path).unwrap();
        writeln!(
            file,
            r#"
            [email]
            providers = ["ses", "smtp"]
            [email.ses]
            region = "eu-west-1"
            from = "Notify <noreply@example.com>"
            configuration_set = "notify-events"
            attempt_timeout = "5s"
            [email.smtp]
            host = "smtp.example.com"
            tls = "tls"
            username = "notify"
            password = "123456"
            from = "noreply@example.com"
            "#
        )
        .unwrap();
        let providers: Providers = worker::channel_section(CHANNEL, Some(&path)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let ses = providers.ses.unwrap();
        assert_eq!((ses.region.as_str(), ses.configuration_set.as_deref()), ("eu-west-1", Some("notify-events")));
        assert_eq!((ses.attempt_timeout, ses.connect_timeout), (Duration::from_secs(5), Duration::from_secs(3)));
        let smtp = providers.smtp.unwrap();
        assert_eq!((smtp.tls, smtp.port()), (SmtpTls::Tls, 465));
        use bootstrap::ExposeSecret;
        assert_eq!(smtp.password.unwrap().expose_secret(), "123456");
    }

    #[test]
    fn an_unknown_setting_is_refused() {
        let path = std::env::temp_dir().join(format!("notify-email-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, "[email.ses]\nregion = \"eu-west-1\"\nfrom = \"a@example.com\"\nregoin = \"x\"\n")
            .unwrap();
        let err = worker::channel_section::<Providers>(CHANNEL, Some(&path)).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("regoin"), "{err}");
    }
}
