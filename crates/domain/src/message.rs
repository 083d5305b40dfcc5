use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Channel;

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

    /// `<delivery_id>/<attempt>`: the AMQP `message_id`.
    pub fn message_id(&self) -> String {
        format!("{}/{}", self.delivery_id, self.attempt)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of plain fields serializes")
    }

    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        let msg: DeliveryMessage = serde_json::from_slice(body)?;
        if msg.v != Self::VERSION {
            return Err(MessageError::Version(msg.v));
        }
        if msg.attempt < 1 {
            return Err(MessageError::Attempt(msg.attempt));
        }
        Ok(msg)
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
}
