//! The sandbox provider: sends nothing, appends each message as one JSON line to
//! `<dir>/<channel>.jsonl` where a developer can read it, and answers with a message id.
//! It can be told to fail, to show and test retries and failures.

use std::path::{Path, PathBuf};

use domain::{Channel, DeliveryJob, FailureKind, SendFailure, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use serde::Deserialize;
use tokio::{fs::File, io::AsyncWriteExt, sync::Mutex};
use uuid::Uuid;

use crate::Provider;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Folder of the `<channel>.jsonl` files, relative to the working directory.
    pub dir: PathBuf,
    /// Share of attempts that fail at random, from 0 to 1.
    pub failure_rate: f64,
    /// How the failing attempts fail.
    pub failure_kind: SandboxFailure,
    /// Attempts numbered up to this one fail (`failure_kind`), later ones succeed.
    pub fail_first_attempts: u32,
    /// How long each send takes, to stand in for a real provider's latency.
    #[serde(with = "humantime_serde")]
    pub latency: std::time::Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            dir: "sandbox".into(),
            failure_rate: 0.0,
            failure_kind: SandboxFailure::Retryable,
            fail_first_attempts: 0,
            latency: std::time::Duration::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxFailure {
    Retryable,
    Permanent,
    /// As a provider whose credentials are wrong: the worker pauses it.
    Config,
    /// As a provider reporting the address dead (a push device unregistered): the
    /// worker's record removes a push delivery's device.
    Gone,
}

/// The sandbox provider's name in `<channel>.providers`.
pub const SANDBOX: &str = "sandbox";

pub struct SandboxProvider {
    config: SandboxConfig,
    path: PathBuf,
    file: Mutex<File>,
}

impl SandboxProvider {
    pub async fn open(channel: Channel, config: SandboxConfig) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(&config.dir).await?;
        let path = config.dir.join(format!("{channel}.jsonl"));
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await?;
        tracing::info!(file = %path.display(), "sandbox provider records messages here");
        Ok(Self { config, path, file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configured_failure(&self, attempt: i32) -> Option<SendFailure> {
        let first = i64::from(attempt) <= i64::from(self.config.fail_first_attempts);
        let random = self.config.failure_rate > 0.0 && rand::random::<f64>() < self.config.failure_rate;
        (first || random).then(|| {
            let message = "the sandbox provider is configured to fail this attempt";
            let (kind, code) = match self.config.failure_kind {
                SandboxFailure::Retryable => (FailureKind::Retryable, "sandbox_retryable"),
                SandboxFailure::Permanent => (FailureKind::Permanent, "sandbox_permanent"),
                SandboxFailure::Config => (FailureKind::Config, "sandbox_config"),
                SandboxFailure::Gone => return SendFailure::gone("sandbox_gone", message),
            };
            SendFailure::new(kind, code, message)
        })
    }

    async fn record(&self, job: &DeliveryJob) -> SendOutcome {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        if let Some(failure) = self.configured_failure(job.attempt) {
            return SendOutcome::Failed(failure);
        }
        let id = format!("sandbox-{}", Uuid::new_v4());
        let to = recorded_recipient(job);
        let mut line = serde_json::json!({
            "provider_message_id": id,
            "recorded_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).ok(),
            "tenant_id": job.tenant_id,
            "notification_id": job.notification_id,
            "delivery_id": job.delivery_id,
            "attempt": job.attempt,
            "channel": job.channel,
            "to": to,
            "type": job.kind,
            "content": job.content,
            "data": job.data,
        });
        // A push delivery's device as the claim read it; never its token.
        if let (Some(device), serde_json::Value::Object(line)) = (&job.device, &mut line) {
            let device = serde_json::json!({"id": device.id, "platform": device.platform.as_str(), "app": device.app});
            line.insert("device".into(), device);
        }
        let mut bytes = serde_json::to_vec(&line).expect("a JSON value serializes");
        bytes.push(b'\n');
        let written = {
            let mut file = self.file.lock().await;
            match file.write_all(&bytes).await {
                Ok(()) => file.flush().await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = written {
            return SendOutcome::Failed(SendFailure::new(FailureKind::Retryable, "sandbox_io", e.to_string()));
        }
        tracing::info!(provider_message_id = %id, file = %self.path.display(), "sandbox recorded the message");
        tracing::debug!(to = %to, content = ?job.content, "sandbox message");
        SendOutcome::Sent(SendReceipt { provider_message_id: id, response_excerpt: None })
    }
}

/// The recipient as the sandbox writes it: a chat webhook URL (a secret, opened after the
/// claim) becomes `<provider>:<webhook>`, so the file holds no secret at rest.
fn recorded_recipient(job: &DeliveryJob) -> std::borrow::Cow<'_, str> {
    match domain::chat::split(&job.recipient) {
        Some((provider, address)) if job.channel == Channel::Chat && address.contains("://") => {
            format!("{provider}:<webhook>").into()
        }
        _ => job.recipient.as_str().into(),
    }
}

impl Provider for SandboxProvider {
    fn name(&self) -> &str {
        SANDBOX
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.record(job).boxed()
    }
}
