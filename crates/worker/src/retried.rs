//! Store operations retried while the database is away: a worker holds its message
//! through an outage instead of failing or dead-lettering it.

use domain::backoff::Backoff;
use store::StoreError;
use tokio_util::sync::CancellationToken;

pub(crate) enum Retried<T> {
    Done(T),
    Cancelled,
    Fatal(StoreError),
}

/// Retries a store operation with backoff while the database is unreachable or failing
/// for a passing reason, so a database outage holds messages instead of failing or
/// dead-lettering them. An error that would come back every time (stored data that cannot
/// be read, a constraint or data error) is not retried: the caller dead-letters the
/// message.
pub(crate) async fn with_retries<T, F, Fut>(cancel: &CancellationToken, mut op: F) -> Retried<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = store::Result<T>>,
{
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Ok(v) => return Retried::Done(v),
            Err(e) if !e.is_transient() => return Retried::Fatal(e),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "database operation failed");
                tokio::select! {
                    _ = cancel.cancelled() => return Retried::Cancelled,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
