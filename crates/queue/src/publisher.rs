use std::time::Duration;

use domain::DeliveryMessage;
use futures_util::future::try_join_all;
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
    /// per message). Any nack, return or timeout fails the whole batch: the caller keeps
    /// the rows and publishes them again, and workers drop the duplicates.
    pub async fn publish_all(&self, messages: &[DeliveryMessage]) -> Result<usize> {
        publish_confirmed(&self.channel, messages, self.confirm_timeout).await
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "shutting down".into()).await;
    }
}

/// [`Publisher::publish_all`] on a channel in confirm mode: to [`topology::EXCHANGE`] with
/// the message's channel as routing key, persistent and `mandatory`, its trace context in
/// the headers.
pub(crate) async fn publish_confirmed(
    channel: &AmqpChannel,
    messages: &[DeliveryMessage],
    confirm_timeout: Duration,
) -> Result<usize> {
    let mut pending = Vec::new();
    for msg in messages {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(msg.message_id().into());
        if let Some(traceparent) = &msg.traceparent {
            let mut headers = FieldTable::default();
            headers.insert(TRACEPARENT.into(), AMQPValue::LongString(traceparent.as_str().into()));
            props = props.with_headers(headers);
        }
        let confirm = channel
            .basic_publish(
                topology::EXCHANGE.into(),
                msg.channel.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &msg.to_json(),
                props,
            )
            .await?;
        pending.push(async move {
            match confirm.await? {
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                Confirmation::Ack(Some(returned)) => {
                    Err(QueueError::Unroutable(returned.delivery.routing_key.to_string()))
                }
                Confirmation::Nack(_) => Err(QueueError::Nacked),
            }
        });
    }
    let count = pending.len();
    tokio::time::timeout(confirm_timeout, try_join_all(pending))
        .await
        .map_err(|_| QueueError::ConfirmTimeout(confirm_timeout))??;
    Ok(count)
}
