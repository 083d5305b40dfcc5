//! Group commit: concurrent callers of one operation share its statements and its commit.
//!
//! Requests queue while up to `concurrency` groups are in flight; the next free slot takes
//! everything queued (up to `max`) as one group. Under light load a group is a single
//! request and waits for nothing; under heavy load groups grow, and the round trips and
//! commits per request fall with them. A group the database refused (an error it answered
//! with, so the group wrote nothing) is run again one request at a time, so a request that
//! cannot be written fails alone. A group that failed otherwise (the connection dropped,
//! during its COMMIT too) may have been written: it is not run again, as that would write
//! its requests twice, and each caller is answered with a connection error, which the API
//! answers with 503 for the producer to retry with its idempotency key.
//!
//! A slot of [`Grouped::holding`] keeps one connection for its lifetime: taken from the
//! pool at its first group, pinged only after [`IDLE_BEFORE_PING`] unused, replaced when a
//! group fails in a way that may have broken it, and given back when the store closes. So
//! the hot writes pay neither the pool's acquire nor the ping sqlx sends on every release.

use std::{
    future::Future,
    pin::Pin,
    sync::OnceLock,
    time::{Duration, Instant},
};

use sqlx::{
    Connection, PgConnection, PgPool, Postgres,
    pool::PoolConnection,
    postgres::{PgDatabaseError, PgSeverity},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{Result, StoreError};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs one group on the slot's connection: one answer per request, in order.
pub(crate) type Run<Req, Resp> = for<'a> fn(&'a mut PgConnection, &'a [Req]) -> BoxFuture<'a, Result<Vec<Resp>>>;

/// A held connection unused for longer than this is pinged before its next group: the
/// database may have closed it meanwhile (a restart, `idle_session_timeout`), and a group
/// failing on it would cost its callers a retry.
pub(crate) const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// The store's grouped operations, each started on first use (it needs a runtime).
#[derive(Default)]
pub(crate) struct Groups {
    pub(crate) accepts: OnceLock<Grouped<(crate::Accept, Option<crate::HandOff>), crate::Accepted>>,
    pub(crate) claims: OnceLock<Grouped<(domain::DeliveryMessage, crate::Lease), Result<crate::Claim>>>,
    pub(crate) records: OnceLock<Grouped<crate::deliveries::Outcome, bool>>,
    pub(crate) webhook_claims:
        OnceLock<Grouped<(domain::WebhookMessage, crate::Lease), Result<crate::webhook_sending::WebhookClaim>>>,
    pub(crate) webhook_records:
        OnceLock<Grouped<crate::webhook_sending::RecordRequest, crate::webhook_sending::WebhookState>>,
    /// Cancelled by [`crate::Store::close`]: the slots give their connections back, as the
    /// pools close only once every connection is back.
    pub(crate) closing: CancellationToken,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

type Waiting<Req, Resp> = (Req, oneshot::Sender<Result<Resp>>);

pub(crate) struct Grouped<Req, Resp> {
    queue: mpsc::UnboundedSender<Waiting<Req, Resp>>,
}

impl<Req: Send + Sync + 'static, Resp: Send + 'static> Grouped<Req, Resp> {
    /// Groups whose slots each hold a connection of `pool` until `closing` is cancelled.
    /// Starts the task that forms the groups; it ends when the last handle is dropped or
    /// `closing` is cancelled.
    pub(crate) fn holding(
        pool: PgPool,
        run: Run<Req, Resp>,
        concurrency: usize,
        max: usize,
        closing: &CancellationToken,
    ) -> Self {
        Self::spawn(pool, run, concurrency, max, closing.clone())
    }

    fn spawn(pool: PgPool, run: Run<Req, Resp>, concurrency: usize, max: usize, closing: CancellationToken) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(form_groups(pool, run, waiting, concurrency, max, closing));
        Self { queue }
    }

    /// Runs `request` in the next group and answers for it. The group runs to its end even
    /// if this caller goes away: what it writes, it writes for every request in it.
    pub(crate) async fn call(&self, request: Req) -> Result<Resp> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((request, reply)).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

fn closed() -> StoreError {
    StoreError::Db(sqlx::Error::PoolClosed)
}

async fn form_groups<Req: Send + Sync + 'static, Resp: Send + 'static>(
    pool: PgPool,
    run: Run<Req, Resp>,
    mut waiting: mpsc::UnboundedReceiver<Waiting<Req, Resp>>,
    concurrency: usize,
    max: usize,
    closing: CancellationToken,
) {
    // Slots not running a group; a group's task gives its slot back when it ends. Slots
    // still out when this task ends drop their connections as their groups end.
    let mut idle: Vec<Slot> = (0..concurrency).map(|_| Slot::default()).collect();
    let (give_back, mut returned) = mpsc::unbounded_channel::<Slot>();
    loop {
        let mut slot = match idle.pop() {
            Some(slot) => slot,
            None => tokio::select! {
                _ = closing.cancelled() => return,
                slot = returned.recv() => slot.expect("this task holds a sender"),
            },
        };
        let mut group = Vec::new();
        tokio::select! {
            _ = closing.cancelled() => return,
            received = waiting.recv_many(&mut group, max) => if received == 0 { return },
        }
        let pool = pool.clone();
        let mut out = Out { slot: None, give_back: give_back.clone() };
        tokio::spawn(async move {
            slot.run_group(&pool, run, group).await;
            out.slot = Some(slot);
            drop(out);
        });
    }
}

/// A slot out with its group's task: given back when the task ends, even by a panic (a
/// new, empty slot then, as the held connection may be mid-exchange), so a panicking
/// group does not take a slot away for good.
struct Out {
    slot: Option<Slot>,
    give_back: mpsc::UnboundedSender<Slot>,
}

impl Drop for Out {
    fn drop(&mut self) {
        let _ = self.give_back.send(self.slot.take().unwrap_or_default());
    }
}

/// One group in flight at a time, with the connection it holds.
#[derive(Default)]
struct Slot {
    held: Option<Held>,
}

struct Held {
    conn: PoolConnection<Postgres>,
    last_used: Instant,
}

impl Slot {
    async fn run_group<Req, Resp>(&mut self, pool: &PgPool, run: Run<Req, Resp>, group: Vec<Waiting<Req, Resp>>) {
        let (requests, replies): (Vec<Req>, Vec<_>) = group.into_iter().unzip();
        match self.run(pool, run, &requests).await {
            Ok(answers) => {
                debug_assert_eq!(answers.len(), replies.len(), "one answer per request");
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            // Before the one-request case: a lone request whose commit's outcome is unknown
            // is answered as transient too (the producer retries with its key).
            Err(e) if !wrote_nothing(&e) => {
                tracing::warn!(error = %e, requests = requests.len(), "a grouped write failed and may have been committed; not running it again");
                for reply in replies {
                    let _ = reply.send(Err(may_have_written(&e)));
                }
            }
            Err(e) if requests.len() == 1 => {
                let _ = replies.into_iter().next().expect("one request").send(Err(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, requests = requests.len(), "a grouped write failed; running its requests one by one");
                for (request, reply) in requests.chunks(1).zip(replies) {
                    let answer =
                        self.run(pool, run, request).await.map(|mut a| a.pop().expect("one answer for one request"));
                    let _ = reply.send(answer);
                }
            }
        }
    }

    async fn run<Req, Resp>(&mut self, pool: &PgPool, run: Run<Req, Resp>, requests: &[Req]) -> Result<Vec<Resp>> {
        let held = self.connection(pool).await?;
        let result = run(&mut held.conn, requests).await;
        held.last_used = Instant::now();
        if let Err(e) = &result
            && !still_usable(&mut held.conn, e).await
        {
            self.drop_connection();
        }
        result
    }

    /// The slot's connection: the one it holds, if it still answers after being idle, else
    /// a new one from the pool.
    async fn connection(&mut self, pool: &PgPool) -> Result<&mut Held> {
        if let Some(held) = &mut self.held
            && held.last_used.elapsed() > IDLE_BEFORE_PING
            && held.conn.ping().await.is_err()
        {
            self.drop_connection();
        }
        let held = match self.held.take() {
            Some(held) => held,
            None => Held { conn: pool.acquire().await?, last_used: Instant::now() },
        };
        Ok(self.held.insert(held))
    }

    fn drop_connection(&mut self) {
        if let Some(mut held) = self.held.take() {
            // Closed, not given back to the pool: it may be broken.
            held.conn.close_on_drop();
        }
    }
}

/// Whether a connection on which a group just failed can run the next group: the database
/// refused a statement (and still answers), or the rows read could not be used. Any other
/// error (I/O, protocol) may have left the session broken or mid-exchange.
async fn still_usable(conn: &mut PgConnection, error: &StoreError) -> bool {
    match error {
        StoreError::Corrupt(_) => true,
        StoreError::Db(sqlx::Error::Database(_)) => conn.ping().await.is_ok(),
        _ => false,
    }
}

/// Whether a failed group is known to have written nothing: the server refused one of its
/// statements with an `ERROR` (its transaction rolled back, the session goes on). A lost
/// connection, a `FATAL` error (a backend terminated while its COMMIT waited for a
/// synchronous standby has committed locally), or rows that could not be read after the
/// commit leave it unknown.
fn wrote_nothing(error: &StoreError) -> bool {
    match error {
        StoreError::Db(sqlx::Error::Database(e)) => {
            e.try_downcast_ref::<PgDatabaseError>().is_some_and(|e| e.severity() == PgSeverity::Error)
        }
        _ => false,
    }
}

/// The error each caller of a group that may have been written gets: a connection error
/// (transient, so the API answers 503 and a worker tries again), whatever ended the group.
fn may_have_written(error: &StoreError) -> StoreError {
    let why = format!("the write may have been committed before it failed: {error}");
    StoreError::Db(sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The server refuses a group with a bad request (-1) in it.
    fn doubled<'a>(conn: &'a mut PgConnection, requests: &'a [i64]) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(async move {
            if requests.contains(&-1) {
                sqlx::query("SELECT 1 / 0").execute(&mut *conn).await?;
            }
            match requests {
                [-2] => panic!("a bug in a group's statement"),
                _ => Ok(requests.iter().map(|r| r * 2).collect()),
            }
        })
    }

    static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Writes its requests, then loses the connection before the answer.
    fn written_then_lost<'a>(_: &'a mut PgConnection, requests: &'a [i64]) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(async move {
            WRITTEN.fetch_add(requests.len(), std::sync::atomic::Ordering::SeqCst);
            Err(StoreError::Db(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())))
        })
    }

    /// The slot holds a real connection, though `doubled` does not use it.
    fn pool() -> PgPool {
        let url = std::env::var("NOTIFY_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        sqlx::postgres::PgPoolOptions::new().connect_lazy(&url).expect("lazy pool")
    }

    #[tokio::test]
    async fn concurrent_requests_are_answered_in_order_and_a_bad_one_fails_alone() {
        let grouped = Arc::new(Grouped::holding(pool(), doubled, 1, 100, &CancellationToken::new()));
        let calls: Vec<_> = [1, 2, -1, 4]
            .into_iter()
            .map(|r| {
                let grouped = Arc::clone(&grouped);
                tokio::spawn(async move { grouped.call(r).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.expect("no panic").ok());
        }
        assert_eq!(answers, vec![Some(2), Some(4), None, Some(8)]);
    }

    #[tokio::test]
    async fn a_group_that_may_have_been_written_is_not_written_again() {
        let grouped = Arc::new(Grouped::holding(pool(), written_then_lost, 1, 100, &CancellationToken::new()));
        // The first request holds the only slot while the others queue into one group.
        let calls: Vec<_> = (1..=4)
            .map(|r| {
                let grouped = Arc::clone(&grouped);
                tokio::spawn(async move { grouped.call(r).await })
            })
            .collect();
        for call in calls {
            let answer = call.await.expect("no panic");
            assert!(answer.is_err_and(|e| e.is_transient()), "a transient error for every caller");
        }
        assert_eq!(WRITTEN.load(std::sync::atomic::Ordering::SeqCst), 4, "each request written once");
    }

    /// Writes its one request, then finds its rows unreadable: not an answer of the server's.
    fn written_then_unreadable<'a>(_: &'a mut PgConnection, _: &'a [i64]) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(async move { Err(StoreError::Corrupt("unreadable rows after the commit".into())) })
    }

    #[tokio::test]
    async fn a_lone_request_whose_outcome_is_unknown_is_answered_as_transient() {
        let grouped = Grouped::holding(pool(), written_then_unreadable, 1, 100, &CancellationToken::new());
        let answer = grouped.call(1).await;
        assert!(answer.is_err_and(|e| e.is_transient()), "retried by its caller, with its key");
    }

    #[tokio::test]
    async fn a_group_that_panics_gives_its_slot_back() {
        let grouped = Grouped::holding(pool(), doubled, 1, 100, &CancellationToken::new());
        assert!(grouped.call(-2).await.is_err(), "the panicking request is answered with an error");
        let next = tokio::time::timeout(Duration::from_secs(10), grouped.call(3)).await;
        assert_eq!(next.expect("the only slot came back").ok(), Some(6));
    }
}
