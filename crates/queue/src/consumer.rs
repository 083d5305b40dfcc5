use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use lapin::{
    Acker, Channel as AmqpChannel, Connection, Consumer,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions},
    types::{AMQPValue, FieldTable},
};

use crate::Result;

/// A consumer on one queue with manual acknowledgement and a bounded prefetch.
pub struct Subscription {
    channel: AmqpChannel,
    consumer: Consumer,
}

/// One message taken from the queue. Exactly one of `ack` or `dead_letter` should be
/// called; if none is (the process dies), the broker redelivers it. Only the first takes
/// effect: settling a delivery tag twice is a protocol error for which the broker closes
/// the channel, and with it every other message in flight there is redelivered (lapin's
/// `Acker` ignores a second call as well; this record does not depend on that, and tells
/// the caller, [`Incoming::is_settled`]).
pub struct Incoming {
    pub body: Vec<u8>,
    /// The broker delivered it before, to a consumer that did not settle it.
    pub redelivered: bool,
    /// The W3C trace context from the message's headers.
    pub traceparent: Option<String>,
    acker: Acker,
    settled: AtomicBool,
}

impl Subscription {
    pub async fn open(conn: &Connection, queue: &str, prefetch: u16, tag: &str) -> Result<Self> {
        let channel = conn.create_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok(Self { channel, consumer })
    }

    pub fn channel(&self) -> &AmqpChannel {
        &self.channel
    }

    /// The next message; `None` once the consumer is cancelled or the connection is gone.
    pub async fn next(&mut self) -> Option<Result<Incoming>> {
        let delivery = self.consumer.next().await?;
        Some(delivery.map_err(Into::into).map(|d| {
            let traceparent = d.properties.headers().as_ref().and_then(|h| match h.inner().get(crate::TRACEPARENT) {
                Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                _ => None,
            });
            Incoming {
                body: d.data,
                redelivered: d.redelivered,
                traceparent,
                acker: d.acker,
                settled: AtomicBool::new(false),
            }
        }))
    }

    /// Stops new deliveries; messages already delivered can still be settled.
    pub async fn cancel(&self) -> Result<()> {
        self.channel.basic_cancel(self.consumer.tag(), BasicCancelOptions::default()).await?;
        Ok(())
    }
}

impl Incoming {
    /// Acks it, unless it was settled already (then nothing is sent).
    pub async fn ack(&self) -> Result<()> {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.acker.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    }

    /// Rejects without requeue: the queue's dead-letter exchange takes it. Nothing is sent
    /// when it was settled already.
    pub async fn dead_letter(&self) -> Result<()> {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.acker.reject(BasicRejectOptions { requeue: false }).await?;
        }
        Ok(())
    }

    /// Acked or dead-lettered already (or tried to be: a settle that failed is not tried
    /// again on the same channel).
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }
}
