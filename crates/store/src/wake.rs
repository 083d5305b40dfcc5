//! Waking the relays when outbox rows were written. `NOTIFY` takes a database-wide lock
//! while its transaction commits, so a `NOTIFY` inside every accept transaction made
//! concurrent accepts commit one at a time. Instead each process sends its `NOTIFY` on
//! its own, after the accepts committed, at most one at a time: wakes asked for while one
//! is in flight fold into the next. A wake that is lost (the process dies first) costs at
//! most the relays' poll interval.

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{OUTBOX_CHANNEL, Store};

#[derive(Clone, Debug, Default)]
pub(crate) struct RelayWaker {
    wanted: Arc<Notify>,
    started: Arc<OnceLock<()>>,
}

impl Store {
    /// Tells the relays that outbox rows are due, once the transaction that wrote them has
    /// committed. Returns at once.
    pub fn wake_relays(&self) {
        let waker = &self.waker;
        waker.started.get_or_init(|| {
            tokio::spawn(send_wakes(self.pool.clone(), Arc::clone(&waker.wanted)));
        });
        waker.wanted.notify_one();
    }
}

async fn send_wakes(pool: PgPool, wanted: Arc<Notify>) {
    loop {
        wanted.notified().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')").bind(OUTBOX_CHANNEL).execute(&pool).await {
            tracing::debug!(error = %e, "waking the relays failed; they will poll");
        }
    }
}
