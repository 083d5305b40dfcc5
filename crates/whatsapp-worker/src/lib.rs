//! The whatsapp channel worker: consumes `notify.whatsapp` and sends through the configured
//! providers, in order of preference.

use std::{path::Path, sync::Arc};

use bootstrap::ConfigError;
use domain::Channel;
use providers::meta::{MetaConfig, MetaProvider};
use providers::twilio::{TwilioConfig, TwilioMode, TwilioProvider};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use worker::{Provider, SandboxProvider, WorkerConfig};

pub const CHANNEL: Channel = Channel::Whatsapp;

/// The providers this worker knows, by the names `whatsapp.providers` lists.
pub const PROVIDERS: &[&str] = &[
    "sandbox", // writes to a file, sends nothing
    "twilio",  // Twilio Programmable Messaging, WhatsApp
    "meta",    // Meta WhatsApp Cloud API
];

#[derive(Debug)]
pub struct Config {
    pub worker: WorkerConfig,
    pub providers: Providers,
}

/// The settings of each provider, under `[whatsapp.<provider>]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Providers {
    pub twilio: Option<TwilioConfig>,
    pub meta: Option<MetaConfig>,
}

pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let config =
        Config { worker: WorkerConfig::load(CHANNEL, file)?, providers: worker::channel_section(CHANNEL, file)? };
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Every provider named in `whatsapp.providers` exists and has its settings, and they are valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in &self.worker.channel.providers {
            if !PROVIDERS.contains(&name.as_str()) {
                return Err(worker::unknown_provider(CHANNEL, name, PROVIDERS));
            }
            if name == "twilio" {
                worker::provider_settings(CHANNEL, &self.providers.twilio, "twilio")?.validate(TwilioMode::Whatsapp)?;
            }
            if name == "meta" {
                worker::provider_settings(CHANNEL, &self.providers.meta, "meta")?.validate()?;
            }
        }
        Ok(())
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    // One HTTP client for every provider of the process, so they share its connection pool.
    let http = providers::http::SharedClient::new(config.worker.worker.provider_timeout);
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    for name in &config.worker.channel.providers {
        providers.push(match name.as_str() {
            "sandbox" => Arc::new(SandboxProvider::open(CHANNEL, config.worker.channel.sandbox.clone()).await?),
            "twilio" => {
                let twilio = worker::provider_settings(CHANNEL, &config.providers.twilio, "twilio")?;
                Arc::new(TwilioProvider::new(twilio.clone(), TwilioMode::Whatsapp, http.get()?)?)
            }
            "meta" => {
                let meta = worker::provider_settings(CHANNEL, &config.providers.meta, "meta")?;
                Arc::new(MetaProvider::new(meta.clone(), http.get()?)?)
            }
            other => anyhow::bail!("unknown {CHANNEL} provider `{other}`"),
        });
    }
    worker::run(CHANNEL, config.worker, providers, shutdown).await
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A config file of its own, removed when dropped.
    struct ConfigFile(std::path::PathBuf);

    impl ConfigFile {
        fn new(text: &str) -> Self {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            let path = std::env::temp_dir().join(format!("notify-whatsapp-{}-{nanos}.toml", std::process::id()));
            std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
            Self(path)
        }
    }

    impl Drop for ConfigFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const SHARED: &str = "database_url = \"postgres://db/notify\"\namqp_url = \"amqp://broker\"\n";

    #[test]
    fn provider_settings_are_read_from_the_channel_section() {
        let file = ConfigFile::new(&format!(
            r#"{SHARED}
            [whatsapp]
            providers = ["meta", "twilio"]
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
            "#
        ));
        let config = load(Some(&file.0)).unwrap();
        let meta = config.providers.meta.unwrap();
        assert_eq!(meta.phone_number_id.as_deref(), Some("106540352242922"));
        assert_eq!(meta.api_version, "v21.0");
        let (tenant, templates) = meta.template_by_tenant.iter().next().unwrap();
        assert_eq!(tenant.to_string(), "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(templates["order.shipped"].body_parameters, ["order"]);
        assert_eq!(config.providers.twilio.unwrap().from.as_deref(), Some("+14155238886"));
    }

    #[test]
    fn a_listed_provider_without_settings_is_named() {
        let file = ConfigFile::new(&format!("{SHARED}[whatsapp]\nproviders = [\"meta\"]\n"));
        let err = load(Some(&file.0)).unwrap_err().to_string();
        assert!(err.contains("`whatsapp.meta`") && err.contains("NOTIFY_WHATSAPP__META__*"), "{err}");
    }

    #[test]
    fn a_provider_missing_a_setting_is_refused_before_anything_starts() {
        let file = ConfigFile::new(&format!(
            "{SHARED}[whatsapp]\nproviders = [\"twilio\"]\n[whatsapp.twilio]\naccount_sid = \"AC1\"\nauth_token = \"t\"\n"
        ));
        let err = load(Some(&file.0)).unwrap_err().to_string();
        assert!(err.contains("whatsapp.twilio.from"), "{err}");
    }
}
