//! The consume loop every worker runs, whatever its messages are (a channel's deliveries,
//! webhook messages): connect, declare the topology, consume the queue with bounded
//! prefetch, hand each message to the worker's [`Handler`] on a task of its own,
//! reconnect with backoff when the broker is lost, and on shutdown stop taking messages
//! and let those in flight finish within the grace.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use domain::backoff::Backoff;
use futures_util::FutureExt;
use queue::{Incoming, Subscription, Topology};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ChannelLabel, METRICS};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a worker does with each message of its queue.
pub(crate) trait Handler: Send + Sync + 'static {
    /// The `channel` label of its metrics (`email`, `webhooks`).
    fn label(&self) -> &'static str;

    /// Handles one message and settles it (ack, or dead-letter), unless shutdown cut it
    /// short: an unsettled message is redelivered once the consumer's channel closes.
    fn handle<'a>(&'a self, incoming: &'a Incoming, shutdown: &'a CancellationToken) -> BoxFuture<'a, ()>;
}

/// Where to consume from, and how much at once.
pub(crate) struct Consumer {
    pub amqp_url: String,
    pub topology: Topology,
    pub queue: String,
    /// The connection's name in the broker (`email-worker`).
    pub name: String,
    pub prefetch: u16,
    pub shutdown_grace: Duration,
    /// Consuming from the broker right now: for readiness.
    pub consuming: Arc<AtomicBool>,
}

/// Consumes until `shutdown` fires, then drains what is in flight (up to the grace).
pub(crate) async fn consume(consumer: Consumer, handler: Arc<dyn Handler>, shutdown: CancellationToken) {
    let Consumer { amqp_url, topology, queue, name, prefetch, shutdown_grace, consuming } = consumer;
    let mut in_flight = JoinSet::new();
    let mut backoff = Backoff::default();
    // On shutdown the connection and the consumer's channel outlive the loop, so the
    // messages in flight can still be acked while draining.
    let mut live = None;
    'connect: while !shutdown.is_cancelled() {
        let Some(conn) = queue::connect_with_backoff(&amqp_url, &name, &shutdown).await else { break };
        let opened = async {
            let setup = conn.create_channel().await?;
            topology.declare(&setup).await?;
            let _ = setup.close(200, "declared".into()).await;
            Subscription::open(&conn, &queue, prefetch, &name).await
        }
        .await;
        let mut subscription = match opened {
            Ok(s) => s,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "cannot consume from the broker");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff.reset();
        consuming.store(true, Ordering::Relaxed);
        tracing::info!(queue = %queue, prefetch, "consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if let Err(e) = subscription.cancel().await {
                        tracing::warn!(error = %e, "cancelling the consumer failed");
                    }
                    live = Some((conn, subscription));
                    break 'connect;
                }
                next = subscription.next() => match next {
                    Some(Ok(incoming)) => {
                        in_flight.spawn(handle(handler.clone(), incoming, shutdown.clone()));
                    }
                    Some(Err(e)) => {
                        consuming.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "lost the broker; reconnecting");
                        continue 'connect;
                    }
                    None => {
                        consuming.store(false, Ordering::Relaxed);
                        tracing::warn!("the broker ended the consumer; reconnecting");
                        continue 'connect;
                    }
                },
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => log_panic(done),
            }
        }
    }

    let drained = tokio::time::timeout(shutdown_grace, async {
        while let Some(done) = in_flight.join_next().await {
            log_panic(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            abandoned = in_flight.len(),
            "shutdown grace over: the broker will redeliver what was in flight"
        );
        in_flight.shutdown().await;
    }
    if let Some((conn, subscription)) = live {
        let _ = subscription.channel().close(200, "shutting down".into()).await;
        let _ = conn.close(200, "shutting down".into()).await;
    }
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        // `handle` catches the handler's panics; this would be one of its own.
        tracing::error!(error = %e, "message task panicked");
    }
}

async fn handle(handler: Arc<dyn Handler>, incoming: Incoming, shutdown: CancellationToken) {
    let label = ChannelLabel { channel: handler.label() };
    let in_flight = METRICS.in_flight.get_or_create(&label).clone();
    in_flight.inc();
    // A panic must not leak the message and its prefetch slot (after `prefetch` of them
    // the worker would consume nothing more): it is dead-lettered and counted. What it
    // had claimed is recovered by the sweeper once the lease runs out.
    let handled = AssertUnwindSafe(handler.handle(&incoming, &shutdown)).catch_unwind().await;
    if handled.is_err() {
        // Not the panic's payload, which may hold an address or a body (the panic hook
        // logs where it happened, without it).
        METRICS.panics.get_or_create(&label).inc();
        if incoming.is_settled() {
            // Acked or dead-lettered before the panic: settling it again would be a
            // protocol error that closes the channel, and every message in flight on it
            // would be handed out again.
            tracing::error!("message handler panicked after its message was settled");
        } else {
            tracing::error!("message handler panicked: dead-lettering the message");
            dead_letter(handler.label(), &incoming).await;
        }
    }
    in_flight.dec();
}

/// Rejects the message without requeue, so the broker dead-letters it; counted.
pub(crate) async fn dead_letter(label: &'static str, incoming: &Incoming) {
    METRICS.dead_lettered.get_or_create(&ChannelLabel { channel: label }).inc();
    settle(incoming.dead_letter().await);
}

pub(crate) fn settle(result: queue::Result<()>) {
    if let Err(e) = result {
        // The broker redelivers an unsettled message; the claim drops it as a duplicate.
        tracing::warn!(error = %e, "could not settle the message with the broker");
    }
}
