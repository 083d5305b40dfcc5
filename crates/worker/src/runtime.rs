use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bootstrap::ExposeSecret;
use domain::{Channel, DeliveryJob, DeliveryMessage, RetryPolicy, SendOutcome};
use providers::http::SharedClient;
use queue::{Incoming, topology};
use store::{AttemptRecord, AttemptResult, Claim, Lease, Store};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::{
    Provider, WorkerConfig,
    consume::{self, BoxFuture, Consumer, Handler, consume, settle},
    dispatch::{Dispatched, Dispatcher},
    metrics::{ChannelLabel, METRICS, OutcomeLabels},
    retried::{Retried, with_retries},
    tenant_clients::TenantClients,
};

struct Context {
    channel: Channel,
    store: Store,
    providers: Dispatcher,
    retry: RetryPolicy,
    /// How long a claim holds a delivery against other messages for it.
    lease: Duration,
    /// Consuming from the broker right now.
    consuming: Arc<AtomicBool>,
    /// Opens sealed chat addresses (`secrets`); `None` without keys.
    keyring: Option<bootstrap::seal::Keyring>,
    /// The clients built from tenants' own integrations of the channel.
    tenants: TenantClients,
}

/// Consumes the channel's queue until `shutdown` fires, reconnecting to the broker with
/// backoff whenever the connection is lost. On shutdown it stops taking messages, lets
/// the in-flight ones finish (up to `worker.shutdown_grace`) and returns.
pub async fn run(
    channel: Channel,
    config: WorkerConfig,
    providers: Vec<Arc<dyn Provider>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate(channel)?;
    let database_url = bootstrap::require(&config.database_url, "database_url")?;
    let amqp_url = bootstrap::require(&config.amqp_url, "amqp_url")?.expose_secret().to_owned();
    let store = Store::connect_lazy(database_url.expose_secret(), config.database_max_connections)?;
    let ctx = Arc::new(Context {
        channel,
        store: store.clone(),
        providers: Dispatcher::new(providers, &config.channel, config.worker.provider_timeout),
        retry: config.channel.retry.clone(),
        lease: config.worker.lease,
        consuming: Arc::default(),
        keyring: config.secrets.keyring()?,
        tenants: TenantClients::new(
            channel,
            store.clone(),
            config.secrets.keyring()?,
            config.integrations.clone(),
            // Tenants' clients resolve through a resolver that refuses internal addresses;
            // the operator's providers keep the shared client `http`.
            Arc::new(SharedClient::for_tenants(config.worker.provider_timeout, &config.integrations)),
            config.worker.provider_timeout,
        ),
    });
    crate::metrics::publish(channel.as_str(), &ctx.providers.names());
    // Drops a tenant's clients when its integrations change, on any replica's write.
    let follow = tokio::spawn({
        let (ctx, stop) = (ctx.clone(), shutdown.clone());
        async move { ctx.store.follow_cache_events(&ctx.tenants, stop.cancelled()).await }
    });
    let ops =
        config.worker.listen.map(|addr| tokio::spawn(bootstrap::ops::serve(addr, readiness(&ctx), shutdown.clone())));
    let consumer = Consumer {
        amqp_url,
        topology: config.broker.clone(),
        queue: topology::queue_name(channel),
        name: format!("{channel}-worker"),
        prefetch: config.worker.prefetch,
        shutdown_grace: config.worker.shutdown_grace,
        consuming: ctx.consuming.clone(),
    };
    consume(consumer, ctx.clone(), shutdown.clone()).await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    let _ = follow.await;
    store.close().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Ready when the database answers, the broker is being consumed and at least one
/// provider is not paused.
fn readiness(ctx: &Arc<Context>) -> bootstrap::ops::Check {
    let ctx = ctx.clone();
    Arc::new(move || {
        let ctx = ctx.clone();
        Box::pin(async move {
            let database = ctx.store.ping().await.is_ok();
            let broker = ctx.consuming.load(Ordering::Relaxed);
            let paused = ctx.providers.paused();
            let providers_available = ctx.providers.all_paused_until().is_none();
            let details = serde_json::json!({"database": database, "broker": broker, "paused_providers": paused});
            if database && broker && providers_available { Ok(details) } else { Err(details) }
        })
    })
}

impl Handler for Context {
    fn label(&self) -> &'static str {
        self.channel.as_str()
    }

    fn handle<'a>(&'a self, incoming: &'a Incoming, shutdown: &'a CancellationToken) -> BoxFuture<'a, ()> {
        Box::pin(handle_message(self, incoming, shutdown))
    }
}

async fn dead_letter(ctx: &Context, incoming: &Incoming) {
    consume::dead_letter(ctx.channel.as_str(), incoming).await
}

async fn handle_message(ctx: &Context, incoming: &Incoming, shutdown: &CancellationToken) {
    let msg = match DeliveryMessage::parse(&incoming.body) {
        Ok(msg) if msg.channel == ctx.channel => msg,
        Ok(msg) => {
            tracing::warn!(message_channel = %msg.channel, "message for another channel: dead-lettering it");
            return dead_letter(ctx, incoming).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "unparseable message: dead-lettering it");
            return dead_letter(ctx, incoming).await;
        }
    };
    let span = info_span!("delivery", tenant_id = %msg.tenant_id, notification_id = %msg.notification_id,
        delivery_id = %msg.delivery_id, channel = %msg.channel, attempt = msg.attempt);
    bootstrap::telemetry::set_parent(&span, incoming.traceparent.as_deref());
    process(ctx, &msg, incoming, shutdown).instrument(span).await
}

async fn process(ctx: &Context, msg: &DeliveryMessage, incoming: &Incoming, shutdown: &CancellationToken) {
    // A tenant whose own integrations are at hand sends through them first, and without
    // fallback the operator's providers serve no tenant: neither their pauses nor their
    // rate limits hold the message then.
    let own = !ctx.providers.tenant_fallback() || ctx.tenants.kept(msg.tenant_id).is_some_and(|own| !own.is_empty());
    // Every provider paused after configuration errors: hold the message until one
    // resumes rather than spend its attempts (on shutdown the broker gets it back).
    while !own && let Some(until) = ctx.providers.all_paused_until() {
        tracing::warn!(paused = ?ctx.providers.paused(), "every provider is paused; holding the message");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(until) => {}
        }
    }
    // The provider's rate slot before the claim, so waiting for it does not use up the
    // lease (on shutdown the broker gets the message back).
    let paced = if own {
        None
    } else {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            paced = ctx.providers.pace() => paced,
        }
    };
    // One claim id for this message however often the claim is tried: a retry after a
    // lost reply finds the claim it made.
    let lease = Lease::new(ctx.lease);
    // The lease runs from the claim's statement, after this.
    let lease_ends = tokio::time::Instant::now() + ctx.lease;
    let claim = match with_retries(shutdown, || ctx.store.claim_delivery(msg, lease)).await {
        Retried::Done(claim) => claim,
        // Left unsettled: the broker redelivers it once this consumer's channel closes.
        Retried::Cancelled => return ctx.providers.give_back(paced),
        Retried::Fatal(e) => {
            ctx.providers.give_back(paced);
            tracing::error!(error = %e, "cannot read the delivery: dead-lettering the message");
            return dead_letter(ctx, incoming).await;
        }
    };
    let (job, accepted_at) = match claim {
        Claim::Claimed(job, accepted_at) => (job, accepted_at),
        Claim::Stale(why) => {
            // Nothing to send: the rate slot is the next message's.
            ctx.providers.give_back(paced);
            tracing::info!(why, "dropping a stale or duplicate message");
            METRICS.dropped.get_or_create(&ChannelLabel { channel: ctx.channel.as_str() }).inc();
            return settle(incoming.ack().await);
        }
        Claim::Unknown => {
            ctx.providers.give_back(paced);
            tracing::warn!("no such delivery: dead-lettering the message");
            return dead_letter(ctx, incoming).await;
        }
    };

    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    // The recorded job keeps the sealed address: the plain one goes to the provider only.
    // A push job whose device was removed since the accept fails without a provider call.
    // The tenant's own integrations of the channel, then (where allowed) the operator's.
    let opened = crate::push_device::check(&job).and_then(|()| crate::chat_address::open(ctx.keyring.as_ref(), &job));
    let ready = match opened {
        Ok(opened) => ctx.tenants.of(job.tenant_id).await.map(|own| (opened, own)),
        Err(failure) => Err(failure),
    };
    let dispatched = match ready {
        Ok((opened, own)) => {
            ctx.providers.send_for_tenant(opened.as_ref().unwrap_or(&job), &own, paced, lease_ends).await
        }
        Err(failure) => {
            ctx.providers.give_back(paced);
            Dispatched { provider: "none".into(), integration: false, outcome: SendOutcome::Failed(failure) }
        }
    };
    let record = AttemptRecord {
        provider: dispatched.provider,
        integration: dispatched.integration,
        traceparent: bootstrap::telemetry::traceparent(&tracing::Span::current()),
        started_at,
        latency_ms: i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX),
        // The notification's type may carry its own retry policy.
        result: decide(job.retry.as_ref().unwrap_or(&ctx.retry), &job, dispatched.outcome),
    };
    log_result(&record);
    observe(ctx.channel, &record, accepted_at);

    // The provider has been called: keep trying to record that until it is recorded, or
    // until the shutdown grace runs out and the task is dropped.
    match with_retries(&CancellationToken::new(), || ctx.store.record_attempt(&job, lease, &record)).await {
        Retried::Done(true) => settle(incoming.ack().await),
        Retried::Done(false) => {
            // The lease ran out while this attempt was under way and another claim took
            // the delivery over (or it became final): the attempt is logged, the delivery
            // is the other holder's to settle.
            tracing::warn!("the delivery was taken over or settled meanwhile; only the attempt was recorded");
            settle(incoming.ack().await);
        }
        Retried::Cancelled => {}
        Retried::Fatal(e) => {
            tracing::error!(error = %e, "cannot record the attempt: dead-lettering the message");
            dead_letter(ctx, incoming).await;
        }
    }
}

/// Success is `sent`; a retryable failure with attempts left is a retry at the policy's
/// next time; anything else is `failed`.
fn decide(policy: &RetryPolicy, job: &DeliveryJob, outcome: SendOutcome) -> AttemptResult {
    match outcome {
        SendOutcome::Sent(receipt) => AttemptResult::Sent {
            provider_message_id: receipt.provider_message_id,
            response_excerpt: receipt.response_excerpt,
        },
        SendOutcome::Failed(failure) => {
            let attempt = job.attempt_in_series();
            if failure.kind.is_retryable() && policy.allows_retry_after(attempt) {
                // A delay, not a time: the database stamps when it is due, by its clock.
                let after = policy.delay_with_random_jitter(attempt, failure.retry_after);
                AttemptResult::Retry { after, failure }
            } else {
                AttemptResult::Failed { failure }
            }
        }
    }
}

fn log_result(record: &AttemptRecord) {
    match &record.result {
        AttemptResult::Sent { provider_message_id, .. } => {
            tracing::info!(provider = %record.provider, integration = record.integration, %provider_message_id,
                latency_ms = record.latency_ms, "sent");
        }
        AttemptResult::Retry { failure, after } => tracing::info!(provider = %record.provider, code = %failure.code,
            kind = failure.kind.as_str(), retry_in = ?after, "attempt failed; will retry"),
        AttemptResult::Failed { failure } => tracing::warn!(provider = %record.provider, code = %failure.code,
            kind = failure.kind.as_str(), "delivery failed"),
    }
}

fn observe(channel: Channel, record: &AttemptRecord, accepted_at: OffsetDateTime) {
    let outcome = match &record.result {
        AttemptResult::Sent { .. } => {
            let waited = (OffsetDateTime::now_utc() - accepted_at).as_seconds_f64().max(0.0);
            METRICS.accept_to_sent.get_or_create(&ChannelLabel { channel: channel.as_str() }).observe(waited);
            "sent"
        }
        AttemptResult::Retry { .. } => "retrying",
        AttemptResult::Failed { .. } => "failed",
    };
    let labels = OutcomeLabels { channel: channel.as_str(), provider: record.provider.clone(), outcome };
    METRICS.attempts.get_or_create(&labels).inc();
}
