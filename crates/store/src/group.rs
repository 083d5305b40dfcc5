//! Group commit: concurrent callers of one operation share its statements and its commit.
//!
//! Requests queue while up to `concurrency` groups are in flight; the next free slot takes
//! everything queued (up to `max`) as one group. Under light load a group is a single
//! request and waits for nothing; under heavy load groups grow, and the round trips and
//! commits per request fall with them. A group that fails is run again one request at a
//! time, so a request that cannot be written fails alone.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::Result;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs one group: one answer per request, in order.
pub(crate) type Run<Req, Resp> = for<'a> fn(&'a PgPool, &'a [Req]) -> BoxFuture<'a, Result<Vec<Resp>>>;

/// The store's grouped operations, each started on first use (it needs a runtime).
#[derive(Default)]
pub(crate) struct Groups {
    pub(crate) accepts: OnceLock<Grouped<(crate::Accept, std::time::Duration), crate::Accepted>>,
    pub(crate) claims: OnceLock<Grouped<(domain::DeliveryMessage, crate::Lease), Result<crate::Claim>>>,
    pub(crate) records: OnceLock<Grouped<crate::deliveries::Outcome, bool>>,
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
    /// Starts the task that forms the groups; it ends when the last handle is dropped.
    pub(crate) fn start(pool: PgPool, run: Run<Req, Resp>, concurrency: usize, max: usize) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(form_groups(pool, run, waiting, concurrency, max));
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

fn closed() -> crate::StoreError {
    crate::StoreError::Db(sqlx::Error::PoolClosed)
}

async fn form_groups<Req: Send + Sync + 'static, Resp: Send + 'static>(
    pool: PgPool,
    run: Run<Req, Resp>,
    mut waiting: mpsc::UnboundedReceiver<Waiting<Req, Resp>>,
    concurrency: usize,
    max: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    loop {
        let slot = Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed");
        let mut group = Vec::new();
        if waiting.recv_many(&mut group, max).await == 0 {
            return;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            run_group(&pool, run, group).await;
            drop(slot);
        });
    }
}

async fn run_group<Req, Resp>(pool: &PgPool, run: Run<Req, Resp>, group: Vec<Waiting<Req, Resp>>) {
    let (requests, replies): (Vec<Req>, Vec<_>) = group.into_iter().unzip();
    match run(pool, &requests).await {
        Ok(answers) => {
            debug_assert_eq!(answers.len(), replies.len(), "one answer per request");
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) if requests.len() == 1 => {
            let _ = replies.into_iter().next().expect("one request").send(Err(e));
        }
        Err(e) => {
            tracing::warn!(error = %e, requests = requests.len(), "a grouped write failed; running its requests one by one");
            for (request, reply) in requests.chunks(1).zip(replies) {
                let answer = run(pool, request).await.map(|mut a| a.pop().expect("one answer for one request"));
                let _ = reply.send(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doubled<'a>(_: &'a PgPool, requests: &'a [i64]) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(async move {
            if requests.len() > 1 && requests.contains(&-1) {
                return Err(crate::StoreError::Corrupt("a bad request in the group".into()));
            }
            match requests {
                [-1] => Err(crate::StoreError::Corrupt("bad request".into())),
                _ => Ok(requests.iter().map(|r| r * 2).collect()),
            }
        })
    }

    fn pool() -> PgPool {
        sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://unused@127.0.0.1/unused").expect("lazy pool")
    }

    #[tokio::test]
    async fn concurrent_requests_are_answered_in_order_and_a_bad_one_fails_alone() {
        let grouped = Arc::new(Grouped::start(pool(), doubled, 1, 100));
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
}
