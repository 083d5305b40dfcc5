//! Best-effort broadcast between the replicas of a service: a fanout exchange, and per
//! process a server-named, exclusive, auto-delete queue bound to it. Messages are
//! transient and published without confirms or `mandatory`: a message nobody listens to,
//! or one lost with a broker, is gone, so use this only for hints the receiver can do
//! without (the inbox push: a client that missed one asks again with `since`).
//!
//! The exchange is durable, like the rest of the topology (an empty exchange costs the
//! broker nothing, and operators see it in a definitions export); every process declares
//! it when it connects, so it may as well not exist beforehand.

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel as AmqpChannel, Connection, Consumer, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};

use crate::Result;

/// One process's end of a broadcast exchange: publishes to every bound queue (its own
/// included) and receives what any process published.
pub struct Broadcast {
    exchange: String,
    channel: AmqpChannel,
    consumer: Consumer,
    queue: String,
}

/// How much of a broadcast a slow process may have waiting.
#[derive(Clone, Copy, Debug)]
pub struct BroadcastLimits {
    /// Messages the broker keeps in the process's queue; beyond that it drops the oldest.
    pub max_queued: u32,
    /// Messages handed to the process before it acknowledged them.
    pub prefetch: u16,
}

impl Default for BroadcastLimits {
    fn default() -> Self {
        Self { max_queued: 10_000, prefetch: 256 }
    }
}

impl Broadcast {
    /// Declares the fanout `exchange` (durable) and a server-named queue of this
    /// connection bound to it, and consumes from that queue.
    pub async fn open(conn: &Connection, exchange: &str, tag: &str, limits: BroadcastLimits) -> Result<Self> {
        let channel = conn.create_channel().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel.exchange_declare(exchange.into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
        // Exclusive and auto-delete: the queue goes with this connection, so a replica that
        // dies or reconnects leaves nothing behind. A bounded length drops the oldest
        // messages of a replica that cannot keep up instead of filling the broker.
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(i64::from(limits.max_queued)));
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), options, args).await?;
        let queue = queue.name().to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel.basic_qos(limits.prefetch, BasicQosOptions::default()).await?;
        let options = BasicConsumeOptions { exclusive: true, ..Default::default() };
        let consumer = channel.basic_consume(queue.as_str().into(), tag.into(), options, FieldTable::default()).await?;
        Ok(Self { exchange: exchange.to_owned(), channel, consumer, queue })
    }

    /// The server-named queue of this process.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Publishes one transient message to every process (this one included), without
    /// waiting for a confirm: done once it is written to the connection.
    pub async fn publish(&self, body: &[u8]) -> Result<()> {
        let props = BasicProperties::default().with_delivery_mode(1).with_content_type("application/json".into());
        // No confirms on this channel: the returned confirm resolves to `NotRequested`.
        let _confirm = self
            .channel
            .basic_publish(self.exchange.as_str().into(), "".into(), BasicPublishOptions::default(), body, props)
            .await?;
        Ok(())
    }

    /// The next message's body, acknowledged; `None` once the connection or the channel is
    /// gone.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>>> {
        let delivery = match self.consumer.next().await? {
            Ok(delivery) => delivery,
            Err(e) => return Some(Err(e.into())),
        };
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            return Some(Err(e.into()));
        }
        Some(Ok(delivery.data))
    }

    pub fn is_connected(&self) -> bool {
        self.channel.status().connected()
    }
}
