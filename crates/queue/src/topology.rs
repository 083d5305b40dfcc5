//! docs/contract.md §5: exchange `notify.deliveries` (direct) routes by channel to the quorum
//! queue `notify.<channel>`, which dead-letters to `notify.dead` and on to
//! `notify.<channel>.dead`; webhook messages take the same way with the routing key
//! `webhooks` (`notify.webhooks`, `notify.webhooks.dead`). Declaring is idempotent; every binary that touches the broker
//! declares at start, and `outbox-relay declare-topology` does it for operators.

use domain::{Channel, Route};
use lapin::{
    Channel as AmqpChannel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use serde::Deserialize;

use crate::Result;

pub const EXCHANGE: &str = "notify.deliveries";
pub const DEAD_LETTER_EXCHANGE: &str = "notify.dead";

pub fn queue_name(channel: Channel) -> String {
    route_queue_name(Route::Channel(channel))
}

pub fn route_queue_name(route: Route) -> String {
    format!("notify.{route}")
}

pub fn dead_letter_queue_name(channel: Channel) -> String {
    route_dead_letter_queue_name(Route::Channel(channel))
}

pub fn route_dead_letter_queue_name(route: Route) -> String {
    format!("notify.{route}.dead")
}

/// The messages ready to deliver in `route`'s queue (not those a consumer holds), by a
/// passive declare (the queue must exist; a missing one closes `amqp` with `NOT_FOUND`).
pub async fn ready(amqp: &AmqpChannel, route: Route) -> Result<u32> {
    message_count(amqp, &route_queue_name(route)).await
}

/// The messages ready in `queue` (not those a consumer holds), by a passive declare.
pub(crate) async fn message_count(amqp: &AmqpChannel, queue: &str) -> Result<u32> {
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    Ok(amqp.queue_declare(queue.into(), options, FieldTable::default()).await?.message_count())
}

/// Settings of the topology. Changing one on a queue that exists makes the broker refuse
/// the declaration (PRECONDITION_FAILED): change it with a policy instead, or recreate.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    /// Deliveries of one message (requeues and consumer crashes included) before the
    /// broker dead-letters it: what stops a message that crashes its worker.
    pub delivery_limit: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Self { delivery_limit: 10 }
    }
}

impl Topology {
    pub async fn declare(&self, ch: &AmqpChannel) -> Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(EXCHANGE.into(), ExchangeKind::Direct, durable, FieldTable::default()).await?;
        ch.exchange_declare(DEAD_LETTER_EXCHANGE.into(), ExchangeKind::Direct, durable, FieldTable::default()).await?;
        for route in Route::ALL {
            let queue = route_queue_name(route);
            let dead = route_dead_letter_queue_name(route);
            ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), self.work_queue_args()).await?;
            ch.queue_bind(
                queue.as_str().into(),
                EXCHANGE.into(),
                route.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            ch.queue_declare(dead.as_str().into(), QueueDeclareOptions::durable(), quorum()).await?;
            ch.queue_bind(
                dead.as_str().into(),
                DEAD_LETTER_EXCHANGE.into(),
                route.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }

    fn work_queue_args(&self) -> FieldTable {
        let mut args = quorum();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(self.delivery_limit)));
        // At-least-once dead-lettering: the broker keeps a message until the dead-letter
        // queue confirms it (it requires reject-publish overflow).
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        args
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}
