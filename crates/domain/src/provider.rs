use futures_util::future::BoxFuture;

use crate::{DeliveryJob, SendOutcome};

/// A way to send one delivery. Implementations classify every failure (docs/providers.md §1)
/// and never retry on their own: the worker's retry policy decides.
pub trait Provider: Send + Sync + 'static {
    /// Recorded with each attempt.
    fn name(&self) -> &str;

    /// Whether this provider can reach `job`'s recipient at all. A channel whose addresses
    /// belong to one provider each (a Slack user id, a Discord webhook) skips the others
    /// instead of failing over to them.
    fn serves(&self, _job: &DeliveryJob) -> bool {
        true
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome>;
}
