//! The push channel's vocabulary: a subscriber's devices and what a push provider is
//! given of one. A push delivery's recipient is the device's id (as the app chose it,
//! unique per subscriber); the worker's claim reads the device it names, so a token the
//! app refreshed since the accept is the one used.

use serde::{Deserialize, Serialize};

/// Which push service a device's token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Firebase Cloud Messaging (Android, and iOS or web apps through Firebase).
    Fcm,
    /// Apple Push Notification service.
    Apns,
    /// A browser's Web Push subscription (RFC 8030).
    Webpush,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Fcm, Platform::Apns, Platform::Webpush];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
            Platform::Webpush => "webpush",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A device as a push provider needs it: claimed with its delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushDevice {
    /// The app's id for the device (the delivery's recipient).
    pub id: String,
    pub platform: Platform,
    /// FCM registration token, APNs device token (hex), or a Web Push subscription as
    /// JSON (`{"endpoint", "keys": {"p256dh", "auth"}}`).
    pub token: String,
    /// The APNs bundle id (`apns-topic`) or the FCM project; `None`: the provider's default.
    pub app: Option<String>,
}
