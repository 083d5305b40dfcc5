//! The outbox relay (docs/contract.md §6.2): claims due outbox rows in batches, most urgent first,
//! publishes them with confirms and deletes them in the same transaction, committed only
//! after the broker answered for every message (the rows of those it refused are parked:
//! written back due later). It keeps each channel's queue short (`relay.max_ready`), so
//! the outbox, claimed most urgent first, is where a backlog waits. Any number of relays
//! may run: `FOR UPDATE SKIP LOCKED` hands each row to one of them, and a relay that dies
//! mid-batch rolls back, so its rows are published by another.

mod dead_letters;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{Channel, Publishable, Route, backoff::Backoff};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use queue::{Publisher, Topology};
use serde::Deserialize;
use store::{ClaimedBatch, Store};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    pub database_url: Option<SecretString>,
    pub amqp_url: Option<SecretString>,
    pub database_max_connections: u32,
    pub relay: RelaySettings,
    pub broker: Topology,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            amqp_url: None,
            database_max_connections: 4,
            relay: RelaySettings::default(),
            broker: Topology::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Rows claimed and published per transaction.
    pub batch_size: i64,
    /// The longest the relay sleeps without looking at the outbox, in case a NOTIFY was
    /// missed (a dropped LISTEN connection) or another relay died holding due rows.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long to wait for the broker to confirm a batch before giving it back.
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// Where `/healthz` and `/readyz` are served (`0.0.0.0:9090`); none when unset.
    pub listen: Option<std::net::SocketAddr>,
    /// How often the sweeper looks for stranded deliveries (see `store::recovery`).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long a delivery that is not being sent must have been unchanged, with no outbox
    /// row, and its channel's queue must have held no ready message, before the sweeper
    /// queues it again (a claim whose lease ran out is queued again at once; the recovery
    /// rule, ARCHITECTURE.md). Longer than `worker.lease`.
    #[serde(with = "humantime_serde")]
    pub stranded_after: Duration,
    /// Times a delivery is queued again without an outcome (each time its last copy was
    /// claimed or gone) before it is failed as `stranded`: a crash loop.
    pub max_recoveries: i32,
    /// How often the dead-letter queues' depth (`notify_dead_letters`) is read.
    #[serde(with = "humantime_serde")]
    pub dead_letter_interval: Duration,
    /// The most messages the relay keeps ready (published, not yet taken by a worker) in
    /// each channel's queue; the rest wait in the outbox, claimed most urgent first, so an
    /// urgent message waits behind at most this many. Set `hand_off.max_ready` of the API
    /// the same.
    pub max_ready: u32,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(10),
            listen: None,
            sweep_interval: Duration::from_secs(30),
            stranded_after: Duration::from_secs(600),
            max_recoveries: 3,
            dead_letter_interval: Duration::from_secs(15),
            max_ready: 1_000,
        }
    }
}

impl Config {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Config = bootstrap::layered(file).extract()?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        bootstrap::require(&self.database_url, "database_url")?;
        bootstrap::require(&self.amqp_url, "amqp_url")?;
        if self.relay.batch_size < 1 {
            return Err(ConfigError::Invalid { key: "relay.batch_size".into(), message: "must be at least 1".into() });
        }
        if self.relay.max_recoveries < 0 {
            return Err(ConfigError::Invalid {
                key: "relay.max_recoveries".into(),
                message: "must be 0 or more".into(),
            });
        }
        if self.relay.max_ready < 1 {
            return Err(ConfigError::Invalid { key: "relay.max_ready".into(), message: "must be at least 1".into() });
        }
        if self.relay.sweep_interval.is_zero() {
            return Err(ConfigError::Invalid { key: "relay.sweep_interval".into(), message: "must be above 0".into() });
        }
        if self.relay.dead_letter_interval.is_zero() {
            let message = "must be more than 0s".into();
            return Err(ConfigError::Invalid { key: "relay.dead_letter_interval".into(), message });
        }
        Ok(())
    }
}

struct RelayMetrics {
    published: Counter,
    publish_failures: Counter,
    lag_seconds: Gauge<f64, AtomicU64>,
    recovered: Family<RecoveredLabels, Counter>,
    webhooks_recovered: Counter,
    parked: Family<ChannelLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecoveredLabels {
    outcome: &'static str,
}

static METRICS: LazyLock<RelayMetrics> = LazyLock::new(|| {
    let metrics = RelayMetrics {
        published: Counter::default(),
        publish_failures: Counter::default(),
        lag_seconds: Gauge::default(),
        recovered: Family::default(),
        webhooks_recovered: Counter::default(),
        parked: Family::default(),
    };
    bootstrap::metrics::register(|r| {
        r.register("outbox_published", "Outbox rows published and confirmed by the broker", metrics.published.clone());
        r.register(
            "outbox_publish_failures",
            "Batches given back to the outbox after a failed publish",
            metrics.publish_failures.clone(),
        );
        r.register("outbox_lag_seconds", "Age of the oldest due outbox row", metrics.lag_seconds.clone());
        r.register(
            "deliveries_recovered",
            "Stranded deliveries the sweeper queued again (requeued), failed or cancelled",
            metrics.recovered.clone(),
        );
        r.register(
            "webhook_messages_recovered",
            "Stranded webhook messages the sweeper queued again",
            metrics.webhooks_recovered.clone(),
        );
        r.register(
            "outbox_parked",
            "Outbox rows whose messages the broker refused, written back due a backoff later",
            metrics.parked.clone(),
        );
    });
    metrics
});

/// Declares the broker topology and returns: `outbox-relay declare-topology`.
pub async fn declare_topology(config: &Config) -> anyhow::Result<()> {
    let url = bootstrap::require(&config.amqp_url, "amqp_url")?;
    let conn = queue::connect(url.expose_secret(), "outbox-relay-declare").await?;
    let channel = conn.create_channel().await?;
    config.broker.declare(&channel).await?;
    conn.close(200, "declared".into()).await?;
    Ok(())
}

/// Relays until `shutdown` fires. A lost database or broker is waited out with backoff;
/// a batch in flight at shutdown is finished first.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let database_url = bootstrap::require(&config.database_url, "database_url")?;
    let amqp_url = bootstrap::require(&config.amqp_url, "amqp_url")?.expose_secret().to_owned();
    let store = Store::connect_lazy(database_url.expose_secret(), config.database_max_connections)?;
    // Every series from the start, at zero: an idle relay's `/metrics` has them.
    for outcome in ["requeued", "failed", "cancelled"] {
        let _ = METRICS.recovered.get_or_create(&RecoveredLabels { outcome });
    }
    let relaying = Arc::new(AtomicBool::new(false));
    let ops = config
        .relay
        .listen
        .map(|addr| tokio::spawn(bootstrap::ops::serve(addr, readiness(&store, &relaying), shutdown.clone())));
    let dead_letters =
        tokio::spawn(dead_letters::watch(amqp_url.clone(), config.relay.dead_letter_interval, shutdown.clone()));
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        let result = relay(&config, &store, &amqp_url, &shutdown, &mut backoff, &relaying).await;
        relaying.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => break,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "relay interrupted; its claimed rows go back to the outbox");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    shutdown.cancel();
    let _ = dead_letters.await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    store.close().await;
    tracing::info!("relay stopped");
    Ok(())
}

/// Ready when the database answers and the relay holds a broker connection.
fn readiness(store: &Store, relaying: &Arc<AtomicBool>) -> bootstrap::ops::Check {
    let (store, relaying) = (store.clone(), relaying.clone());
    Arc::new(move || {
        let (store, relaying) = (store.clone(), relaying.clone());
        Box::pin(async move {
            let database = store.ping().await.is_ok();
            let broker = relaying.load(Ordering::Relaxed);
            let details = serde_json::json!({"database": database, "broker": broker});
            if database && broker { Ok(details) } else { Err(details) }
        })
    })
}

async fn relay(
    config: &Config,
    store: &Store,
    amqp_url: &str,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
    relaying: &AtomicBool,
) -> anyhow::Result<()> {
    let Some(conn) = queue::connect_with_backoff(amqp_url, "outbox-relay", shutdown).await else { return Ok(()) };
    let publisher = Publisher::open(conn, config.relay.confirm_timeout).await?;
    config.broker.declare(publisher.channel()).await?;
    let mut listener = store.listen_outbox().await?;
    tracing::info!(batch_size = config.relay.batch_size, "relaying the outbox");
    backoff.reset();
    relaying.store(true, Ordering::Relaxed);
    let mut lag_measured: Option<tokio::time::Instant> = None;
    let mut swept: Option<tokio::time::Instant> = None;
    let mut parking = Parking::default();
    let mut drained_since = HashMap::new();
    loop {
        let held_back = publish_due(store, &publisher, &config.relay, &mut parking, shutdown).await?;
        if swept.is_none_or(|at| at.elapsed() >= config.relay.sweep_interval) {
            sweep(store, &publisher, &config.relay, &parking, &mut drained_since).await?;
            swept = Some(tokio::time::Instant::now());
        }
        // The lag gauge costs a query: at most once a second, however busy.
        if lag_measured.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            METRICS.lag_seconds.set(store.outbox_lag_seconds().await?);
            lag_measured = Some(tokio::time::Instant::now());
        }
        if shutdown.is_cancelled() {
            publisher.close().await;
            return Ok(());
        }
        let due = store.outbox_due().await?;
        let mut wait = match due.next {
            Some(at) => Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or_default(),
            None => config.relay.poll_interval,
        }
        .min(config.relay.poll_interval);
        if held_back && due.due_now {
            // A full queue held rows back and rows are due. No NOTIFY says a worker took
            // messages: look at the queues again soon (not while nothing waits).
            wait = FULL_QUEUE_RECHECK;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            woken = listener.recv() => { woken?; }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Queues stranded webhook messages, then stranded deliveries, again (their outbox rows
/// are published on the next turn), a batch at a time until none is left. One that waits
/// is recovered only once its queue has held no ready message for `stranded_after`
/// (`store::recovery`, the recovery rule): a copy a worker took before the queue drained is claimed within a
/// lease, which is shorter. `drained_since`, kept across sweeps, is when each queue was
/// first seen empty in a row of sweeps that found it so. A queue that refuses messages
/// (parked) is never drained: a quorum queue without a leader reports no ready message
/// while it still holds them all.
async fn sweep(
    store: &Store,
    publisher: &Publisher,
    settings: &RelaySettings,
    parking: &Parking,
    drained_since: &mut HashMap<Route, tokio::time::Instant>,
) -> anyhow::Result<()> {
    let mut drained = vec![];
    for route in Route::ALL {
        if parking.is_refusing(route) || publisher.ready(route).await? > 0 {
            drained_since.remove(&route);
            continue;
        }
        let since = *drained_since.entry(route).or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= settings.stranded_after {
            drained.push(route);
        }
    }
    let webhooks_drained = drained.contains(&Route::Webhooks);
    let drained: Vec<Channel> = drained
        .into_iter()
        .filter_map(|route| match route {
            Route::Channel(channel) => Some(channel),
            Route::Webhooks => None,
        })
        .collect();
    loop {
        let requeued =
            store.recover_stranded_webhooks(settings.stranded_after, webhooks_drained, settings.batch_size).await?;
        if requeued > 0 {
            METRICS.webhooks_recovered.inc_by(requeued);
            tracing::warn!(requeued, "recovered stranded webhook messages");
        }
        if (requeued as i64) < settings.batch_size {
            break;
        }
    }
    loop {
        let recovered = store
            .recover_stranded(settings.stranded_after, settings.max_recoveries, settings.batch_size, &drained)
            .await?;
        for (outcome, count) in
            [("requeued", recovered.requeued), ("failed", recovered.failed), ("cancelled", recovered.cancelled)]
        {
            if count > 0 {
                METRICS.recovered.get_or_create(&RecoveredLabels { outcome }).inc_by(count);
            }
        }
        if recovered.total() > 0 {
            tracing::warn!(
                requeued = recovered.requeued,
                failed = recovered.failed,
                cancelled = recovered.cancelled,
                "recovered stranded deliveries"
            );
        }
        if (recovered.total() as i64) < settings.batch_size {
            return Ok(());
        }
    }
}

/// How soon the relay looks again at a channel's queue that holds `relay.max_ready`
/// messages while due rows wait: the workers take messages without telling it. With the
/// default 1,000, a relay keeps up to 50,000 messages a second flowing into a full queue.
const FULL_QUEUE_RECHECK: Duration = Duration::from_millis(20);

/// Publishes batches until no due row is left, every queue holds `relay.max_ready` ready
/// messages, or shutdown is asked for between batches; returns whether a queue was full
/// (due rows of its channel may still wait). While the broker confirms a full batch, the
/// next one is claimed (`SKIP LOCKED` passes over the rows the unconfirmed batch still
/// holds), so a backlog moves without waiting for the database and the broker in turn.
async fn publish_due(
    store: &Store,
    publisher: &Publisher,
    settings: &RelaySettings,
    parking: &mut Parking,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let batch_size = settings.batch_size;
    let mut room = Room::read(publisher, settings.max_ready, parking).await?;
    let open = room.open();
    if open.is_empty() {
        return Ok(true);
    }
    let mut next = Some(store.claim_outbox(batch_size, &open).await?);
    while let Some(mut batch) = next.take() {
        let count = batch.messages.len();
        if count == 0 {
            break;
        }
        room.take(&batch.messages);
        // One span per message, child of the trace that wrote the row, open until the
        // broker confirmed it; the message carries it on to the worker.
        let _spans: Vec<tracing::Span> = batch.messages.iter_mut().map(bootstrap::telemetry::publish_span).collect();
        let open = room.open();
        let full = count as i64 == batch_size && !open.is_empty() && !shutdown.is_cancelled();
        let (published, claimed) = tokio::join!(publisher.publish_each(&batch.messages), async {
            if full { Some(store.claim_outbox(batch_size, &open).await) } else { None }
        });
        // A lost channel or connection drops the batch unconfirmed: its transaction rolls
        // back and the rows are due again (as are the next batch's).
        let outcomes = match published {
            Ok(outcomes) => outcomes,
            Err(e) => {
                METRICS.publish_failures.inc();
                return Err(e.into());
            }
        };
        parking.park_refused(&mut batch, &outcomes).await?;
        let published = batch.messages.len();
        batch.commit().await?;
        METRICS.published.inc_by(published as u64);
        tracing::debug!(count = published, "published");
        next = claimed.transpose()?;
    }
    Ok(room.any_full())
}

/// How many more messages each queue (a channel's, the webhooks') may take before it
/// holds `max_ready` ready ones, read from the broker once per [`publish_due`] and counted
/// down as batches are claimed. Other relays and the API publish too, so together they
/// may go past it by what each publishes between two reads.
struct Room {
    left: Vec<(Route, i64)>,
}

impl Room {
    async fn read(publisher: &Publisher, max_ready: u32, parking: &Parking) -> anyhow::Result<Self> {
        let mut left = Vec::with_capacity(Route::ALL.len());
        for route in Route::ALL {
            if parking.is_resting(route) {
                left.push((route, 0));
                continue;
            }
            let ready = publisher.ready(route).await?;
            left.push((route, i64::from(max_ready.saturating_sub(ready))));
        }
        Ok(Self { left })
    }

    /// The queues that may take more, with how many.
    fn open(&self) -> Vec<(Route, i64)> {
        self.left.iter().copied().filter(|(_, n)| *n > 0).collect()
    }

    fn take(&mut self, messages: &[domain::OutboxMessage]) {
        for message in messages {
            if let Some((_, n)) = self.left.iter_mut().find(|(r, _)| *r == message.route()) {
                *n -= 1;
            }
        }
    }

    fn any_full(&self) -> bool {
        self.left.iter().any(|(_, n)| *n <= 0)
    }
}

/// The rows of messages the broker refused (a queue at its `max-length` with
/// `reject-publish`, a queue without a quorum, no binding), parked rather than retried at
/// once: written back due a backoff later, per queue, so one queue does not hold up the
/// others, and a refusing queue is tried again less and less often (up to every 10 s)
/// until it takes messages again.
#[derive(Default)]
struct Parking {
    /// Per refusing queue: its backoff, and until when it is left alone.
    backoff: HashMap<Route, (Backoff, tokio::time::Instant)>,
}

impl Parking {
    /// Whether the broker refused the queue's last messages (its backoff is running).
    fn is_refusing(&self, route: Route) -> bool {
        self.backoff.contains_key(&route)
    }

    /// Whether the queue's backoff still runs: none of its rows is claimed meanwhile, so
    /// its new messages do not make other queues' batches wait for its nacks or timeouts;
    /// once it ends, its rows are tried again.
    fn is_resting(&self, route: Route) -> bool {
        self.backoff.get(&route).is_some_and(|(_, until)| tokio::time::Instant::now() < *until)
    }

    async fn park_refused(&mut self, batch: &mut ClaimedBatch, outcomes: &[queue::Outcome]) -> anyhow::Result<()> {
        let mut refused: BTreeMap<Route, (Vec<usize>, &queue::QueueError)> = BTreeMap::new();
        for (i, (message, outcome)) in batch.messages.iter().zip(outcomes).enumerate() {
            if let Err(e) = outcome {
                refused.entry(message.route()).or_insert_with(|| (Vec::new(), e)).0.push(i);
            }
        }
        for route in batch.messages.iter().map(Publishable::route) {
            if !refused.contains_key(&route) {
                self.backoff.remove(&route);
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        let mut parked = Vec::new();
        for (route, (rows, error)) in refused {
            let (backoff, until) =
                self.backoff.entry(route).or_insert_with(|| (Backoff::default(), tokio::time::Instant::now()));
            let delay = backoff.next_delay();
            *until = tokio::time::Instant::now() + delay;
            tracing::warn!(
                channel = %route,
                queue = %queue::topology::route_queue_name(route),
                rows = rows.len(),
                retry_in = ?delay,
                error = %error,
                "the broker refused messages of this queue; their outbox rows are parked"
            );
            METRICS.parked.get_or_create(&ChannelLabels { channel: route.as_str() }).inc_by(rows.len() as u64);
            parked.extend(rows.into_iter().map(|i| (i, delay)));
        }
        batch.park(&parked).await?;
        Ok(())
    }
}
