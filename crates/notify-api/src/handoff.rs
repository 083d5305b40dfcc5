//! Publishing accepted deliveries right after their commit, so a notification reaches its
//! worker without waiting for a relay. The accept writes each delivery's outbox row due a
//! grace period later (`store::Store::with_hand_off`) and hands the messages due now
//! here; this task publishes them with publisher confirms (`mandatory`, as the relay does)
//! on a connection it keeps, and once the broker confirmed them deletes their outbox rows.
//!
//! Nothing here is needed for a notification to be delivered: a message not confirmed (the
//! broker is down, the API dies, the queue of messages waiting here is full) keeps its
//! outbox row, which falls due after the grace and is published by a relay. A message
//! confirmed whose row delete is lost is published again by a relay, and the worker drops
//! the copy (its claim finds the attempt taken).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use domain::{Channel, DeliveryMessage, backoff::Backoff};
use prometheus_client::{encoding::EncodeLabelSet, metrics::counter::Counter, metrics::family::Family};
use queue::Publisher;
use serde::Deserialize;
use store::Store;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// The hand-off's settings (`hand_off.*`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandOffSettings {
    /// Publish accepted deliveries from the API (needs `amqp_url`). Off: the relays
    /// publish everything, woken after each accept.
    pub enabled: bool,
    /// How long to wait for the broker's confirms of a group of messages.
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// How long after the accept its outbox rows fall due for the relays: at least twice
    /// the confirm timeout, so a relay seldom publishes what is still being confirmed (a
    /// copy it does publish is dropped by the worker).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Publish to a channel's queue only while it holds fewer ready messages than this
    /// (the relays' `relay.max_ready`, set the same); beyond, the messages are left to the
    /// relays at once, which claim the outbox most urgent first. Also the most deliveries
    /// of one notification handed off: a broadcast's others are written due at once, for
    /// the relays (`store::Store::with_hand_off`).
    pub max_ready: u32,
}

impl Default for HandOffSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            confirm_timeout: Duration::from_secs(5),
            grace: Duration::from_secs(15),
            max_ready: 1_000,
        }
    }
}

impl HandOffSettings {
    pub fn validate(&self) -> Result<(), bootstrap::ConfigError> {
        if self.confirm_timeout.is_zero() || self.grace < 2 * self.confirm_timeout {
            return Err(bootstrap::ConfigError::Invalid {
                key: "hand_off.grace".into(),
                message: "must be at least twice hand_off.confirm_timeout, which must be above 0".into(),
            });
        }
        if self.max_ready < 1 {
            let message = "must be at least 1".into();
            return Err(bootstrap::ConfigError::Invalid { key: "hand_off.max_ready".into(), message });
        }
        Ok(())
    }
}

/// Messages waiting here at most; beyond, they are left to the relays.
const QUEUED_MAX: usize = 10_000;
/// Messages published as one group (one wait for confirms).
const GROUP_MAX: usize = 1_000;
/// Groups waiting for their confirms at once: publishing goes on while the broker confirms.
const GROUPS_IN_FLIGHT: usize = 4;

/// Where the API's accepts leave their messages.
#[derive(Clone)]
pub struct HandOff {
    queue: mpsc::Sender<DeliveryMessage>,
    store: Store,
}

impl HandOff {
    /// Starts the publishing task; it ends once `finish` is cancelled (or every `HandOff`
    /// is dropped) and what it holds is published (or left to the relays). Cancel
    /// `finish` once no request can hand anything off any more: a clone kept somewhere
    /// must not keep the process from stopping.
    pub fn start(
        store: Store,
        amqp_url: String,
        settings: &HandOffSettings,
        finish: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, waiting) = mpsc::channel(QUEUED_MAX);
        let task = tokio::spawn(publish(store.clone(), amqp_url, settings.clone(), waiting, finish));
        (Self { queue, store }, task)
    }

    /// Publishes `messages` soon; returns at once. What cannot wait here is left to the
    /// relays at once (a broadcast to a large topic hands off more than this holds): its
    /// rows are made due now rather than after the grace.
    pub fn send(&self, messages: Vec<DeliveryMessage>) {
        let mut left = Vec::new();
        for message in messages {
            if let Err(full) = self.queue.try_send(message) {
                left.push(full.into_inner());
            }
        }
        if left.is_empty() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = leave_to_relays(&store, &left).await {
                tracing::warn!(error = %e, "cannot release deliveries to the relays; they fall due after the grace");
            }
        });
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

static METRICS: LazyLock<Family<Outcome, Counter>> = LazyLock::new(|| {
    let family = Family::default();
    bootstrap::metrics::register(|r| {
        r.register(
            "handed_off",
            "Accepted deliveries the API published itself (published) or left to the relays (left_to_relay)",
            family.clone(),
        );
    });
    family
});

/// Takes what is waiting, a group at a time, and publishes each group on the connection
/// it keeps (reconnecting with backoff, meanwhile leaving groups to the relays); a group
/// confirmed has its outbox rows deleted.
async fn publish(
    store: Store,
    amqp_url: String,
    settings: HandOffSettings,
    mut waiting: mpsc::Receiver<DeliveryMessage>,
    finish: CancellationToken,
) {
    let (confirm_timeout, max_ready) = (settings.confirm_timeout, settings.max_ready);
    let slots = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    let mut publisher: Option<Arc<Publisher>> = None;
    let mut backoff = Backoff::default();
    let mut next_connect = Instant::now();
    let resting = Resting::default();
    loop {
        let slot = Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed");
        let mut group = Vec::new();
        let received = tokio::select! {
            received = waiting.recv_many(&mut group, GROUP_MAX) => received,
            // Takes no more, and publishes what is already waiting.
            _ = finish.cancelled(), if !waiting.is_closed() => {
                waiting.close();
                waiting.recv_many(&mut group, GROUP_MAX).await
            }
        };
        if received == 0 {
            break;
        }
        if publisher.as_ref().is_some_and(|p| !p.is_connected()) {
            publisher = None;
        }
        if publisher.is_none() && Instant::now() >= next_connect {
            match connect(&amqp_url, confirm_timeout).await {
                Ok(p) => {
                    backoff.reset();
                    publisher = Some(Arc::new(p));
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot publish accepted deliveries; the relays will");
                    next_connect = Instant::now() + delay;
                }
            }
        }
        let Some(p) = publisher.clone() else {
            METRICS.get_or_create(&Outcome { outcome: "left_to_relay" }).inc_by(group.len() as u64);
            continue;
        };
        let (store, resting) = (store.clone(), resting.clone());
        in_flight.spawn(async move {
            // The confirm timeout bounds only the wait for confirms: a broker that blocks
            // publishers (a memory or disk alarm) would hold the frames' writes for ever.
            let count = group.len() as u64;
            if tokio::time::timeout(2 * confirm_timeout, publish_group(&store, &p, group, max_ready, &resting))
                .await
                .is_err()
            {
                tracing::warn!(messages = count, "publishing accepted deliveries timed out; the relays will");
                METRICS.get_or_create(&Outcome { outcome: "left_to_relay" }).inc_by(count);
            }
            drop(slot);
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    if let Some(p) = publisher.and_then(Arc::into_inner) {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, p.close()).await;
    }
}

async fn connect(amqp_url: &str, confirm_timeout: Duration) -> anyhow::Result<Publisher> {
    let open = async {
        let conn = queue::connect(amqp_url, "notify-api-hand-off").await?;
        anyhow::Ok(Publisher::open(conn, confirm_timeout).await?)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open).await?
}

/// The longest connecting to the broker, or closing the connection, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn publish_group(
    store: &Store,
    publisher: &Publisher,
    group: Vec<DeliveryMessage>,
    max_ready: u32,
    resting: &Resting,
) {
    let count = group.len() as u64;
    let mut group = match leave_full_queues(store, publisher, group, max_ready, resting).await {
        Ok(group) => group,
        Err(e) => {
            tracing::warn!(error = %e, messages = count, "reading the queues failed; the relays will publish");
            METRICS.get_or_create(&Outcome { outcome: "left_to_relay" }).inc_by(count);
            return;
        }
    };
    let count = group.len() as u64;
    if group.is_empty() {
        return;
    }
    // One span per message, child of the request that accepted it, open until confirmed.
    let _spans: Vec<tracing::Span> = group.iter_mut().map(bootstrap::telemetry::publish_span).collect();
    let outcomes = match publisher.publish_each(&group).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(error = %e, messages = count, "publishing accepted deliveries failed; the relays will");
            METRICS.get_or_create(&Outcome { outcome: "left_to_relay" }).inc_by(count);
            return;
        }
    };
    // A message the broker refused (its queue full or without a quorum) keeps its row for
    // the relays, which park it until its queue takes messages again; the others go on.
    let mut refused = 0;
    let confirmed: Vec<DeliveryMessage> = group
        .into_iter()
        .zip(&outcomes)
        .filter_map(|(message, outcome)| match outcome {
            Ok(()) => Some(message),
            Err(e) => {
                if resting.start(message.channel) {
                    tracing::warn!(channel = %message.channel, error = %e, "the broker refused an accepted delivery; the relays will publish this channel's for a while");
                }
                refused += 1;
                None
            }
        })
        .collect();
    if refused > 0 {
        METRICS.get_or_create(&Outcome { outcome: "left_to_relay" }).inc_by(refused);
    }
    if confirmed.is_empty() {
        return;
    }
    METRICS.get_or_create(&Outcome { outcome: "published" }).inc_by(confirmed.len() as u64);
    if let Err(e) = store.forget_published(&confirmed).await {
        // The rows fall due after the grace; the workers drop the copies the relays send.
        tracing::debug!(error = %e, "deleting published outbox rows failed");
    }
}

/// Keeps the messages whose channel's queue has room under `max_ready` ready messages (in
/// the group's order, as many as fit) and gives the others to the relays at once: their
/// rows fall due now, not after the grace, and the relays, which claim the outbox most
/// urgent first, publish them as the queue empties. So a backlog waits in the outbox,
/// where an urgent message overtakes it, whoever publishes.
async fn leave_full_queues(
    store: &Store,
    publisher: &Publisher,
    group: Vec<DeliveryMessage>,
    max_ready: u32,
    resting: &Resting,
) -> anyhow::Result<Vec<DeliveryMessage>> {
    let mut room: Vec<(Channel, u32)> = Vec::new();
    let (mut publish, mut left) = (Vec::with_capacity(group.len()), Vec::new());
    for message in group {
        let n = match room.iter_mut().find(|(c, _)| *c == message.channel) {
            Some((_, n)) => n,
            None => {
                let ready = if resting.is_resting(message.channel) {
                    max_ready
                } else {
                    publisher.ready(domain::Route::Channel(message.channel)).await?
                };
                room.push((message.channel, max_ready.saturating_sub(ready)));
                &mut room.last_mut().expect("just pushed").1
            }
        };
        if *n > 0 {
            *n -= 1;
            publish.push(message);
        } else {
            left.push(message);
        }
    }
    if !left.is_empty() {
        leave_to_relays(store, &left).await?;
    }
    Ok(publish)
}

/// Gives `left` to the relays at once: their rows fall due now. If that fails they still
/// fall due after the grace.
async fn leave_to_relays(store: &Store, left: &[DeliveryMessage]) -> store::Result<()> {
    METRICS.get_or_create(&Outcome { outcome: "left_to_relay" }).inc_by(left.len() as u64);
    store.release_to_relays(left).await?;
    Ok(())
}

/// The channels whose queue refused a message lately: for [`REST`] after a refusal, the
/// hand-off leaves their messages to the relays (which park them with a backoff) rather
/// than making every group that holds one wait for the broker's nack or the confirm
/// timeout. Shared by the groups in flight.
#[derive(Clone, Default)]
struct Resting(Arc<Mutex<HashMap<Channel, Instant>>>);

/// How long a refusing channel is left to the relays.
const REST: Duration = Duration::from_secs(1);

impl Resting {
    /// Starts (or extends) the channel's rest; whether it was not resting before.
    fn start(&self, channel: Channel) -> bool {
        let mut until = self.0.lock().expect("never poisoned");
        let was_resting = until.get(&channel).is_some_and(|t| Instant::now() < *t);
        until.insert(channel, Instant::now() + REST);
        !was_resting
    }

    fn is_resting(&self, channel: Channel) -> bool {
        self.0.lock().expect("never poisoned").get(&channel).is_some_and(|t| Instant::now() < *t)
    }
}
