use serde::{Deserialize, Serialize};

/// The life of one delivery (one recipient on one channel):
/// `pending -> queued -> sending -> sent -> delivered`, with `retrying` (back to `queued`
/// when due) and the terminal `failed`, `bounced`, `undelivered`, `suppressed`, `cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Queued,
    Sending,
    Retrying,
    Sent,
    Delivered,
    Failed,
    Bounced,
    Undelivered,
    Suppressed,
    Cancelled,
}

impl DeliveryStatus {
    const ALL: [DeliveryStatus; 11] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Queued,
        DeliveryStatus::Sending,
        DeliveryStatus::Retrying,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Bounced,
        DeliveryStatus::Undelivered,
        DeliveryStatus::Suppressed,
        DeliveryStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Bounced => "bounced",
            DeliveryStatus::Undelivered => "undelivered",
            DeliveryStatus::Suppressed => "suppressed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A worker never acts on a delivery in a terminal state: a message for it is stale.
    /// `sent` counts as terminal for sending (only provider callbacks move it further).
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            DeliveryStatus::Pending | DeliveryStatus::Queued | DeliveryStatus::Sending | DeliveryStatus::Retrying
        )
    }
}

/// The aggregate of a notification's deliveries: `pending -> processing -> sent | partial |
/// failed | cancelled`. The store computes it in SQL when a delivery changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    Pending,
    Processing,
    Sent,
    Partial,
    Failed,
    Cancelled,
}

impl NotificationStatus {
    const ALL: [NotificationStatus; 6] = [
        NotificationStatus::Pending,
        NotificationStatus::Processing,
        NotificationStatus::Sent,
        NotificationStatus::Partial,
        NotificationStatus::Failed,
        NotificationStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Processing => "processing",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Partial => "partial",
            NotificationStatus::Failed => "failed",
            NotificationStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<NotificationStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}
