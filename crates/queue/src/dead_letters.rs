//! The dead-letter queues `notify.<channel>.dead` and `notify.webhooks.dead`, which nothing
//! consumes: how deep each is, and one operator's pass over one of them (`notify-admin
//! dlq`), taking messages one at a time, each then replayed to its queue, removed, or kept.
//!
//! A message taken and neither replayed nor removed stays unacknowledged, so the same pass
//! cannot take it twice, until [`DeadLetters::release`] gives all of them back at once, in
//! their order, with `basic.nack` and requeue: unlike a `basic.reject` or a closed channel,
//! a nack does not count as a failed delivery on RabbitMQ 4.3 and later (earlier 4.x count
//! every return towards the quorum queue's delivery limit, 20 by default, which drops a
//! dead letter looked at that often: lift it there with a policy, `delivery-limit: -1`).

use std::{collections::BTreeSet, time::Duration};

use domain::{DeliveryMessage, OutboxMessage, Publishable, Route, WebhookMessage};
use lapin::{
    Channel as AmqpChannel, Connection,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};

use crate::{Result, TRACEPARENT, publisher, topology};

/// The number of messages in `route`'s dead-letter queue, by a passive declare (the
/// queue must exist; a missing one closes `amqp` with `NOT_FOUND`).
pub async fn depth(amqp: &AmqpChannel, route: Route) -> Result<u32> {
    topology::message_count(amqp, &topology::route_dead_letter_queue_name(route)).await
}

/// One message taken from a dead-letter queue and not yet settled.
#[derive(Debug)]
pub struct DeadLetter {
    /// The message (a delivery's, or a webhook message's), or why the body is not one.
    pub message: std::result::Result<OutboxMessage, String>,
    pub body: Vec<u8>,
    /// The `x-death` entries the broker added, most recent first.
    pub deaths: Vec<Death>,
    tag: u64,
}

/// One `x-death` entry: where and why the broker dead-lettered the message, and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Death {
    pub queue: String,
    /// `rejected`, `delivery_limit`, `expired` or `maxlen`.
    pub reason: String,
    pub count: i64,
    /// When it first happened, in seconds since the Unix epoch.
    pub time: Option<u64>,
}

/// One pass over a dead-letter queue, on a channel of its own in confirm mode.
pub struct DeadLetters {
    route: Route,
    channel: AmqpChannel,
    queue: String,
    depth: u32,
    confirm_timeout: Duration,
    /// The delivery tags taken and not settled; [`Self::release`] gives them back.
    held: BTreeSet<u64>,
}

impl DeadLetters {
    pub async fn open(conn: &Connection, route: Route, confirm_timeout: Duration) -> Result<Self> {
        let amqp = conn.create_channel().await?;
        let depth = depth(&amqp, route).await?;
        amqp.confirm_select(ConfirmSelectOptions::default()).await?;
        let queue = topology::route_dead_letter_queue_name(route);
        Ok(Self { route, channel: amqp, queue, depth, confirm_timeout, held: BTreeSet::new() })
    }

    /// The messages in the queue when the pass began.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The next message of the queue not taken yet; `None` once it is empty.
    pub async fn next(&mut self) -> Result<Option<DeadLetter>> {
        let options = BasicGetOptions { no_ack: false };
        let Some(got) = self.channel.basic_get(self.queue.as_str().into(), options).await? else { return Ok(None) };
        let delivery = got.delivery;
        self.held.insert(delivery.delivery_tag);
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let message = match self.route {
            Route::Channel(_) => DeliveryMessage::parse(&delivery.data).map(OutboxMessage::Delivery),
            Route::Webhooks => WebhookMessage::parse(&delivery.data).map(OutboxMessage::Webhook),
        };
        let message = message
            .map(|mut m| {
                *m.traceparent_mut() = match headers.inner().get(TRACEPARENT) {
                    Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                    _ => None,
                };
                m
            })
            .map_err(|e| e.to_string());
        Ok(Some(DeadLetter { message, body: delivery.data, deaths: deaths(&headers), tag: delivery.delivery_tag }))
    }

    /// Publishes the message again, as the relay does (to `notify.deliveries`, routed by its
    /// route, persistent, `mandatory`, with its `traceparent`), and removes it from the
    /// dead-letter queue only once the broker confirmed the new copy. An unreadable message
    /// is refused and stays.
    pub async fn replay(&mut self, letter: &DeadLetter) -> Result<()> {
        let Ok(message) = &letter.message else { return Err(crate::QueueError::Unreadable) };
        publisher::publish_confirmed(&self.channel, std::slice::from_ref(message), self.confirm_timeout).await?;
        self.remove(letter).await
    }

    /// Deletes the message for good.
    pub async fn remove(&mut self, letter: &DeadLetter) -> Result<()> {
        self.channel.basic_ack(letter.tag, BasicAckOptions { multiple: false }).await?;
        self.held.remove(&letter.tag);
        Ok(())
    }

    /// Gives back every message taken and not replayed or removed, and ends the pass.
    pub async fn release(self) -> Result<()> {
        // `multiple` up to the highest held: the broker refuses a tag already settled.
        if let Some(&last) = self.held.last() {
            let waiting = depth(&self.channel, self.route).await?;
            let options = BasicNackOptions { multiple: true, requeue: true };
            self.channel.basic_nack(last, options).await?;
            // A quorum queue takes them back through its log, after the nack's answer:
            // wait (boundedly) until it counts them, so that a pass right after this one
            // (a `list`, then a `replay`) finds every message.
            let back = waiting as usize + self.held.len();
            let deadline = tokio::time::Instant::now() + self.confirm_timeout;
            while (depth(&self.channel, self.route).await? as usize) < back && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.channel.close(200, "done".into()).await?;
        Ok(())
    }
}

fn deaths(headers: &FieldTable) -> Vec<Death> {
    let Some(AMQPValue::FieldArray(entries)) = headers.inner().get("x-death") else { return vec![] };
    entries
        .as_slice()
        .iter()
        .filter_map(|entry| match entry {
            AMQPValue::FieldTable(t) => Some(Death {
                queue: text(t.inner().get("queue")),
                reason: text(t.inner().get("reason")),
                count: match t.inner().get("count") {
                    Some(AMQPValue::LongLongInt(n)) => *n,
                    Some(AMQPValue::LongInt(n)) => i64::from(*n),
                    Some(AMQPValue::LongUInt(n)) => i64::from(*n),
                    _ => 0,
                },
                time: match t.inner().get("time") {
                    Some(AMQPValue::Timestamp(t)) => Some(*t),
                    _ => None,
                },
            }),
            _ => None,
        })
        .collect()
}

fn text(value: Option<&AMQPValue>) -> String {
    match value {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    }
}
