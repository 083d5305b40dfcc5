//! The inbox push hub: this replica's live sockets by (tenant, subscriber), and the events
//! that tell them something changed, from whichever replica changed it.
//!
//! An event is published to the fanout exchange [`EXCHANGE`]; every replica consumes it
//! from a server-named, exclusive, auto-delete queue of its own (`queue::Broadcast`). The
//! replica that has sockets for the event's subscriber loads the items and the unread
//! count and pushes them; the others only look the subscriber up in a map. Without
//! `amqp_url` events go straight to this replica's sockets (one replica only).
//!
//! Best effort throughout: messages carry ids only, are transient, published without
//! confirms, and are dropped (logged) rather than held when the broker is away or this
//! replica is behind. PostgreSQL keeps every item; a client that may have missed one
//! reconnects with `since`.

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::Store;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

/// The fanout exchange of inbox events (durable; see `queue::broadcast`).
pub const EXCHANGE: &str = "notify.inbox";

/// Item ids in one broker message: a fan-out to 10,000 subscribers is ten messages.
const ITEMS_PER_MESSAGE: usize = 1_000;
/// Encoded events waiting to be published (or, without a broker, dispatched).
const OUTGOING_CAPACITY: usize = 1_024;
/// Received events waiting for their items to be loaded; when full, the broker holds
/// the rest (prefetch), then drops the oldest of this replica's queue.
const INCOMING_CAPACITY: usize = 64;
/// Subscribers of one event loaded at the same time.
const LOAD_CONCURRENCY: usize = 8;

struct HubMetrics {
    sockets: Gauge,
    dropped_events: Counter,
    slow_sockets: Counter,
}

static METRICS: LazyLock<HubMetrics> = LazyLock::new(|| {
    let metrics =
        HubMetrics { sockets: Gauge::default(), dropped_events: Counter::default(), slow_sockets: Counter::default() };
    bootstrap::metrics::register(|r| {
        r.register("inbox_sockets", "Open inbox WebSockets", metrics.sockets.clone());
        r.register(
            "inbox_events_dropped",
            "Inbox events dropped because this replica was behind (clients catch up with `since`)",
            metrics.dropped_events.clone(),
        );
        r.register(
            "inbox_slow_sockets_closed",
            "Inbox WebSockets closed because the client did not keep up",
            metrics.slow_sockets.clone(),
        );
    });
    metrics
});

fn dropped_event() {
    METRICS.dropped_events.inc();
    tracing::warn!("inbox push is behind: an event is dropped");
}

/// A broker message: `{"v":1,"tenant_id":..,"events":[{"event":"created",
/// "subscriber_id":..,"item_ids":[..]}, {"event":"changed","subscriber_id":..},
/// {"event":"erased","subscriber_id":..}]}`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Envelope {
    v: u32,
    tenant_id: Uuid,
    events: Vec<Event>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Created {
        subscriber_id: String,
        item_ids: Vec<Uuid>,
    },
    Changed {
        subscriber_id: String,
    },
    /// The subscriber was erased: its sockets close (their tokens are refused from now on).
    Erased {
        subscriber_id: String,
    },
}

impl Event {
    fn subscriber_id(&self) -> &str {
        match self {
            Event::Created { subscriber_id, .. }
            | Event::Changed { subscriber_id }
            | Event::Erased { subscriber_id } => subscriber_id,
        }
    }
}

/// What a socket is sent: a JSON text frame, and the item it announces (so a socket can
/// skip an item it already replayed from `since`).
#[derive(Clone, Debug)]
pub struct Push {
    pub item_id: Option<Uuid>,
    pub text: Utf8Bytes,
}

pub fn unread_count_frame(count: i64) -> Utf8Bytes {
    json!({"type": "unread_count", "unread_count": count}).to_string().into()
}

pub fn created_frame(item: &domain::inbox::InboxItem, count: i64) -> Utf8Bytes {
    json!({"type": "notification.created", "item": item, "unread_count": count}).to_string().into()
}

type Key = (Uuid, String);

struct Entry {
    id: u64,
    tx: mpsc::Sender<Push>,
    /// Cancelled when the socket's queue overflowed: it is closed, not waited for.
    overflow: CancellationToken,
    /// Cancelled when the subscriber was erased.
    erased: CancellationToken,
}

/// A live socket's place in the hub; dropping it unregisters the socket.
pub struct Registration {
    hub: Arc<Hub>,
    key: Key,
    id: u64,
    pub pushes: mpsc::Receiver<Push>,
    /// Cancelled when the hub gave up on this socket (its queue was full).
    pub overflow: CancellationToken,
    /// Cancelled when the socket's subscriber was erased: its token is no longer good.
    pub erased: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        METRICS.sockets.dec();
        let mut sockets = self.hub.sockets.lock().expect("hub lock");
        if let Some(entries) = sockets.get_mut(&self.key) {
            entries.retain(|e| e.id != self.id);
            if entries.is_empty() {
                sockets.remove(&self.key);
            }
        }
    }
}

/// The sockets each subscriber and each tenant holds on this replica, counted from before
/// the upgrade to the close (`inbox_socket.max_per_subscriber`, `max_per_tenant`).
#[derive(Default)]
struct Seats {
    by_subscriber: HashMap<Key, usize>,
    by_tenant: HashMap<Uuid, usize>,
}

/// One socket's place in [`Seats`]; dropping it gives the place back.
pub struct Seat {
    hub: Arc<Hub>,
    key: Key,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut seats = self.hub.seats.lock().expect("hub lock");
        fn leave<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
            if let Some(n) = counts.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(key);
                }
            }
        }
        leave(&mut seats.by_subscriber, &self.key);
        leave(&mut seats.by_tenant, &self.key.0);
    }
}

pub struct Hub {
    sockets: Mutex<HashMap<Key, Vec<Entry>>>,
    seats: Mutex<Seats>,
    next_id: AtomicU64,
    outgoing: mpsc::Sender<Vec<u8>>,
    /// Messages each socket may have waiting before it counts as too slow.
    socket_queue: usize,
    /// Stops the hub's tasks and every socket.
    pub shutdown: CancellationToken,
    /// The sockets' tasks, so the server can wait for them to close.
    pub sockets_tracker: TaskTracker,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("socket_queue", &self.socket_queue).finish_non_exhaustive()
    }
}

impl Hub {
    /// Starts the hub's tasks: through the broker at `amqp_url` when given, else in this
    /// process only. They stop when `shutdown` fires.
    pub fn start(
        store: Store,
        amqp_url: Option<String>,
        socket_queue: usize,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let hub = Arc::new(Self {
            sockets: Mutex::default(),
            seats: Mutex::default(),
            next_id: AtomicU64::new(0),
            outgoing,
            socket_queue: socket_queue.max(1),
            shutdown: shutdown.clone(),
            sockets_tracker: TaskTracker::new(),
        });
        match amqp_url {
            Some(url) => {
                tracing::info!(exchange = EXCHANGE, "inbox push across replicas through the broker");
                let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_CAPACITY);
                tokio::spawn(link(url, outgoing_rx, incoming_tx, shutdown));
                tokio::spawn(dispatch(Arc::clone(&hub), store, incoming_rx));
            }
            None => {
                tracing::info!(
                    "amqp_url is not set: inbox push reaches the sockets of this replica only \
                     (run one replica, or set NOTIFY_AMQP_URL)"
                );
                tokio::spawn(dispatch(Arc::clone(&hub), store, outgoing_rx));
            }
        }
        hub
    }

    /// New items were committed: one entry per (subscriber, item id). Never blocks and
    /// never fails: what cannot be queued is dropped with a warning.
    pub fn created(&self, tenant_id: Uuid, items: Vec<(String, Uuid)>) {
        for envelope in created_envelopes(tenant_id, items) {
            self.publish(&envelope);
        }
    }

    /// The subscriber's inbox changed (read, unread, archive, delete, read-all): its
    /// sockets get the new unread count.
    pub fn changed(&self, tenant_id: Uuid, subscriber_id: &str) {
        let events = vec![Event::Changed { subscriber_id: subscriber_id.to_owned() }];
        self.publish(&Envelope { v: 1, tenant_id, events });
    }

    /// The subscriber was erased: its sockets, on every replica, close.
    pub fn erased(&self, tenant_id: Uuid, subscriber_id: &str) {
        let events = vec![Event::Erased { subscriber_id: subscriber_id.to_owned() }];
        self.publish(&Envelope { v: 1, tenant_id, events });
    }

    fn publish(&self, envelope: &Envelope) {
        let body = serde_json::to_vec(envelope).expect("an envelope serializes");
        match self.outgoing.try_send(body) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => dropped_event(),
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Registers a socket of `tenant_id`'s `subscriber_id`.
    pub fn register(self: &Arc<Self>, tenant_id: Uuid, subscriber_id: &str) -> Registration {
        let (tx, pushes) = mpsc::channel(self.socket_queue);
        let (overflow, erased) = (CancellationToken::new(), CancellationToken::new());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = (tenant_id, subscriber_id.to_owned());
        let entry = Entry { id, tx, overflow: overflow.clone(), erased: erased.clone() };
        METRICS.sockets.inc();
        self.sockets.lock().expect("hub lock").entry(key.clone()).or_default().push(entry);
        Registration { hub: Arc::clone(self), key, id, pushes, overflow, erased }
    }

    /// A place for one more socket of the subscriber, unless the subscriber already holds
    /// `per_subscriber` on this replica or its tenant `per_tenant`: then why not.
    pub fn seat(
        self: &Arc<Self>,
        tenant_id: Uuid,
        subscriber_id: &str,
        per_subscriber: usize,
        per_tenant: usize,
    ) -> Result<Seat, &'static str> {
        let key = (tenant_id, subscriber_id.to_owned());
        let mut seats = self.seats.lock().expect("hub lock");
        if seats.by_subscriber.get(&key).is_some_and(|n| *n >= per_subscriber) {
            return Err("too many sockets for this subscriber");
        }
        if seats.by_tenant.get(&tenant_id).is_some_and(|n| *n >= per_tenant) {
            return Err("too many sockets for this tenant");
        }
        *seats.by_subscriber.entry(key.clone()).or_default() += 1;
        *seats.by_tenant.entry(tenant_id).or_default() += 1;
        Ok(Seat { hub: Arc::clone(self), key })
    }

    fn is_connected(&self, tenant_id: Uuid, subscriber_id: &str) -> bool {
        self.sockets.lock().expect("hub lock").contains_key(&(tenant_id, subscriber_id.to_owned()))
    }

    /// Hands `pushes` to every socket of the subscriber. A socket whose queue is full is
    /// told to close (its `overflow` fires) and leaves the hub: a client that does not
    /// read is disconnected, never buffered for without bound.
    fn push(&self, tenant_id: Uuid, subscriber_id: &str, pushes: &[Push]) {
        let key = (tenant_id, subscriber_id.to_owned());
        let mut sockets = self.sockets.lock().expect("hub lock");
        let Some(entries) = sockets.get_mut(&key) else { return };
        entries.retain(|entry| {
            if entry.erased.is_cancelled() {
                return true;
            }
            for push in pushes {
                match entry.tx.try_send(push.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        tracing::info!(tenant_id = %tenant_id, "inbox socket too slow: its queue is full, closing it");
                        METRICS.slow_sockets.inc();
                        entry.overflow.cancel();
                        return false;
                    }
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        if entries.is_empty() {
            sockets.remove(&key);
        }
    }

    /// Loads what `envelope` announces for the subscribers with sockets here, and pushes it.
    async fn deliver(&self, store: &Store, envelope: Envelope) {
        let tenant_id = envelope.tenant_id;
        let wanted: Vec<Event> =
            envelope.events.into_iter().filter(|e| self.is_connected(tenant_id, e.subscriber_id())).collect();
        futures_util::stream::iter(wanted)
            .for_each_concurrent(LOAD_CONCURRENCY, |event| async move {
                let subscriber_id = event.subscriber_id().to_owned();
                if let Event::Erased { .. } = event {
                    return self.close_erased(tenant_id, &subscriber_id);
                }
                match load(store, tenant_id, event).await {
                    Ok(pushes) => self.push(tenant_id, &subscriber_id, &pushes),
                    Err(e) => tracing::warn!(error = %e, tenant_id = %tenant_id, "inbox push: loading failed"),
                }
            })
            .await;
    }

    /// Tells the sockets of an erased subscriber to close; nothing is pushed to them any more
    /// (they leave the hub as they close, so their queues stay open until then).
    fn close_erased(&self, tenant_id: Uuid, subscriber_id: &str) {
        let sockets = self.sockets.lock().expect("hub lock");
        for entry in sockets.get(&(tenant_id, subscriber_id.to_owned())).into_iter().flatten() {
            entry.erased.cancel();
        }
    }

    /// How many sockets this replica has (all subscribers).
    pub fn socket_count(&self) -> usize {
        self.sockets.lock().expect("hub lock").values().map(Vec::len).sum()
    }
}

async fn load(store: &Store, tenant_id: Uuid, event: Event) -> store::Result<Vec<Push>> {
    match event {
        Event::Created { subscriber_id, item_ids } => {
            let items = store.inbox_items(tenant_id, &subscriber_id, &item_ids).await?;
            if items.is_empty() {
                return Ok(vec![]);
            }
            let count = store.inbox_unread_count(tenant_id, &subscriber_id).await?;
            Ok(items.iter().map(|item| Push { item_id: Some(item.id), text: created_frame(item, count) }).collect())
        }
        Event::Changed { subscriber_id } => {
            let count = store.inbox_unread_count(tenant_id, &subscriber_id).await?;
            Ok(vec![Push { item_id: None, text: unread_count_frame(count) }])
        }
        Event::Erased { .. } => Ok(vec![]),
    }
}

/// One `created` event per subscriber (item ids in the order given), packed into messages
/// of at most [`ITEMS_PER_MESSAGE`] ids.
fn created_envelopes(tenant_id: Uuid, items: Vec<(String, Uuid)>) -> Vec<Envelope> {
    let mut by_subscriber: Vec<(String, Vec<Uuid>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (subscriber_id, item_id) in items {
        match index.get(&subscriber_id) {
            Some(&i) => by_subscriber[i].1.push(item_id),
            None => {
                index.insert(subscriber_id.clone(), by_subscriber.len());
                by_subscriber.push((subscriber_id, vec![item_id]));
            }
        }
    }
    let mut envelopes = Vec::new();
    let mut events = Vec::new();
    let mut size = 0;
    for (subscriber_id, ids) in by_subscriber {
        for chunk in ids.chunks(ITEMS_PER_MESSAGE) {
            if size + chunk.len() > ITEMS_PER_MESSAGE && !events.is_empty() {
                envelopes.push(Envelope { v: 1, tenant_id, events: std::mem::take(&mut events) });
                size = 0;
            }
            size += chunk.len();
            events.push(Event::Created { subscriber_id: subscriber_id.clone(), item_ids: chunk.to_vec() });
        }
    }
    if !events.is_empty() {
        envelopes.push(Envelope { v: 1, tenant_id, events });
    }
    envelopes
}

/// Reads events (published here without a broker, or received from it) and delivers them
/// one message at a time, so a subscriber's pushes keep their order.
async fn dispatch(hub: Arc<Hub>, store: Store, mut incoming: mpsc::Receiver<Vec<u8>>) {
    loop {
        let body = tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            body = incoming.recv() => match body {
                Some(body) => body,
                None => return,
            },
        };
        match serde_json::from_slice::<Envelope>(&body) {
            Ok(envelope) if envelope.v == 1 => hub.deliver(&store, envelope).await,
            Ok(envelope) => tracing::debug!(v = envelope.v, "inbox event of an unknown version ignored"),
            Err(e) => tracing::warn!(error = %e, "inbox event that is not an event ignored"),
        }
    }
}

/// The broker side: publishes what this replica's requests announce and hands what any
/// replica published to `incoming`, reconnecting with backoff when the connection drops.
/// While there is no connection, this replica's own events go to its own sockets.
async fn link(
    url: String,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    incoming: mpsc::Sender<Vec<u8>>,
    shutdown: CancellationToken,
) {
    let local = |body: Vec<u8>| {
        if incoming.try_send(body).is_err() {
            dropped_event();
        }
    };
    'connect: loop {
        let connecting = queue::connect_with_backoff(&url, "notify-api-inbox", &shutdown);
        tokio::pin!(connecting);
        let conn = loop {
            tokio::select! {
                conn = &mut connecting => match conn {
                    Some(conn) => break conn,
                    None => return,
                },
                Some(body) = outgoing.recv() => local(body),
            }
        };
        let mut broadcast = match queue::Broadcast::open(
            &conn,
            EXCHANGE,
            "notify-api-inbox",
            queue::BroadcastLimits::default(),
        )
        .await
        {
            Ok(broadcast) => broadcast,
            Err(e) => {
                tracing::warn!(error = %e, "cannot declare the inbox exchange and queue; reconnecting");
                let _ = conn.close(200, "reconnecting".into()).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue 'connect,
                }
            }
        };
        tracing::info!(queue = broadcast.queue(), "inbox push connected to the broker");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = conn.close(200, "shutting down".into()).await;
                    return;
                }
                Some(body) = outgoing.recv() => {
                    if let Err(e) = broadcast.publish(&body).await {
                        tracing::warn!(error = %e, "inbox push lost the broker; reconnecting");
                        local(body);
                        continue 'connect;
                    }
                }
                message = broadcast.next() => match message {
                    Some(Ok(body)) => {
                        // Waits while the dispatcher is behind: the broker holds the rest.
                        if incoming.send(body).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "inbox push lost the broker; reconnecting");
                        continue 'connect;
                    }
                    None => {
                        tracing::warn!("inbox push lost the broker; reconnecting");
                        continue 'connect;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Uuid {
        Uuid::from_u128(7)
    }

    #[test]
    fn created_groups_by_subscriber_and_chunks() {
        let ids: Vec<Uuid> = (0..2_500u128).map(Uuid::from_u128).collect();
        let mut items: Vec<(String, Uuid)> = vec![];
        for (i, id) in ids.iter().enumerate() {
            // u-0 gets 1,500 items interleaved with u-1's; 2,500 entries in all.
            let sub = if i % 5 < 3 { "u-0" } else { "u-1" };
            items.push((sub.into(), *id));
        }
        let envelopes = created_envelopes(tenant(), items);
        assert_eq!(envelopes.len(), 3, "at most 1,000 ids a message");
        let mut seen: Vec<(String, Uuid)> = vec![];
        for envelope in &envelopes {
            let total: usize = envelope
                .events
                .iter()
                .map(|e| match e {
                    Event::Created { item_ids, .. } => item_ids.len(),
                    Event::Changed { .. } | Event::Erased { .. } => unreachable!(),
                })
                .sum();
            assert!(total <= ITEMS_PER_MESSAGE);
            for event in &envelope.events {
                if let Event::Created { subscriber_id, item_ids } = event {
                    seen.extend(item_ids.iter().map(|id| (subscriber_id.clone(), *id)));
                }
            }
        }
        assert_eq!(seen.len(), 2_500);
        let u0: Vec<Uuid> = seen.iter().filter(|(s, _)| s == "u-0").map(|(_, id)| *id).collect();
        assert_eq!(u0.len(), 1_500);
        assert!(u0.windows(2).all(|w| w[0] < w[1]), "a subscriber's items keep their order");
    }

    #[test]
    fn the_wire_shape() {
        let envelope = Envelope {
            v: 1,
            tenant_id: tenant(),
            events: vec![
                Event::Created { subscriber_id: "u-1".into(), item_ids: vec![Uuid::from_u128(1)] },
                Event::Changed { subscriber_id: "u-2".into() },
            ],
        };
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(
            json,
            json!({"v": 1, "tenant_id": tenant(), "events": [
                {"event": "created", "subscriber_id": "u-1", "item_ids": [Uuid::from_u128(1)]},
                {"event": "changed", "subscriber_id": "u-2"},
            ]})
        );
        assert_eq!(serde_json::from_value::<Envelope>(json).unwrap(), envelope);
    }

    fn hub(socket_queue: usize) -> Arc<Hub> {
        let (outgoing, _rx) = mpsc::channel(1);
        Arc::new(Hub {
            sockets: Mutex::default(),
            seats: Mutex::default(),
            next_id: AtomicU64::new(0),
            outgoing,
            socket_queue,
            shutdown: CancellationToken::new(),
            sockets_tracker: TaskTracker::new(),
        })
    }

    fn text(n: i64) -> Push {
        Push { item_id: None, text: unread_count_frame(n) }
    }

    #[test]
    fn seats_are_capped_per_subscriber_and_tenant_and_given_back() {
        let hub = hub(4);
        let a = hub.seat(tenant(), "u-1", 2, 3).unwrap();
        let _b = hub.seat(tenant(), "u-1", 2, 3).unwrap();
        assert_eq!(hub.seat(tenant(), "u-1", 2, 3).err(), Some("too many sockets for this subscriber"));
        let _c = hub.seat(tenant(), "u-2", 2, 3).unwrap();
        assert_eq!(hub.seat(tenant(), "u-3", 2, 3).err(), Some("too many sockets for this tenant"));
        assert!(hub.seat(Uuid::from_u128(8), "u-1", 2, 3).is_ok(), "another tenant counts apart");
        drop(a);
        assert!(hub.seat(tenant(), "u-3", 2, 3).is_ok());
        let seats = hub.seats.lock().unwrap();
        assert!(!seats.by_tenant.contains_key(&Uuid::from_u128(8)), "a place given back leaves no count");
    }

    #[tokio::test]
    async fn a_socket_that_does_not_read_is_dropped_when_its_queue_is_full() {
        let hub = hub(4);
        let mut reader = hub.register(tenant(), "u-1");
        let stalled = hub.register(tenant(), "u-1");
        for n in 0..4 {
            hub.push(tenant(), "u-1", &[text(n)]);
            // The reading socket keeps up.
            assert_eq!(reader.pushes.recv().await.unwrap().text, unread_count_frame(n));
        }
        assert!(!stalled.overflow.is_cancelled(), "four fit");
        assert_eq!(hub.socket_count(), 2);
        hub.push(tenant(), "u-1", &[text(4)]);
        assert!(stalled.overflow.is_cancelled(), "the fifth overflows: the socket is told to close");
        assert!(!reader.overflow.is_cancelled());
        assert_eq!(hub.socket_count(), 1, "and leaves the hub, so nothing more is queued for it");
        assert_eq!(reader.pushes.recv().await.unwrap().text, unread_count_frame(4));
        drop(stalled);
        drop(reader);
        assert_eq!(hub.socket_count(), 0);
    }

    #[tokio::test]
    async fn pushes_reach_only_the_subscribers_sockets() {
        let hub = hub(8);
        let mut u1 = hub.register(tenant(), "u-1");
        let mut u2 = hub.register(tenant(), "u-2");
        let mut other_tenant = hub.register(Uuid::from_u128(8), "u-1");
        hub.push(tenant(), "u-1", &[text(1)]);
        assert_eq!(u1.pushes.recv().await.unwrap().text, unread_count_frame(1));
        assert!(u2.pushes.try_recv().is_err());
        assert!(other_tenant.pushes.try_recv().is_err());
        assert!(hub.is_connected(tenant(), "u-2"));
        drop(u2);
        assert!(!hub.is_connected(tenant(), "u-2"));
    }
}
