//! PostgreSQL access. Every query on tenant-owned rows filters by `tenant_id`. Queries are
//! checked at run time (`sqlx::query`, not `query!`), so building needs no database; the
//! integration tests run every one of them against a real PostgreSQL.

mod actions;
mod cache;
mod classifications;
mod deliveries;
mod devices;
mod directory;
mod group;
mod inbox;
mod intake;
pub mod integrations;
mod named;
mod notifications;
mod outbox;
mod receipts;
mod recovery;
pub mod resealing;
mod reworded;
mod subscribers;
mod templates;
mod tenants;
mod topics;
mod types;
mod wake;
mod webhook_sending;
pub mod webhooks;

use std::{sync::Arc, time::Duration};

use sqlx::{
    Connection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use actions::{Cancelled, Retried};
pub use cache::{CACHE_CHANNEL, CACHE_LISTENER_NAME, CacheEvent, CacheListener, UNKNOWN_KEY_TTL, UNKNOWN_KEYS};
pub use deliveries::{AttemptRecord, AttemptResult, Claim, Lease};
pub use devices::{OTHER_TENANT, RemovalReason};
pub use inbox::{InboxChange, InboxFilter};
pub use intake::{Accept, Accepted, IdempotencyKey, Intake, IntakeResult, Origin};
pub use integrations::{IntegrationWrite, StoredIntegration};
pub use notifications::ListFilter;
pub use outbox::{ClaimedBatch, OUTBOX_CHANNEL, OutboxDue};
pub use receipts::{
    PENDING_RECEIPT_RETENTION, RECEIPT_TOKEN_RETENTION, Receipt, ReceiptApplied, Suppression, SuppressionReason,
};
pub use recovery::Recovered;
pub use sqlx::postgres::PgListener;
pub use subscribers::ERASED;
pub use templates::StoredTemplate;
pub use tenants::{ApiKeyInfo, Caller, NewTenant};
pub use topics::TopicChange;
pub use webhook_sending::{
    WEBHOOK_SLOTS, WebhookAttempt, WebhookAttemptRecord, WebhookClaim, WebhookOutcome, WebhookPost, WebhookState,
};
pub use webhooks::{NewWebhookEndpoint, WebhookEndpoint, WebhookEndpointChange, WebhookEvent};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// SQLSTATE classes of errors that may pass if tried again: connection exceptions (08),
/// lost serialization or deadlock races (40), insufficient resources (53), locks not
/// available (55), operator intervention such as a shutdown or restart (57), system
/// errors (58).
const TRANSIENT_SQLSTATE_CLASSES: [&str; 6] = ["08", "40", "53", "55", "57", "58"];

impl StoreError {
    /// Whether trying again may succeed: the database is unreachable or restarting, the
    /// pool is exhausted, or the statement lost a race. Anything else (bad data, a
    /// violated constraint, a statement the schema refuses) fails the same way each time,
    /// so a caller that retries must give up on it.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.code().is_some_and(|code| {
                // A read-only transaction: a failover is putting a standby in charge.
                code == "25006" || TRANSIENT_SQLSTATE_CLASSES.iter().any(|class| code.starts_with(class))
            }),
            StoreError::Db(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            StoreError::Db(_) | StoreError::Migrate(_) | StoreError::Corrupt(_) => false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// Connections whose commits do not wait for the disk (`synchronous_commit = off`),
    /// for the writes a crash may lose because what follows them repairs the loss: a
    /// worker's claim (its outcome record waits for the log up to and past it), the
    /// relay's `queued` mark, and the API's deletion of the outbox rows it published
    /// itself (a lost one lets a relay publish a copy, which the worker drops). A session
    /// setting rather than `SET LOCAL`, so each is one statement, not a transaction of
    /// four. Connected only when first used.
    relaxed: PgPool,
    /// Connections whose generic plans probe indexes only, whatever the tables hold
    /// (`plan_cache_mode = force_generic_plan`, sequential, bitmap and merge paths off:
    /// [`INDEX_PROBES`]), for the statements of every accept: the directory's reads and the accept
    /// itself, prepared once per connection and never planned again. The worker's and
    /// relay's hot statements get the same settings as plpgsql functions. The API's other
    /// statements, planned for their parameters, stay on `pool`. Connected only when first
    /// used, up to as many as `pool`.
    indexed: PgPool,
    waker: wake::RelayWaker,
    groups: Arc<group::Groups>,
    /// Off unless [`Store::with_cache`] turned it on (the API does; the CLI does not).
    cache: Arc<cache::Cache>,
    /// Set by [`Store::with_hand_off`].
    hand_off: Option<HandOff>,
}

/// How an accept hands its deliveries due now to its caller: at most `most` of a
/// notification's, whose outbox rows fall due `grace` later while the caller publishes
/// their messages itself; the rest are due at once, for the relays.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandOff {
    grace: Duration,
    most: usize,
}

/// The session settings of the indexed pool: as migrations/20261206000014_generic_plans.sql
/// gives its functions, but for hash joins, which the accept needs to join a batch's
/// notifications and deliveries (1,000 each) without a nested loop over both; its reads
/// of tables are LATERAL probes the planner cannot turn into a hash join (`sql/accept.sql`).
const INDEX_PROBES: [(&str, &str); 4] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_bitmapscan", "off"),
    ("enable_mergejoin", "off"),
];

/// Connections the accepts' group-commit slots hold for good, of a pool of
/// `max_connections` (the indexed one): the API needs at least twice as many, so its reads
/// always find a connection.
pub const ACCEPT_SLOTS: u32 = 4;

/// Connections the outcome records' group-commit slots hold for good, of a worker's pool of
/// `max_connections`: a worker needs at least twice as many.
pub const RECORD_SLOTS: u32 = 2;

/// Connections of the relaxed pool: a worker's two claim slots hold one each, and a relay
/// marks one batch at a time.
const RELAXED_CONNECTIONS: u32 = 2;

impl Store {
    /// A pool that connects lazily: a binary starts while the database is down and its
    /// queries fail (and are retried by the caller) until it is back.
    ///
    /// Connections run without JIT compilation (`jit = off`): the benchmark found the
    /// planner overestimating grouped writes on tables without statistics, and compiling
    /// each took longer than running it.
    ///
    /// The worker's and the relay's hot statements (claims, outcome records, the
    /// aggregate status, the relay's claim and mark) are plpgsql functions that plan each
    /// of their statements once per connection, as probes of indexes whatever the tables
    /// hold (migrations/20261206000014_generic_plans.sql), and are called prepared; the
    /// accept's statements get the same plans from the session settings of the indexed
    /// pool. Other statements driven by arrays whose plan depends on the tables (the
    /// directory's topic members, the sweeper) are sent unprepared (`persistent(false)`),
    /// so each is planned for its parameters and the tables as they are now: a prepared
    /// statement may keep a generic plan made while the tables were small and scan whole
    /// tables with it as they grow. The rest (the key lookups of the other requests) are
    /// prepared once per connection.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        let options = options.application_name("notify").options([("jit", "off")]);
        let pool = pool_options(max_connections).connect_lazy_with(options);
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        let relaxed = (*pool.connect_options()).clone().options([("synchronous_commit", "off")]);
        let relaxed = pool_options(RELAXED_CONNECTIONS).connect_lazy_with(relaxed);
        let indexed = (*pool.connect_options()).clone().options(INDEX_PROBES);
        let indexed = pool_options(pool.options().get_max_connections()).connect_lazy_with(indexed);
        Self {
            pool,
            relaxed,
            indexed,
            waker: Default::default(),
            groups: Default::default(),
            cache: Arc::new(cache::Cache::new(0)),
            hand_off: None,
        }
    }

    /// The same store, its accepts handing the deliveries due now to the caller
    /// ([`Accepted::due`]), who publishes them right after the commit: their outbox rows
    /// fall due `grace` later, for the relay to publish if the caller could not (it
    /// crashed, or the broker was down). `grace` must outlast the caller's wait for the
    /// broker's confirms, or the relay publishes a copy of what is being confirmed.
    ///
    /// A notification hands off at most `most` deliveries (the most its caller publishes
    /// to a queue at once); the rest of a broadcast are written due now, for the relays,
    /// rather than each made due again by an update after the caller found the queue full.
    pub fn with_hand_off(self, grace: Duration, most: usize) -> Self {
        // Groups of its own: a group writes all its requests with one grace.
        Self { hand_off: Some(HandOff { grace, most }), groups: Default::default(), ..self }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool of the accept's statements, whose generic plans probe indexes only (for
    /// tests that check those plans).
    pub fn indexed_pool(&self) -> &PgPool {
        &self.indexed
    }

    /// Applies the pending migrations (a database migrated before some comments were
    /// reworded is accepted, see [`reworded`]).
    pub async fn migrate(&self) -> Result<()> {
        reworded::accept_reworded(&self.pool).await?;
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// For `/readyz`: the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pools, once the group-commit slots have given their connections back
    /// (at the end of the groups they are running).
    pub async fn close(&self) {
        self.groups.closing.cancel();
        self.pool.close().await;
        self.relaxed.close().await;
        self.indexed.close().await;
    }
}

/// Pools that ping a connection before handing it out only when it was idle for longer than
/// [`group::IDLE_BEFORE_PING`] (the database may have closed it meanwhile), not on every
/// acquire as sqlx does by default: a round trip per use of a connection in steady use.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > group::IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// A duration as the whole milliseconds SQL takes (`$1 * interval '1 millisecond'`).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}
