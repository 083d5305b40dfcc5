//! Push providers: FCM HTTP v1 (`fcm`), APNs over HTTP/2 (`apns`), Web Push with RFC 8291
//! encryption and RFC 8292 VAPID (`webpush`). A push job carries the device its claim read
//! (`DeliveryJob::device`); a provider serves only devices of its platform. A device the
//! provider reports gone is a [`SendFailure::gone`], so the worker's record removes it.

pub mod apns;
pub mod fcm;
pub mod webpush;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

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

/// A cache entry that no provider holds and none asked for this long is dropped.
const UNUSED_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Process-wide token caches, one per credential (FCM's access token, APNs' provider token,
/// VAPID's tokens), so that providers rebuilt from the same settings (a worker rebuilds a
/// tenant's every few minutes and on every change of its integrations) share one token and
/// one refresh rather than each asking anew: Apple refuses a provider token refreshed more
/// often than every 20 minutes (429 `TooManyProviderTokenUpdates`).
pub(crate) struct Registry<T> {
    entries: OnceLock<Mutex<Entries<T>>>,
}

/// A [`Registry`]'s caches by credential, each with when it was last asked for.
type Entries<T> = HashMap<String, (Arc<T>, Instant)>;

impl<T: Default> Registry<T> {
    pub(crate) const fn new() -> Self {
        Self { entries: OnceLock::new() }
    }

    /// The cache of the credential `key` ([`identity`]), made on first use. Entries
    /// unused for a day and held by no provider are dropped on the way.
    pub(crate) fn get(&self, key: &str) -> Arc<T> {
        let now = Instant::now();
        let mut entries = self.entries.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, (cache, used)| {
            Arc::strong_count(cache) > 1 || now.saturating_duration_since(*used) < UNUSED_FOR
        });
        let (cache, used) = entries.entry(key.to_owned()).or_insert_with(|| (Arc::new(T::default()), now));
        *used = now;
        cache.clone()
    }
}

/// A credential's identity as a [`Registry`] key: SHA-256 of its parts (each with its
/// length), in hex, so no secret is kept as a key.
pub(crate) fn identity(parts: &[&[u8]]) -> String {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        digest.update(&(part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_credential_one_cache_and_unheld_old_ones_are_dropped() {
        static CACHES: Registry<Mutex<u32>> = Registry::new();
        let (a, b) = (identity(&[b"team", b"key"]), identity(&[b"teamk", b"ey"]));
        assert_ne!(a, b);
        let first = CACHES.get(&a);
        *first.lock().unwrap() = 7;
        assert_eq!(*CACHES.get(&a).lock().unwrap(), 7);
        assert_eq!(*CACHES.get(&b).lock().unwrap(), 0);
        // Unheld and unused for a day: dropped at the next lookup.
        drop(first);
        let old = Instant::now().checked_sub(UNUSED_FOR + Duration::from_secs(1));
        if let Some(old) = old {
            CACHES.entries.get().unwrap().lock().unwrap().get_mut(&a).unwrap().1 = old;
            let _ = CACHES.get(&b);
            assert!(!CACHES.entries.get().unwrap().lock().unwrap().contains_key(&a));
        }
    }
}
