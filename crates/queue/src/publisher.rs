use std::time::Duration;

use domain::{Publishable, Route};
use futures_util::future::join_all;
use lapin::{
    BasicProperties, Channel as AmqpChannel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};

use crate::{QueueError, Result, TRACEPARENT, topology};

/// Publishes delivery messages with publisher confirms and `mandatory` set, so a message
/// counts as published only when the broker has stored it in a queue.
pub struct Publisher {
    conn: Connection,
    channel: AmqpChannel,
    confirm_timeout: Duration,
}

impl Publisher {
    pub async fn open(conn: Connection, confirm_timeout: Duration) -> Result<Self> {
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { conn, channel, confirm_timeout })
    }

    pub fn channel(&self) -> &AmqpChannel {
        &self.channel
    }

    pub fn is_connected(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }

    /// Publishes every message, then waits for all confirms (pipelined, not one round trip
    /// per message), and says what became of each, in order: confirmed, or refused (a nack,
    /// a return as unroutable, no confirm within the timeout). One queue refusing its
    /// messages does not fail the others'. An `Err` is a lost channel or connection: then
    /// nothing is known of any message.
    pub async fn publish_each<M: Publishable>(&self, messages: &[M]) -> Result<Vec<Outcome>> {
        publish_each(&self.channel, messages, self.confirm_timeout).await
    }

    /// Messages ready in `route`'s queue: published, not yet delivered to a consumer
    /// (what consumers hold unacknowledged is not counted).
    pub async fn ready(&self, route: Route) -> Result<u32> {
        topology::ready(&self.channel, route).await
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "shutting down".into()).await;
    }
}

/// What the broker did with one message: `Ok` once it confirmed storing it in a queue.
pub type Outcome = std::result::Result<(), QueueError>;

/// [`publish_each`] of messages that stand or fall together: the first refusal is the error.
pub(crate) async fn publish_confirmed<M: Publishable>(
    channel: &AmqpChannel,
    messages: &[M],
    confirm_timeout: Duration,
) -> Result<usize> {
    publish_each(channel, messages, confirm_timeout).await?.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(messages.len())
}

/// [`Publisher::publish_each`] on a channel in confirm mode: to [`topology::EXCHANGE`] with
/// the message's route (its channel, or `webhooks`) as routing key, persistent and
/// `mandatory`, its trace context in the headers.
pub(crate) async fn publish_each<M: Publishable>(
    channel: &AmqpChannel,
    messages: &[M],
    confirm_timeout: Duration,
) -> Result<Vec<Outcome>> {
    let mut confirms = Vec::with_capacity(messages.len());
    for msg in messages {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(msg.message_id().into());
        if let Some(traceparent) = msg.traceparent() {
            let mut headers = FieldTable::default();
            headers.insert(TRACEPARENT.into(), AMQPValue::LongString(traceparent.into()));
            props = props.with_headers(headers);
        }
        let confirm = channel
            .basic_publish(
                topology::EXCHANGE.into(),
                msg.route().as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &msg.to_json(),
                props,
            )
            .await?;
        confirms.push(confirm);
    }
    // One deadline for the whole group: a queue that never confirms (a lost quorum) costs
    // the timeout once, and the messages confirmed meanwhile count.
    let deadline = tokio::time::Instant::now() + confirm_timeout;
    let outcomes = join_all(confirms.into_iter().map(|confirm| async move {
        match tokio::time::timeout_at(deadline, confirm).await {
            Err(_) => Ok(Err(QueueError::ConfirmTimeout(confirm_timeout))),
            Ok(confirmation) => Ok(match confirmation? {
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                Confirmation::Ack(Some(returned)) => {
                    Err(QueueError::Unroutable(returned.delivery.routing_key.to_string()))
                }
                Confirmation::Nack(_) => Err(QueueError::Nacked),
            }),
        }
    }))
    .await;
    outcomes.into_iter().collect()
}
