//! The novu channel worker: consumes `notify.novu` and sends through the configured
//! providers, in order of preference.

use std::{path::Path, sync::Arc};

use bootstrap::ConfigError;
use domain::Channel;
use providers::novu::{NovuConfig, NovuProvider};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use worker::{Provider, SandboxProvider, WorkerConfig};

pub const CHANNEL: Channel = Channel::Novu;

/// The providers this worker knows, by the names `novu.providers` lists.
pub const PROVIDERS: &[&str] = &[
    "sandbox", // writes to a file, sends nothing
    "novu",    // Novu workflow triggers
];

#[derive(Debug)]
pub struct Config {
    pub worker: WorkerConfig,
    pub providers: Providers,
}

/// The settings of each provider, under `[novu.<provider>]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Providers {
    pub novu: Option<NovuConfig>,
}

pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let config =
        Config { worker: WorkerConfig::load(CHANNEL, file)?, providers: worker::channel_section(CHANNEL, file)? };
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Every provider named in `novu.providers` exists and has its settings, and they are valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in &self.worker.channel.providers {
            if !PROVIDERS.contains(&name.as_str()) {
                return Err(worker::unknown_provider(CHANNEL, name, PROVIDERS));
            }
            if name == "novu" {
                worker::provider_settings(CHANNEL, &self.providers.novu, "novu")?.validate()?;
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
            "novu" => {
                let novu = worker::provider_settings(CHANNEL, &config.providers.novu, "novu")?;
                Arc::new(NovuProvider::new(novu.clone(), http.get()?)?)
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

    #[test]
    fn novu_settings_are_read_from_novu_novu() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("notify-novu-{}-{nanos}.toml", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(
                br#"
                database_url = "postgres://db/notify"
                amqp_url = "amqp://broker"
                [novu]
                providers = ["novu"]
                [novu.novu]
                api_key = "key"
                base_url = "https://eu.api.novu.co"
                [novu.novu.workflow_by_tenant."0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]
                "order.shipped" = "order-shipped"
                "#,
            )
            .unwrap();
        let loaded = load(Some(&path));
        std::fs::remove_file(&path).unwrap();
        let novu = loaded.unwrap().providers.novu.unwrap();
        assert_eq!(novu.base_url, "https://eu.api.novu.co");
        let (tenant, mapping) = novu.workflow_by_tenant.iter().next().unwrap();
        assert_eq!(tenant.to_string(), "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(mapping["order.shipped"], "order-shipped");
    }

    #[test]
    fn a_mapping_shared_by_every_tenant_is_refused() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("notify-novu-shared-{}-{nanos}.toml", std::process::id()));
        std::fs::write(
            &path,
            "database_url = \"postgres://db/notify\"\namqp_url = \"amqp://broker\"\n[novu]\nproviders = [\"novu\"]\n\
             [novu.novu]\napi_key = \"key\"\nworkflow_by_type = { \"order.shipped\" = \"order-shipped\" }\n",
        )
        .unwrap();
        let loaded = load(Some(&path));
        std::fs::remove_file(&path).unwrap();
        let err = loaded.unwrap_err().to_string();
        assert!(err.contains("workflow_by_type") && err.contains("workflow_by_tenant"), "{err}");
    }

    #[test]
    fn listing_novu_without_its_settings_is_refused() {
        let config = Config {
            worker: WorkerConfig {
                channel: worker::ChannelSettings { providers: vec!["novu".into()], ..Default::default() },
                ..Default::default()
            },
            providers: Providers::default(),
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`novu.novu`"), "{err}");
    }
}
