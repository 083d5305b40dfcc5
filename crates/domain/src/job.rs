use uuid::Uuid;

use crate::{Channel, Content, Priority};

/// One claimed delivery attempt: everything a provider needs to send it.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    pub delivery_id: Uuid,
    pub notification_id: Uuid,
    pub tenant_id: Uuid,
    pub channel: Channel,
    pub attempt: i32,
    /// The address (or Novu subscriber id) on this channel.
    pub recipient: String,
    /// The notification type; Novu's workflow key.
    pub kind: String,
    pub priority: Priority,
    pub content: Content,
    pub data: serde_json::Map<String, serde_json::Value>,
}
