//! The peer shape (issue 16): what a user sending one notification at a time sees, the
//! shape other platforms publish figures for. Single `POST /v1/notifications` of about
//! 300 bytes, closed loop at 4, 8 and 64 in flight, each delivered over HTTP by the
//! novu-worker to the Novu stand-in. Per concurrency: intake/s, accept latency (client
//! side), accept-to-sent (from the database) and CPU per 1,000 notifications by process,
//! beside the ceilings of the same run and the targets (printed, not asserted).

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

use super::{
    Bench, Delivered,
    load::{self, Body, Stop, Target},
    novu::NovuStandIn,
    report::{Ceiling, Ceilings, Row, num},
};
use crate::{dev, say, services};

pub const CONCURRENCY: [usize; 3] = [4, 8, 64];

/// The sampler's name for this process during the peer shape: it runs the stand-in too.
pub const GENERATOR: &str = "load generator and Novu stand-in (xtask)";

/// The processes shown one by one; the rest of the platform (the three idle workers) is
/// summed.
const NAMED: [&str; 5] = ["notify-api", "outbox-relay", "novu-worker", "postgres", "rabbitmq (beam.smp)"];

/// The targets, on this 2-core machine with everything on it.
const TARGET_ACCEPT_TO_SENT_P99_MS_AT_8: f64 = 50.0;
const TARGET_INTAKE_PER_S_AT_64: f64 = 2_000.0;
const TARGET_PLATFORM_CPU_S_PER_1000: f64 = 0.3;

/// What one concurrency did.
pub struct PeerPoint {
    pub concurrency: usize,
    /// How long the closed loop ran.
    pub secs: u64,
    pub load: load::LoadResult,
    pub delivered: Delivered,
    /// CPU seconds by process from the first request until the last delivery was recorded.
    pub cpu: BTreeMap<String, f64>,
}

impl PeerPoint {
    fn per_1000(&self, cpu_s: f64) -> f64 {
        cpu_s / (self.load.accepted as f64 / 1000.0).max(1e-9)
    }

    /// The platform's CPU: every process but the load generator.
    fn platform_cpu_s(&self) -> f64 {
        self.cpu.iter().filter(|(name, _)| name.as_str() != GENERATOR).map(|(_, s)| s).sum()
    }

    fn other_workers_cpu_s(&self) -> f64 {
        let counted = |name: &str| NAMED.contains(&name) || name == GENERATOR;
        self.cpu.iter().filter(|(name, _)| !counted(name)).map(|(_, s)| s).sum()
    }
}

impl Bench {
    pub(super) async fn measure_peer(&self, stand_in: &NovuStandIn) -> anyhow::Result<Vec<PeerPoint>> {
        let client = services::http_client()?;
        dev::wait_healthy(&client, &self.stack.api).await?;
        let max_concurrency = CONCURRENCY.into_iter().max().unwrap_or(1);
        let target = Target::new(&self.stack.api, &self.api_key, max_concurrency * 2)?;
        let phase = Duration::from_secs(self.plan.peer_secs);

        // Opens the generator's connections and warms the stack up; not measured.
        say!("peer shape: warm-up, {max_concurrency} in flight, 1s");
        let warm_up = load::closed_loop(
            &target,
            "bench.peer.warmup",
            max_concurrency,
            Body::Peer,
            Stop::After(Duration::from_secs(1)),
            None,
        )
        .await;
        let mut expected = warm_up.accepted;
        self.drain(|| stand_in.triggers(), expected, "the peer warm-up").await?;

        let mut points = Vec::new();
        for concurrency in CONCURRENCY {
            let kind = format!("bench.peer.c{concurrency}");
            say!("peer shape: single POSTs of ~300 B to Novu, {concurrency} in flight, {}s", phase.as_secs());
            let cpu0 = self.sampler.cpu();
            let load = load::closed_loop(&target, &kind, concurrency, Body::Peer, Stop::After(phase), None).await;
            expected += load.accepted;
            // Each point starts on an empty pipeline, and its CPU covers its own deliveries.
            self.drain(|| stand_in.triggers(), expected, &kind).await?;
            let cpu = self.sampler.cpu().since(&cpu0);
            let delivered = self.delivered(&kind).await?;
            say!(
                "  {} accepted/s ({} errors{}); accept p50 {} / p99 {} ms; accept-to-sent p50 {} / p99 {} ms",
                num(load.rate()),
                load.errors,
                load.first_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                num(load.ms(0.5)),
                num(load.ms(0.99)),
                num(delivered.p50_ms),
                num(delivered.p99_ms)
            );
            points.push(PeerPoint { concurrency, secs: phase.as_secs(), load, delivered, cpu });
        }
        Ok(points)
    }
}

/// The single-row commit ceiling for `clients`: the case measured with the fewest clients
/// at least as many (bench-limits measures 1, 16 and 64), else the one with the most.
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

pub(super) fn rows(points: &[PeerPoint], c: &Ceilings) -> Vec<Row> {
    let mut rows = Vec::new();
    for p in points {
        let n = p.concurrency;
        let rate = p.load.rate();
        let errors = match p.load.errors {
            0 => String::new(),
            e => format!(" ({e} errors)"),
        };
        let mut intake = Row::new(
            "peer shape",
            format!(
                "c={n}: single `POST /v1/notifications` (~300 B, one subscriber, novu channel over HTTP to a local \
                 Novu stand-in), closed loop {}s: accepted/s",
                p.secs
            ),
            format!("{}/s{errors}", num(rate)),
        )
        .against(rate, [c.get("http_json_post_axum_c64"), pg_commit_ceiling(c, n)]);
        if n == 64 {
            intake = intake.target(target("≥ 2,000/s", rate >= TARGET_INTAKE_PER_S_AT_64));
        }
        rows.push(intake);

        rows.push(Row::new(
            "peer shape",
            format!("c={n}: accept latency p50 / p99 (client side)"),
            format!("{} / {} ms", num(p.load.ms(0.5)), num(p.load.ms(0.99))),
        ));

        let d = &p.delivered;
        let not_sent = match d.not_sent {
            0 => String::new(),
            k => format!(" ({k} not sent)"),
        };
        let mut latency = Row::new(
            "peer shape",
            format!("c={n}: accept-to-sent p50 / p99 (database: `sent_at - created_at`)"),
            format!("{} / {} ms{not_sent}", num(d.p50_ms), num(d.p99_ms)),
        );
        if n == 8 {
            latency = latency.target(target("p99 < 50 ms", d.p99_ms < TARGET_ACCEPT_TO_SENT_P99_MS_AT_8));
        }
        rows.push(latency);

        let platform = p.per_1000(p.platform_cpu_s());
        rows.push(
            Row::new(
                "peer shape",
                format!(
                    "c={n}: CPU s per 1,000 notifications, the platform end to end (its six processes, PostgreSQL, \
                     RabbitMQ)"
                ),
                format!("{} s", num(platform)),
            )
            .target(target("≤ 0.3 s", platform <= TARGET_PLATFORM_CPU_S_PER_1000)),
        );

        let mut by_process: Vec<String> =
            NAMED.iter().filter_map(|name| Some(format!("{name} {}", num(p.per_1000(*p.cpu.get(*name)?))))).collect();
        by_process.push(format!("email, sms and whatsapp workers (idle) {}", num(p.per_1000(p.other_workers_cpu_s()))));
        let generator = p
            .cpu
            .get(GENERATOR)
            .map_or(String::new(), |s| format!("; not the platform's: {GENERATOR} {}", num(p.per_1000(*s))));
        rows.push(Row::new(
            "peer shape",
            format!("c={n}: CPU s per 1,000 notifications by process"),
            format!("{}{generator}", by_process.join(", ")),
        ));
    }
    rows
}

pub(super) fn json(points: &[PeerPoint]) -> Value {
    json!(points
        .iter()
        .map(|p| {
            let per_1000: BTreeMap<&String, f64> = p.cpu.iter().map(|(k, s)| (k, p.per_1000(*s))).collect();
            json!({
                "concurrency": p.concurrency, "accepted": p.load.accepted, "accepted_per_s": p.load.rate(),
                "errors": p.load.errors, "first_error": p.load.first_error,
                "accept_p50_ms": p.load.ms(0.5), "accept_p99_ms": p.load.ms(0.99),
                "sent": p.delivered.sent, "not_sent": p.delivered.not_sent,
                "accept_to_sent_p50_ms": p.delivered.p50_ms, "accept_to_sent_p99_ms": p.delivered.p99_ms,
                "cpu_s": p.cpu, "cpu_s_per_1000": per_1000, "platform_cpu_s_per_1000": p.per_1000(p.platform_cpu_s()),
            })
        })
        .collect::<Vec<_>>())
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
