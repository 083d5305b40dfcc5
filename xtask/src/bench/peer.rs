//! The peer shape (issues 16 and 21): what a user sending one notification at a time
//! sees, the shape other platforms publish figures for. Single `POST /v1/notifications` of
//! about 300 bytes, closed loop, a fixed count at 4, 8 and 64 in flight, each delivered
//! over HTTP by the novu-worker to the Novu stand-in. Per concurrency: accepted/s,
//! delivered/s, accept latency and end-to-end latency (the generator's clock before the
//! POST to the stand-in's arrival: both live in this process), CPU per 1,000
//! notifications by process (the load generator and the stand-in apart from the
//! platform). Then a phase of its own through the counting proxy (`pg_proxy.rs`):
//! PostgreSQL round trips and commits per notification. Each figure beside the ceilings of
//! the same run and issue 21's targets (printed, not asserted).

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::{
    Bench, Plan,
    ceilings::{Ceiling, Ceilings},
    load::{self, Body, LoadResult, Stop, Target},
    novu::NovuStandIn,
    on_stack,
    pg_proxy::{Counts, PgProxy},
    report::{Row, num},
    resources::{Watched, Who},
    stack::Stack,
};
use crate::{dev, procs::Signals, say, services};

pub const CONCURRENCY: [usize; 3] = [4, 8, 64];
/// The round-trip phase's concurrency.
const ROUND_TRIP_CONCURRENCY: usize = 8;

/// This process's threads and the rest of it, as the CPU table names them: none of them
/// is the platform.
pub const GENERATOR: &str = "load generator (xtask thread)";
pub const STAND_IN: &str = "Novu stand-in (xtask thread)";
const XTASK: &str = "xtask";
const XTASK_REST: &str = "xtask's other threads (sampling, polling)";

/// The processes shown one by one; the rest of the platform (the four idle workers) is
/// summed.
const NAMED: [&str; 5] = ["notify-api", "outbox-relay", "novu-worker", "postgres", "rabbitmq (beam.smp)"];

/// Issue 21's targets, on this 2-core machine with everything on it.
const TARGET_DELIVERED_SHARE: f64 = 0.97;
const TARGET_E2E_P99_MS_AT_8: f64 = 20.0;
/// 1.5 times svix's 778/s, measured on 2026-12-06.
const TARGET_DELIVERED_PER_S_AT_64: f64 = 1_167.0;
const TARGET_ACCEPTED_PER_S_AT_64: f64 = 2_000.0;
const TARGET_PLATFORM_CPU_S_PER_1000: [(usize, f64); 2] = [(8, 1.0), (64, 0.6)];
const TARGET_ROUND_TRIPS: f64 = 6.0;
const TARGET_SYNC_COMMITS: f64 = 2.0;
/// What the generator may cost, so that it takes little from the platform.
const GENERATOR_CPU_MS_PER_REQUEST: f64 = 0.15;

/// What this process's side of the phase is, for the sampler.
pub fn watched(stand_in: &NovuStandIn) -> Vec<Watched> {
    vec![
        Watched { name: XTASK.into(), who: Who::Pid(std::process::id()) },
        Watched { name: STAND_IN.into(), who: Who::Thread(stand_in.tid) },
    ]
}

/// What one concurrency did.
pub struct PeerPoint {
    pub concurrency: usize,
    pub load: LoadResult,
    /// The stand-in's arrival minus the generator's send, per notification, microseconds.
    pub e2e: Histogram<u64>,
    /// Notifications that reached the stand-in.
    pub delivered: u64,
    /// From the first request to the last arrival at the stand-in.
    pub delivered_secs: f64,
    /// Deliveries that ended other than `sent` (the database).
    pub not_sent: i64,
    /// CPU seconds by process (and this process's threads) from the first request until
    /// the last delivery was recorded.
    pub cpu: BTreeMap<String, f64>,
}

impl PeerPoint {
    fn per_1000(&self, cpu_s: f64) -> f64 {
        cpu_s / (self.load.accepted as f64 / 1000.0).max(1e-9)
    }

    fn delivered_rate(&self) -> f64 {
        self.delivered as f64 / self.delivered_secs.max(1e-9)
    }

    fn e2e_ms(&self, q: f64) -> f64 {
        self.e2e.value_at_quantile(q) as f64 / 1000.0
    }

    fn is_platform(name: &str) -> bool {
        ![GENERATOR, STAND_IN, XTASK_REST].contains(&name)
    }

    /// The platform's CPU: the API, the relay, the workers, PostgreSQL and RabbitMQ.
    fn platform_cpu_s(&self) -> f64 {
        self.cpu.iter().filter(|(name, _)| Self::is_platform(name)).map(|(_, s)| s).sum()
    }

    fn other_workers_cpu_s(&self) -> f64 {
        self.cpu
            .iter()
            .filter(|(name, _)| Self::is_platform(name) && !NAMED.contains(&name.as_str()))
            .map(|(_, s)| s)
            .sum()
    }
}

/// The end-to-end latencies of a phase: each arrival matched with its request's send
/// (the first arrival of a request, should one come twice). Returns the histogram, the
/// notifications that arrived, and the time from the first send to the last arrival.
fn end_to_end(sent: &[(u64, u64)], arrivals: &[(u64, u64)]) -> (Histogram<u64>, u64, f64) {
    let mut sent_at = vec![None; sent.iter().map(|(i, _)| *i as usize + 1).max().unwrap_or(0)];
    for &(i, at) in sent {
        sent_at[i as usize] = Some(at);
    }
    let mut e2e = load::histogram();
    let mut last = 0;
    for &(i, arrived) in arrivals {
        if let Some(sent) = sent_at.get_mut(i as usize).and_then(Option::take) {
            e2e.saturating_record(arrived.saturating_sub(sent).max(1));
            last = last.max(arrived);
        }
    }
    let first = sent.iter().map(|(_, at)| *at).min().unwrap_or(0);
    let delivered = e2e.len();
    (e2e, delivered, last.saturating_sub(first) as f64 / 1e6)
}

impl Bench {
    pub(super) async fn measure_peer(&self, stand_in: &NovuStandIn) -> anyhow::Result<Vec<PeerPoint>> {
        let client = services::http_client()?;
        dev::wait_healthy(&client, &self.stack.api).await?;
        let max_concurrency = CONCURRENCY.into_iter().max().unwrap_or(1);
        let target = Target::new(&self.stack.api, &self.api_key)?;
        let count = self.plan.peer_count;

        // Warms the stack up; not measured.
        say!("peer shape: warm-up, {max_concurrency} in flight, 1s");
        let warm_up = load::closed_loop(
            &target,
            "bench.peer.warmup",
            max_concurrency,
            Body::Peer,
            Stop::After(Duration::from_secs(1)),
            None,
        )
        .await?;
        let mut expected = warm_up.accepted;
        self.drain(|| stand_in.triggers(), expected, "the peer warm-up").await?;
        stand_in.take_arrivals();

        let mut points = Vec::new();
        for concurrency in CONCURRENCY {
            let kind = format!("bench.peer.c{concurrency}");
            say!("peer shape: {} single POSTs of ~300 B to Novu, {concurrency} in flight", num(count as f64));
            let cpu0 = self.sampler.cpu();
            let load = load::closed_loop(&target, &kind, concurrency, Body::Peer, Stop::Requests(count), None).await?;
            expected += load.accepted;
            // Each point starts on an empty pipeline, and its CPU covers its own deliveries.
            self.drain(|| stand_in.triggers(), expected, &kind).await?;
            let mut cpu = self.sampler.cpu().since(&cpu0);
            let xtask = cpu.remove(XTASK).unwrap_or(0.0);
            let rest = xtask - load.cpu_secs - cpu.get(STAND_IN).copied().unwrap_or(0.0);
            cpu.insert(GENERATOR.into(), load.cpu_secs);
            cpu.insert(XTASK_REST.into(), rest.max(0.0));
            let (e2e, delivered, delivered_secs) = end_to_end(&load.sent, &stand_in.take_arrivals());
            let not_sent = self.delivered(&kind).await?.not_sent;
            let point = PeerPoint { concurrency, load, e2e, delivered, delivered_secs, not_sent, cpu };
            say!(
                "  {} accepted/s, {} delivered/s ({} errors{}); accept p50 {} / p99 {} ms; end to end p50 {} / p99 {} ms; \
                 generator {} ms CPU per request",
                num(point.load.rate()),
                num(point.delivered_rate()),
                point.load.errors,
                point.load.first_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                num(point.load.ms(0.5)),
                num(point.load.ms(0.99)),
                num(point.e2e_ms(0.5)),
                num(point.e2e_ms(0.99)),
                num(point.load.cpu_ms_per_request()),
            );
            points.push(point);
        }
        Ok(points)
    }

    /// The round-trip phase's load, on a stack just started: `round_trip_count`
    /// notifications, nothing warmed up (the stack's start is part of what is counted).
    async fn round_trip_load(&self, stand_in: &NovuStandIn) -> anyhow::Result<u64> {
        let client = services::http_client()?;
        dev::wait_healthy(&client, &self.stack.api).await?;
        let target = Target::new(&self.stack.api, &self.api_key)?;
        let kind = "bench.peer.round_trips";
        let count = self.plan.round_trip_count;
        let before = stand_in.triggers();
        say!(
            "round trips: {} single POSTs through the PostgreSQL proxy, {ROUND_TRIP_CONCURRENCY} in flight",
            num(count as f64)
        );
        let load =
            load::closed_loop(&target, kind, ROUND_TRIP_CONCURRENCY, Body::Peer, Stop::Requests(count), None).await?;
        self.drain(|| stand_in.triggers() - before, load.accepted, kind).await?;
        stand_in.take_arrivals();
        Ok(load.accepted)
    }
}

/// What the round-trip phase counted, from the stack's start to its stop.
pub struct RoundTrips {
    pub notifications: u64,
    pub proxy: Counts,
    /// `pg_stat_database.xact_commit` of the bench's database.
    pub commits: i64,
    /// `pg_stat_wal.wal_sync`, server-wide.
    pub wal_syncs: i64,
}

impl RoundTrips {
    fn per_notification(&self, n: f64) -> f64 {
        n / (self.notifications as f64).max(1.0)
    }
}

/// The stack again, its binaries reaching PostgreSQL through the counting proxy, for
/// `round_trip_count` notifications at 8 in flight. Returns what it counted and whether
/// every binary stopped cleanly.
pub(super) async fn round_trips(
    stack: &Stack,
    tenant: &dev::Tenant,
    plan: &Plan,
    signals: &mut Signals,
    admin_url: &str,
    stand_in: &NovuStandIn,
) -> (anyhow::Result<RoundTrips>, bool) {
    let proxy = match PgProxy::start(&stack.database_url).await {
        Ok(proxy) => proxy,
        Err(e) => return (Err(e), true),
    };
    let before = match server_counters(admin_url).await {
        Ok(counters) => counters,
        Err(e) => return (Err(e), true),
    };
    let proxied = stack.with_binaries_database_url(proxy.url.clone());
    let (notifications, clean) = on_stack(&proxied, tenant, plan, signals, watched(stand_in), async |bench: &Bench| {
        bench.round_trip_load(stand_in).await
    })
    .await;
    let result = async {
        let notifications = notifications?;
        let proxy = proxy.counts();
        // The binaries have stopped, so their backends have flushed their statistics; the
        // WAL writer reports its syncs on its own schedule.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = server_counters(admin_url).await?;
        Ok(RoundTrips { notifications, proxy, commits: after.0 - before.0, wal_syncs: after.1 - before.1 })
    }
    .await;
    (result, clean)
}

/// `xact_commit` of the bench's database and the server's `wal_sync`.
async fn server_counters(admin_url: &str) -> anyhow::Result<(i64, i64)> {
    let mut db = services::connect_postgres(admin_url).await?;
    sqlx::query_as(
        "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = $1), (SELECT wal_sync FROM pg_stat_wal)",
    )
    .bind(super::stack::DATABASE)
    .fetch_one(&mut db)
    .await
    .context("reading pg_stat_database and pg_stat_wal")
}

/// The single-row commit ceiling for `clients`: the case measured with the fewest clients
/// at least as many (the ceilings measure 1, 16 and 64), else the one with the most.
fn pg_commit_ceiling(c: &Ceilings, clients: usize) -> Option<Ceiling> {
    let mut measured: Vec<(usize, &Ceiling)> = c
        .cases
        .iter()
        .filter_map(|(name, ceiling)| Some((name.strip_prefix("pg_insert_1row_c")?.parse().ok()?, ceiling)))
        .collect();
    measured.sort_by_key(|(n, _)| *n);
    measured.iter().find(|(n, _)| *n >= clients).or(measured.last()).map(|(_, ceiling)| (*ceiling).clone())
}

/// A target as printed: what it asks and whether this run met it.
fn target(text: &str, met: bool) -> String {
    format!("{text}: {}", if met { "met" } else { "not met" })
}

pub(super) fn rows(points: &[PeerPoint], round_trips: Option<&RoundTrips>, c: &Ceilings) -> Vec<Row> {
    let mut rows = Vec::new();
    for p in points {
        let n = p.concurrency;
        let accepted = p.load.rate();
        let errors = match p.load.errors {
            0 => String::new(),
            e => format!(" ({e} errors)"),
        };
        let mut row = Row::new(
            "peer shape",
            format!(
                "c={n}: {} single `POST /v1/notifications` (~300 B, one subscriber, novu channel over HTTP to a \
                 local Novu stand-in), closed loop: accepted/s (first request to last `202`)",
                num(p.load.requests as f64)
            ),
            format!("{}/s{errors}", num(accepted)),
        )
        .against(accepted, [c.get("http_json_post_axum_c64"), pg_commit_ceiling(c, n)]);
        if n == 64 {
            row = row.target(target("≥ 2,000/s", accepted >= TARGET_ACCEPTED_PER_S_AT_64));
        }
        rows.push(row);

        let delivered = p.delivered_rate();
        let share = delivered / accepted.max(1e-9);
        let mut targets = vec![target("within 3 % of accepted/s", share >= TARGET_DELIVERED_SHARE)];
        if n == 64 {
            targets.push(target("≥ 1,167/s (1.5 × svix's 778/s)", delivered >= TARGET_DELIVERED_PER_S_AT_64));
        }
        rows.push(
            Row::new(
                "peer shape",
                format!("c={n}: delivered/s (first request to last arrival at the stand-in)"),
                format!("{}/s ({:.1} % of accepted/s)", num(delivered), 100.0 * share),
            )
            .target(targets.join("; ")),
        );

        rows.push(Row::new(
            "peer shape",
            format!("c={n}: accept latency p50 / p99 (client side)"),
            format!("{} / {} ms", num(p.load.ms(0.5)), num(p.load.ms(0.99))),
        ));

        let missing = p.load.accepted.saturating_sub(p.delivered);
        let lost = match (missing, p.not_sent) {
            (0, 0) => String::new(),
            (m, k) => format!(" ({m} not arrived, {k} deliveries not sent)"),
        };
        let mut latency = Row::new(
            "peer shape",
            format!("c={n}: end to end p50 / p99 (the generator's clock before the POST to the stand-in's arrival)"),
            format!("{} / {} ms{lost}", num(p.e2e_ms(0.5)), num(p.e2e_ms(0.99))),
        );
        if n == 8 {
            latency = latency.target(target("p99 ≤ 20 ms (svix: 30 ms)", p.e2e_ms(0.99) <= TARGET_E2E_P99_MS_AT_8));
        }
        rows.push(latency);

        let platform = p.per_1000(p.platform_cpu_s());
        let mut cpu = Row::new(
            "peer shape",
            format!(
                "c={n}: CPU s per 1,000 notifications, the platform end to end (API, relay, workers, PostgreSQL, RabbitMQ)"
            ),
            format!("{} s", num(platform)),
        );
        if let Some((_, limit)) = TARGET_PLATFORM_CPU_S_PER_1000.iter().find(|(at, _)| *at == n) {
            cpu = cpu.target(target(&format!("≤ {limit:.1} s"), platform <= *limit));
        }
        rows.push(cpu);

        let mut by_process: Vec<String> =
            NAMED.iter().filter_map(|name| Some(format!("{name} {}", num(p.per_1000(*p.cpu.get(*name)?))))).collect();
        by_process.push(format!("email, sms and whatsapp workers (idle) {}", num(p.per_1000(p.other_workers_cpu_s()))));
        let apart: Vec<String> = [GENERATOR, STAND_IN, XTASK_REST]
            .iter()
            .filter_map(|name| Some(format!("{name} {}", num(p.per_1000(*p.cpu.get(*name)?)))))
            .collect();
        let per_request = p.load.cpu_ms_per_request();
        rows.push(
            Row::new(
                "peer shape",
                format!("c={n}: CPU s per 1,000 notifications by process; not the platform's; the generator's CPU per request"),
                format!("{}; apart: {}; {} ms", by_process.join(", "), apart.join(", "), num(per_request)),
            )
            .target(target("generator ≤ 0.15 ms per request", per_request <= GENERATOR_CPU_MS_PER_REQUEST)),
        );
    }

    if let Some(r) = round_trips {
        let what = format!(
            "{} notifications at {ROUND_TRIP_CONCURRENCY} in flight through a counting proxy, from the stack's start to its stop",
            num(r.notifications as f64)
        );
        let trips = r.per_notification(r.proxy.round_trips() as f64);
        rows.push(
            Row::new(
                "round trips",
                format!("PostgreSQL round trips per notification (`Query` and `Sync` messages; {what})"),
                format!(
                    "{} ({} simple queries, {} syncs; {} connections opened)",
                    num(trips),
                    num(r.per_notification(r.proxy.queries as f64)),
                    num(r.per_notification(r.proxy.syncs as f64)),
                    r.proxy.connections
                ),
            )
            .target(target("≤ 6", trips <= TARGET_ROUND_TRIPS)),
        );
        rows.push(Row::new(
            "round trips",
            "transactions committed per notification (`pg_stat_database.xact_commit` of `notify_bench`: every \
             transaction PostgreSQL ends, read-only ones included, so more than the synchronous commits)",
            num(r.per_notification(r.commits as f64)),
        ));
        let syncs = r.per_notification(r.wal_syncs as f64);
        rows.push(
            Row::new(
                "round trips",
                "WAL syncs per notification (`pg_stat_wal.wal_sync`, server-wide: the synchronous commits that waited \
                 for the disk, several sharing one under group commit)",
                num(syncs),
            )
            .target(target("≤ 2 synchronous commits", syncs <= TARGET_SYNC_COMMITS)),
        );
    }
    rows
}

pub(super) fn json(points: &[PeerPoint], round_trips: Option<&RoundTrips>) -> Value {
    let points: Vec<Value> = points
        .iter()
        .map(|p| {
            let per_1000: BTreeMap<&String, f64> = p.cpu.iter().map(|(k, s)| (k, p.per_1000(*s))).collect();
            json!({
                "concurrency": p.concurrency, "requests": p.load.requests, "accepted": p.load.accepted,
                "accepted_per_s": p.load.rate(), "errors": p.load.errors, "first_error": p.load.first_error,
                "delivered": p.delivered, "delivered_per_s": p.delivered_rate(), "not_sent": p.not_sent,
                "accept_p50_ms": p.load.ms(0.5), "accept_p99_ms": p.load.ms(0.99),
                "end_to_end_p50_ms": p.e2e_ms(0.5), "end_to_end_p99_ms": p.e2e_ms(0.99),
                "cpu_s": p.cpu, "cpu_s_per_1000": per_1000, "platform_cpu_s_per_1000": p.per_1000(p.platform_cpu_s()),
                "generator_cpu_ms_per_request": p.load.cpu_ms_per_request(),
            })
        })
        .collect();
    let round_trips = round_trips.map(|r| {
        json!({
            "notifications": r.notifications, "queries": r.proxy.queries, "syncs": r.proxy.syncs,
            "connections": r.proxy.connections, "xact_commit": r.commits, "wal_sync": r.wal_syncs,
            "round_trips_per_notification": r.per_notification(r.proxy.round_trips() as f64),
            "commits_per_notification": r.per_notification(r.commits as f64),
            "wal_syncs_per_notification": r.per_notification(r.wal_syncs as f64),
        })
    });
    json!({"points": points, "round_trips": round_trips})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceilings(cases: &[&str]) -> Ceilings {
        let cases = cases
            .iter()
            .map(|name| (name.to_string(), Ceiling { case: name.to_string(), value: 1.0, unit: "txn/s".into() }))
            .collect();
        Ceilings { cases, source: "test".into(), measured: false }
    }

    #[test]
    fn matches_each_arrival_with_its_send() {
        let sent = [(0, 1_000), (1, 1_500), (2, 2_000)];
        // Request 1 arrives twice, request 2 never, request 7 is of another phase.
        let arrivals = [(1, 4_500), (0, 3_000), (1, 9_000), (7, 5_000)];
        let (e2e, delivered, secs) = end_to_end(&sent, &arrivals);
        assert_eq!(delivered, 2);
        assert!(e2e.equivalent(e2e.min(), 2_000) && e2e.equivalent(e2e.max(), 3_000));
        assert_eq!(secs, 0.0035);
    }

    #[test]
    fn the_commit_ceiling_has_at_least_as_many_clients() {
        let c = ceilings(&["pg_insert_1row_c1", "pg_insert_1row_c16", "pg_insert_1row_c64", "pg_insert_100rows_c16"]);
        let case = |clients| pg_commit_ceiling(&c, clients).map(|c| c.case);
        assert_eq!(case(1).as_deref(), Some("pg_insert_1row_c1"));
        assert_eq!(case(4).as_deref(), Some("pg_insert_1row_c16"));
        assert_eq!(case(8).as_deref(), Some("pg_insert_1row_c16"));
        assert_eq!(case(64).as_deref(), Some("pg_insert_1row_c64"));
        assert_eq!(case(100).as_deref(), Some("pg_insert_1row_c64"));
        assert!(pg_commit_ceiling(&ceilings(&[]), 8).is_none());
    }
}
