//! The depth of every dead-letter queue (each channel's, the webhooks') as the gauge
//! `notify_dead_letters`.
//! Nothing consumes those queues, so without a look nobody learns that one fills: every
//! `relay.dead_letter_interval` a passive declare of each reads its message count. Every
//! relay replica reports the same broker-wide numbers.

use std::{sync::LazyLock, time::Duration};

use domain::Route;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: &'static str,
}

static DEPTH: LazyLock<Family<ChannelLabel, Gauge>> = LazyLock::new(|| {
    let depth = Family::default();
    bootstrap::metrics::register(|r| {
        r.register(
            "dead_letters",
            "Messages in the dead-letter queue (notify.<channel>.dead, notify.webhooks.dead)",
            depth.clone(),
        );
    });
    depth
});

/// Measures until `shutdown` fires, on a broker connection of its own, reconnecting when
/// it is lost. A failed look (the topology not declared yet) is tried again next time.
pub(crate) async fn watch(amqp_url: String, interval: Duration, shutdown: CancellationToken) {
    let mut conn = None;
    loop {
        // Wait first: at start the relay has yet to declare the queues.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        if conn.as_ref().is_none_or(|c: &queue::AmqpConnection| !c.status().connected()) {
            conn = queue::connect_with_backoff(&amqp_url, "outbox-relay-dead-letters", &shutdown).await;
        }
        if let Some(c) = &conn
            && let Err(e) = measure(c).await
        {
            tracing::warn!(error = %e, "cannot read the dead-letter queues' depth");
        }
    }
    if let Some(c) = conn {
        let _ = c.close(200, "shutting down".into()).await;
    }
}

async fn measure(conn: &queue::AmqpConnection) -> queue::Result<()> {
    // A channel per look: a passive declare of a missing queue closes its channel.
    let amqp = conn.create_channel().await?;
    let measured = async {
        for route in Route::ALL {
            let depth = queue::dead_letters::depth(&amqp, route).await?;
            DEPTH.get_or_create(&ChannelLabel { channel: route.as_str() }).set(i64::from(depth));
        }
        Ok(())
    }
    .await;
    let _ = amqp.close(200, "measured".into()).await;
    measured
}
