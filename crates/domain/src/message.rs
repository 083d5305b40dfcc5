use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Channel;

/// Where the relay publishes an outbox row: a channel's queue (a delivery), or the
/// webhooks' queue (one event to one endpoint). The routing key is [`Route::as_str`], as
/// is the outbox row's `channel` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    Channel(Channel),
    Webhooks,
}

impl Route {
    /// Every queue the relay publishes to.
    pub const ALL: [Route; 7] = [
        Route::Channel(Channel::Email),
        Route::Channel(Channel::Sms),
        Route::Channel(Channel::Whatsapp),
        Route::Channel(Channel::Novu),
        Route::Channel(Channel::Chat),
        Route::Channel(Channel::Push),
        Route::Webhooks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Channel(channel) => channel.as_str(),
            Route::Webhooks => "webhooks",
        }
    }

    pub fn parse(s: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A name that is no channel's queue nor `webhooks`.
#[derive(Debug, thiserror::Error)]
#[error("unknown queue `{0}` (a channel's name, or `webhooks`)")]
pub struct UnknownRoute(pub String);

impl std::str::FromStr for Route {
    type Err = UnknownRoute;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Route::parse(s).ok_or_else(|| UnknownRoute(s.to_owned()))
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the broker carries: ids only, the worker reads the rest. Publishing needs no more.
pub trait Publishable {
    fn route(&self) -> Route;
    fn to_json(&self) -> Vec<u8>;
    /// The delivery's or the webhook message's id.
    fn id(&self) -> Uuid;
    fn attempt(&self) -> i32;
    /// The AMQP `message_id`: `<id>/<attempt>`.
    fn message_id(&self) -> String {
        format!("{}/{}", self.id(), self.attempt())
    }
    /// The W3C trace context it carries in the AMQP headers.
    fn traceparent(&self) -> Option<&str>;
    fn traceparent_mut(&mut self) -> &mut Option<String>;
}

/// The broker message of docs/contract.md §5. It carries ids, never content: the worker reads the
/// delivery it names from PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryMessage {
    pub v: u32,
    pub delivery_id: Uuid,
    pub notification_id: Uuid,
    pub tenant_id: Uuid,
    pub channel: Channel,
    /// The attempt this message asks for, starting at 1.
    pub attempt: i32,
    /// The W3C trace context of the work that asked for this attempt. It travels in the
    /// AMQP headers, not in the body: the body contract stays ids only.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message is not valid JSON of the v1 contract: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported message version {0}")]
    Version(u32),
    #[error("attempt must be at least 1, got {0}")]
    Attempt(i32),
}

impl DeliveryMessage {
    pub const VERSION: u32 = 1;

    pub fn new(delivery_id: Uuid, notification_id: Uuid, tenant_id: Uuid, channel: Channel, attempt: i32) -> Self {
        Self { v: Self::VERSION, delivery_id, notification_id, tenant_id, channel, attempt, traceparent: None }
    }

    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        let msg: DeliveryMessage = serde_json::from_slice(body)?;
        check(msg.v, msg.attempt)?;
        Ok(msg)
    }
}

/// What every broker message of the v1 contract must hold: its version, an attempt from 1.
fn check(v: u32, attempt: i32) -> Result<(), MessageError> {
    if v != DeliveryMessage::VERSION {
        return Err(MessageError::Version(v));
    }
    if attempt < 1 {
        return Err(MessageError::Attempt(attempt));
    }
    Ok(())
}

impl Publishable for DeliveryMessage {
    fn route(&self) -> Route {
        Route::Channel(self.channel)
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of plain fields serializes")
    }

    fn id(&self) -> Uuid {
        self.delivery_id
    }

    fn attempt(&self) -> i32 {
        self.attempt
    }

    fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    fn traceparent_mut(&mut self) -> &mut Option<String> {
        &mut self.traceparent
    }
}

/// The broker message of one webhook event to one endpoint (queue `notify.webhooks`): the
/// webhook-worker reads the message row it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookMessage {
    pub v: u32,
    pub message_id: Uuid,
    pub tenant_id: Uuid,
    /// The attempt this message asks for, starting at 1.
    pub attempt: i32,
    #[serde(skip)]
    pub traceparent: Option<String>,
}

impl WebhookMessage {
    pub fn new(message_id: Uuid, tenant_id: Uuid, attempt: i32) -> Self {
        Self { v: DeliveryMessage::VERSION, message_id, tenant_id, attempt, traceparent: None }
    }

    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        let msg: WebhookMessage = serde_json::from_slice(body)?;
        check(msg.v, msg.attempt)?;
        Ok(msg)
    }
}

impl Publishable for WebhookMessage {
    fn route(&self) -> Route {
        Route::Webhooks
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of plain fields serializes")
    }

    fn id(&self) -> Uuid {
        self.message_id
    }

    fn attempt(&self) -> i32 {
        self.attempt
    }

    fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    fn traceparent_mut(&mut self) -> &mut Option<String> {
        &mut self.traceparent
    }
}

/// An outbox row as the relay publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxMessage {
    Delivery(DeliveryMessage),
    Webhook(WebhookMessage),
}

impl OutboxMessage {
    fn inner(&self) -> &dyn Publishable {
        match self {
            OutboxMessage::Delivery(m) => m,
            OutboxMessage::Webhook(m) => m,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Publishable {
        match self {
            OutboxMessage::Delivery(m) => m,
            OutboxMessage::Webhook(m) => m,
        }
    }

    pub fn tenant_id(&self) -> Uuid {
        match self {
            OutboxMessage::Delivery(m) => m.tenant_id,
            OutboxMessage::Webhook(m) => m.tenant_id,
        }
    }
}

impl Publishable for OutboxMessage {
    fn route(&self) -> Route {
        self.inner().route()
    }

    fn to_json(&self) -> Vec<u8> {
        self.inner().to_json()
    }

    fn id(&self) -> Uuid {
        self.inner().id()
    }

    fn attempt(&self) -> i32 {
        self.inner().attempt()
    }

    fn traceparent(&self) -> Option<&str> {
        self.inner().traceparent()
    }

    fn traceparent_mut(&mut self) -> &mut Option<String> {
        self.inner_mut().traceparent_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_versions() {
        let m = DeliveryMessage::new(Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Channel::Sms, 2);
        assert_eq!(DeliveryMessage::parse(&m.to_json()).unwrap(), m);
        assert_eq!(m.message_id(), format!("{}/2", m.delivery_id));
        let v2 = serde_json::to_vec(&serde_json::json!({"v": 2, "delivery_id": m.delivery_id,
            "notification_id": m.notification_id, "tenant_id": m.tenant_id, "channel": "sms", "attempt": 1}))
        .unwrap();
        assert!(matches!(DeliveryMessage::parse(&v2), Err(MessageError::Version(2))));
        assert!(DeliveryMessage::parse(b"not json").is_err());
    }

    #[test]
    fn webhook_messages_round_trip_and_routes_name_their_queues() {
        let m = WebhookMessage::new(Uuid::now_v7(), Uuid::now_v7(), 3);
        assert_eq!(WebhookMessage::parse(&m.to_json()).unwrap(), m);
        assert_eq!(m.message_id(), format!("{}/3", m.message_id));
        assert!(
            WebhookMessage::parse(
                &DeliveryMessage::new(m.message_id, m.tenant_id, m.tenant_id, Channel::Sms, 1).to_json()
            )
            .is_err()
        );
        for route in Route::ALL {
            assert_eq!(Route::parse(route.as_str()), Some(route));
        }
        assert_eq!(Route::Webhooks.as_str(), "webhooks");
        assert_eq!(Route::parse("in_app"), None);
    }
}
