//! RabbitMQ for Notify (docs/contract.md §5): the topology, a publisher that waits for confirms,
//! a consumer with manual acknowledgement, and the dead-letter queues' redrive.
//! Connections are plain; callers reconnect with [`connect_with_backoff`] when one is lost.

pub mod broadcast;
mod consumer;
pub mod dead_letters;
mod publisher;
pub mod topology;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

pub use broadcast::{Broadcast, BroadcastLimits};
pub use consumer::{Incoming, Subscription};
pub use dead_letters::{DeadLetter, DeadLetters, Death};
pub use lapin::Connection as AmqpConnection;
pub use publisher::{Outcome, Publisher};
pub use topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker returned a message as unroutable (routing key `{0}`): is the topology declared?")]
    Unroutable(String),
    #[error("broker refused a message (nack)")]
    Nacked,
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the message is not a delivery message of the v1 contract")]
    Unreadable,
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// The AMQP header carrying a message's W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, props).await?)
}

/// Connects, retrying with exponential backoff until it succeeds or `shutdown` fires
/// (then `None`).
pub async fn connect_with_backoff(url: &str, name: &str, shutdown: &CancellationToken) -> Option<Connection> {
    let mut backoff = domain::backoff::Backoff::default();
    loop {
        match connect(url, name).await {
            Ok(conn) => return Some(conn),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "cannot reach the broker");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
