//! The webhook-worker (docs/webhooks.md): consumes `notify.webhooks` on the shared consume
//! loop and, for each message, claims it under a lease, signs its event with the
//! endpoint's secrets (both during a rotation), posts it, and records the attempt with the
//! message's new state (sent, retrying on the schedule, or failed) and its endpoint's
//! health in one statement, then acks. The same claim, lease, retry and attempts-log
//! semantics as a channel's deliveries; no provider, no tenant integrations.

mod gate;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bootstrap::{ConfigError, ExposeSecret, SecretString, seal::Keyring};
use domain::{
    WebhookMessage,
    webhook::{RetrySchedule, WebhookSecret, message_id},
};
use providers::webhook_endpoint::{Attempt, EndpointClient, Post, Verdict, WebhookSettings};
use queue::{Incoming, Topology, topology};
use serde::Deserialize;
use store::{Lease, Store, WebhookAttemptRecord, WebhookClaim, WebhookOutcome, WebhookPost, WebhookState};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::{
    WorkerSettings,
    consume::{self, BoxFuture, Consumer, Handler, consume, settle},
    metrics::{ChannelLabel, METRICS, OutcomeLabels, ProviderLabels},
    retried::{Retried, with_retries},
};
use gate::{Gates, Refused};

/// The label of the webhook-worker's metrics (`channel="webhooks"`).
const LABEL: &str = "webhooks";
/// The `provider` label of its attempts.
const ENDPOINT: &str = "endpoint";

/// The webhook-worker's configuration: the shared top-level settings (one file serves
/// every binary) and `[webhooks]`.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct WebhookWorkerConfig {
    pub database_url: Option<SecretString>,
    pub amqp_url: Option<SecretString>,
    pub database_max_connections: u32,
    pub worker: WorkerSettings,
    pub broker: Topology,
    /// The keys that open the endpoints' signing secrets: required.
    pub secrets: bootstrap::seal::SecretsConfig,
    pub webhooks: WebhookSettings,
}

impl Default for WebhookWorkerConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            amqp_url: None,
            // Concurrent claims share a statement, and concurrent records another, each on
            // a connection its group slot holds (`store::WEBHOOK_SLOTS`); the rest serve
            // deferrals.
            database_max_connections: 4,
            // Sends wait on the receivers, not on this machine: more at once than a
            // channel's, so an endpoint's cap (and as many waiting) takes a share only.
            worker: WorkerSettings { prefetch: 128, ..WorkerSettings::default() },
            broker: Topology::default(),
            secrets: Default::default(),
            webhooks: WebhookSettings::default(),
        }
    }
}

impl WebhookWorkerConfig {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = bootstrap::layered(file).extract()?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        bootstrap::require(&self.database_url, "database_url")?;
        bootstrap::require(&self.amqp_url, "amqp_url")?;
        let invalid = |key: &str, message: String| ConfigError::Invalid { key: key.into(), message };
        self.webhooks.validate().map_err(|e| invalid(&e.field, e.message))?;
        if self.worker.prefetch == 0 {
            return Err(invalid("worker.prefetch", "must be at least 1".into()));
        }
        if self.database_max_connections <= store::WEBHOOK_SLOTS {
            let message = format!(
                "must be above {}: the claims' and the records' group slots hold that many",
                store::WEBHOOK_SLOTS
            );
            return Err(invalid("database_max_connections", message));
        }
        if self.secrets.keyring()?.is_none() {
            return Err(invalid("secrets.keys", "must hold the keys that sealed the endpoints' secrets".into()));
        }
        // A claim must outlast an attempt and its record.
        if self.worker.lease < self.webhooks.timeout.saturating_mul(2) {
            let least = self.webhooks.timeout.saturating_mul(2);
            return Err(invalid("worker.lease", format!("must be at least twice webhooks.timeout, {least:?}")));
        }
        Ok(())
    }
}

/// The whole `main` of the `webhook-worker` binary.
pub fn main() -> anyhow::Result<()> {
    use clap::{Args, Command, FromArgMatches};
    let command = bootstrap::ConfigArg::augment_args(Command::new("webhook-worker"))
        .version(env!("CARGO_PKG_VERSION"))
        .about("Notify's webhook worker: sends tenants' event webhooks.");
    let args = bootstrap::ConfigArg::from_arg_matches(&command.get_matches())?;
    let config = WebhookWorkerConfig::load(args.config.as_deref())?;
    let _telemetry = bootstrap::telemetry::init("webhook-worker");
    tokio::runtime::Runtime::new()?.block_on(async { run(config, bootstrap::shutdown_on_signal()).await })
}

struct Sender {
    store: Store,
    client: EndpointClient,
    keyring: Keyring,
    schedule: RetrySchedule,
    disable_after: Duration,
    lease: Duration,
    gates: Gates,
    consuming: Arc<AtomicBool>,
}

/// Consumes `notify.webhooks` until `shutdown` fires, then lets the messages in flight
/// finish (up to `worker.shutdown_grace`).
pub async fn run(config: WebhookWorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let database_url = bootstrap::require(&config.database_url, "database_url")?;
    let amqp_url = bootstrap::require(&config.amqp_url, "amqp_url")?.expose_secret().to_owned();
    let store = Store::connect_lazy(database_url.expose_secret(), config.database_max_connections)?;
    let settings = &config.webhooks;
    let sender = Arc::new(Sender {
        store: store.clone(),
        client: EndpointClient::new(settings.timeout, settings.allowed_subnets.clone())?,
        keyring: config.secrets.keyring()?.expect("validated: the webhook-worker has keys"),
        schedule: settings.schedule(),
        disable_after: settings.disable_after,
        lease: config.worker.lease,
        gates: Gates::new(settings.endpoint_concurrency, settings.endpoint_rate),
        consuming: Arc::default(),
    });
    crate::metrics::publish(LABEL, &[ENDPOINT]);
    let ops = config
        .worker
        .listen
        .map(|addr| tokio::spawn(bootstrap::ops::serve(addr, readiness(&sender), shutdown.clone())));
    let consumer = Consumer {
        amqp_url,
        topology: config.broker.clone(),
        queue: topology::route_queue_name(domain::Route::Webhooks),
        name: "webhook-worker".into(),
        prefetch: config.worker.prefetch,
        shutdown_grace: config.worker.shutdown_grace,
        consuming: sender.consuming.clone(),
    };
    consume(consumer, sender.clone(), shutdown.clone()).await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    store.close().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Ready when the database answers and the broker is being consumed.
fn readiness(sender: &Arc<Sender>) -> bootstrap::ops::Check {
    let sender = sender.clone();
    Arc::new(move || {
        let sender = sender.clone();
        Box::pin(async move {
            let database = sender.store.ping().await.is_ok();
            let broker = sender.consuming.load(Ordering::Relaxed);
            let details = serde_json::json!({"database": database, "broker": broker});
            if database && broker { Ok(details) } else { Err(details) }
        })
    })
}

impl Handler for Sender {
    fn label(&self) -> &'static str {
        LABEL
    }

    fn handle<'a>(&'a self, incoming: &'a Incoming, shutdown: &'a CancellationToken) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let msg = match WebhookMessage::parse(&incoming.body) {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(error = %e, "unparseable message: dead-lettering it");
                    return consume::dead_letter(LABEL, incoming).await;
                }
            };
            let span = info_span!("webhook", tenant_id = %msg.tenant_id, message_id = %msg.message_id,
                attempt = msg.attempt);
            bootstrap::telemetry::set_parent(&span, incoming.traceparent.as_deref());
            self.process(&msg, incoming, shutdown).instrument(span).await
        })
    }
}

impl Sender {
    async fn process(&self, msg: &WebhookMessage, incoming: &Incoming, shutdown: &CancellationToken) {
        // One claim id however often the claim is tried: a retry after a lost reply finds
        // the claim it made.
        let lease = Lease::new(self.lease);
        let post = match with_retries(shutdown, || self.store.claim_webhook_message(msg, lease)).await {
            Retried::Done(WebhookClaim::Claimed(post)) => post,
            // Unlike a delivery, a webhook message may be deleted while its broker message
            // waits: with its endpoint, or with its event when it ages out. Nothing is left
            // to send.
            Retried::Done(claim @ (WebhookClaim::Stale | WebhookClaim::Disabled | WebhookClaim::Unknown)) => {
                tracing::info!(?claim, "dropping a stale message, one of a disabled endpoint, or a deleted one");
                METRICS.dropped.get_or_create(&ChannelLabel { channel: LABEL }).inc();
                return settle(incoming.ack().await);
            }
            // Left unsettled: the broker redelivers it once this consumer's channel closes.
            Retried::Cancelled => return,
            Retried::Fatal(e) => {
                tracing::error!(error = %e, "cannot read the webhook message: dead-lettering it");
                return consume::dead_letter(LABEL, incoming).await;
            }
        };
        let _pass = match self.gates.enter(post.endpoint_id).await {
            Ok(pass) => pass,
            Err(Refused(wait)) => return self.defer(msg, lease, wait, incoming).await,
        };

        let started_at = OffsetDateTime::now_utc();
        let attempt = match self.secrets(msg, &post) {
            Ok(secrets) => {
                let secrets: Vec<&WebhookSecret> = secrets.iter().collect();
                let id = message_id(post.event_id);
                let sent = Post { url: &post.url, id: &id, body: post.body.as_bytes(), secrets: &secrets };
                self.client.send(&sent).await
            }
            Err(why) => {
                let verdict = Verdict::Retry { retry_after: None };
                Attempt { status: None, verdict, excerpt: Some(why), latency: Duration::ZERO }
            }
        };
        let record = self.decide(msg.attempt, started_at, attempt);
        observe(&record, post.created_at);
        // The endpoint has been called: keep trying to record that until it is recorded,
        // or until the shutdown grace runs out and the task is dropped.
        let recorded = with_retries(&CancellationToken::new(), || {
            self.store.record_webhook_attempt(msg.message_id, lease.claim, post.endpoint_id, &record)
        })
        .await;
        match recorded {
            Retried::Done(state) => {
                log_attempt(&record, state);
                settle(incoming.ack().await);
            }
            Retried::Cancelled => {}
            Retried::Fatal(e) => {
                tracing::error!(error = %e, "cannot record the attempt: dead-lettering the message");
                consume::dead_letter(LABEL, incoming).await;
            }
        }
    }

    /// Gives the message back to the outbox for the same attempt after `wait`: its
    /// endpoint is at its cap.
    async fn defer(&self, msg: &WebhookMessage, lease: Lease, wait: Duration, incoming: &Incoming) {
        let deferred =
            with_retries(&CancellationToken::new(), || self.store.defer_webhook_message(msg, lease.claim, wait)).await;
        match deferred {
            Retried::Done(_) => settle(incoming.ack().await),
            Retried::Cancelled => {}
            Retried::Fatal(e) => {
                tracing::error!(error = %e, "cannot defer the message: dead-lettering it");
                consume::dead_letter(LABEL, incoming).await;
            }
        }
    }

    /// The secrets that sign: the current one, and the previous one while it still does.
    fn secrets(&self, msg: &WebhookMessage, post: &WebhookPost) -> Result<Vec<WebhookSecret>, String> {
        let purpose = store::webhooks::purpose(post.endpoint_id);
        std::iter::once(&post.secret)
            .chain(&post.previous_secret)
            .map(|sealed| {
                let plain = self
                    .keyring
                    .open(&msg.tenant_id, &purpose, sealed)
                    .map_err(|e| format!("the endpoint's secret cannot be opened: {e}"))?;
                let text = String::from_utf8(plain).map_err(|_| "the endpoint's secret is not text".to_owned())?;
                WebhookSecret::parse(&text).map_err(|e| e.to_string())
            })
            .collect()
    }

    /// What attempt `number` did, and when the message is tried again.
    fn decide(&self, number: i32, started_at: OffsetDateTime, attempt: Attempt) -> WebhookAttemptRecord {
        let (outcome, retry_after) = match attempt.verdict {
            Verdict::Sent => (WebhookOutcome::Sent, None),
            Verdict::Gone => (WebhookOutcome::Gone, None),
            Verdict::Refused => (WebhookOutcome::Refused, Some(None)),
            Verdict::Retry { retry_after } => (WebhookOutcome::Retryable, Some(retry_after)),
        };
        let retry_in = retry_after.and_then(|floor| self.schedule.retry_in(number, floor, rand::random::<f64>()));
        let (error, excerpt) = match (outcome, attempt.status) {
            (WebhookOutcome::Sent, _) => (None, attempt.excerpt),
            // No answer: the excerpt says what went wrong.
            (_, None) => (attempt.excerpt, None),
            (_, Some(status)) => (Some(format!("answered {status}")), attempt.excerpt),
        };
        WebhookAttemptRecord {
            number,
            status_code: attempt.status,
            outcome,
            error,
            excerpt,
            latency_ms: i32::try_from(attempt.latency.as_millis()).unwrap_or(i32::MAX),
            started_at,
            retry_in,
            disable_after: self.disable_after,
        }
    }
}

fn log_attempt(record: &WebhookAttemptRecord, state: WebhookState) {
    let (status, latency_ms) = (record.status_code, record.latency_ms);
    match state {
        WebhookState::Sent => tracing::info!(?status, latency_ms, "sent"),
        WebhookState::Retrying => {
            tracing::info!(?status, outcome = record.outcome.as_str(), retry_in = ?record.retry_in,
                "attempt failed; will retry")
        }
        WebhookState::Failed => tracing::warn!(?status, outcome = record.outcome.as_str(), "message failed"),
        WebhookState::Taken => {
            tracing::warn!("the message was taken over or settled meanwhile; only the attempt was recorded")
        }
    }
}

fn observe(record: &WebhookAttemptRecord, created_at: OffsetDateTime) {
    let outcome = match (record.outcome, record.retry_in) {
        (WebhookOutcome::Sent, _) => {
            let waited = (OffsetDateTime::now_utc() - created_at).as_seconds_f64().max(0.0);
            METRICS.accept_to_sent.get_or_create(&ChannelLabel { channel: LABEL }).observe(waited);
            "sent"
        }
        (_, Some(_)) => "retrying",
        (_, None) => "failed",
    };
    let labels = OutcomeLabels { channel: LABEL, provider: ENDPOINT.into(), outcome };
    METRICS.attempts.get_or_create(&labels).inc();
    let latency = METRICS.provider_latency.get_or_create(&ProviderLabels { channel: LABEL, provider: ENDPOINT.into() });
    latency.observe(f64::from(record.latency_ms) / 1000.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> WebhookWorkerConfig {
        // 32 zero bytes in base64: a key of the right shape.
        let key = SecretString::from("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        WebhookWorkerConfig {
            database_url: Some(SecretString::from("postgres://localhost/notify")),
            amqp_url: Some(SecretString::from("amqp://localhost")),
            secrets: bootstrap::seal::SecretsConfig { current: None, keys: [("k1".to_owned(), key)].into() },
            ..Default::default()
        }
    }

    #[test]
    fn a_pool_no_larger_than_the_group_slots_is_refused_naming_the_setting() {
        valid().validate().unwrap();
        let config = WebhookWorkerConfig { database_max_connections: store::WEBHOOK_SLOTS, ..valid() };
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("database_max_connections"), "{refused}");
    }
}
