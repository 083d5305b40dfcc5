//! Push providers: FCM HTTP v1 (`fcm`), APNs over HTTP/2 (`apns`), Web Push with RFC 8291
//! encryption and RFC 8292 VAPID (`webpush`). A push job carries the device its claim read
//! (`DeliveryJob::device`); a provider serves only devices of its platform. A device the
//! provider reports gone is a [`SendFailure::gone`], so the worker's record removes it.

pub mod apns;
pub mod fcm;
pub mod webpush;

use domain::{
    DeliveryJob, Priority, SendFailure,
    push::{Platform, PushDevice},
};

/// The device of `job` when it is one of `platform`'s.
pub(crate) fn device_of(job: &DeliveryJob, platform: Platform) -> Option<&PushDevice> {
    job.device.as_ref().filter(|d| d.platform == platform)
}

/// The collapse key every provider is given: the notification's id as 32 hex digits (a Web
/// Push `Topic` allows 32 characters, `apns-collapse-id` 64), so a send retried after an
/// ambiguous answer replaces the first on the device rather than showing twice.
pub(crate) fn collapse_id(job: &DeliveryJob) -> String {
    job.notification_id.simple().to_string()
}

/// Whether the notification's priority asks for immediate display.
pub(crate) fn is_urgent(priority: Priority) -> bool {
    matches!(priority, Priority::High | Priority::Urgent)
}

/// The failure of a job that reached a provider without a device of its platform (the
/// dispatcher asks `serves` first, so this is a bug, not a user's error).
pub(crate) fn no_device(platform: Platform) -> SendFailure {
    SendFailure::new(
        domain::FailureKind::Permanent,
        "no_device",
        format!("the delivery has no {} device to send to", platform.as_str()),
    )
}
