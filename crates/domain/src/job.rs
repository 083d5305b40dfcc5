use uuid::Uuid;

use crate::{Channel, Content, Priority, RetryPolicy, push::PushDevice};

/// One claimed delivery attempt: everything a provider needs to send it.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    pub delivery_id: Uuid,
    pub notification_id: Uuid,
    pub tenant_id: Uuid,
    pub channel: Channel,
    pub attempt: i32,
    /// Attempts before the current series: an operator's retry starts a new series, and
    /// the retry policy counts attempts within it.
    pub retry_base: i32,
    /// The address (or Novu subscriber id) on this channel.
    pub recipient: String,
    /// The notification type; Novu's workflow key.
    pub kind: String,
    pub priority: Priority,
    /// What to send: rendered for this delivery, or the notification's inline content.
    pub content: Content,
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The type's Novu workflow key, when it is not the type's key.
    pub workflow: Option<String>,
    /// The type's retry policy, overriding the channel's.
    pub retry: Option<RetryPolicy>,
    /// Push only: the device `recipient` names, as stored when the delivery was claimed
    /// (`None` on other channels, and when the device is gone since the accept).
    pub device: Option<PushDevice>,
}

impl DeliveryJob {
    /// This attempt's number within its series, from 1.
    pub fn attempt_in_series(&self) -> u32 {
        u32::try_from(self.attempt - self.retry_base).unwrap_or(1).max(1)
    }
}
