use domain::{DeliveryJob, SendOutcome};
use futures_util::future::BoxFuture;

/// A way to send one delivery. Implementations classify every failure (docs/providers.md §1)
/// and never retry on their own: the worker's retry policy decides.
pub trait Provider: Send + Sync + 'static {
    /// Recorded with each attempt.
    fn name(&self) -> &str;

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome>;
}
