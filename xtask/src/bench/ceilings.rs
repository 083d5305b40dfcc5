//! This machine's ceilings: the fastest it does the shapes Notify is built from, with
//! nothing of Notify in the way, measured by the bench itself before the stack starts, so
//! each figure of the table is also a ratio to a ceiling of the same run (these machines
//! differ by up to 2x from day to day; ratios hold). The cases and their names are those
//! of the team's first measurement, whose medians are kept here as the reference
//! ([`REFERENCE`]): a run whose ceilings are within 20 % of them ran on a machine as fast
//! as that day's.
//!
//! - `pg_insert_1row_cN`: one outbox-shaped row (uuid key, tenant, channel, priority,
//!   jsonb of about 300 B, due time, an index on priority and due time) per transaction
//!   by N connections, prepared statements: the commit rate, txn/s.
//! - `pg_insert_100rows_cN`: 100 such rows per transaction: the row rate once commits
//!   are grouped, rows/s.
//! - `amqp_publish_confirmed_pipelined`: persistent 512 B messages to a durable quorum
//!   queue with publisher confirms, up to 1,000 unconfirmed; `amqp_consume_ack`: the same
//!   messages consumed and acked one by one, prefetch 200 (msg/s).
//! - `http_json_post_axum_c64`: axum parsing a JSON body of 120 B and answering 202, on a
//!   thread of its own, under the bench's load generator with 64 connections (req/s).
//!
//! PostgreSQL's cases run in a schema of their own in the maintenance database,
//! RabbitMQ's in a vhost of their own; both are dropped afterwards.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};

use super::{
    load::{self, Body, Stop},
    threads,
};
use crate::{
    say,
    services::{self, Endpoints, RabbitApi},
};

/// The medians of 2026-11-25: 3 runs of 10 s each, PostgreSQL 15 (fsync and
/// synchronous_commit on, fdatasync, shared_buffers 128 MB), RabbitMQ 3.10, 2 cores,
/// measured then with pgbench, wrk and a probe of lapin and axum.
pub const REFERENCE: [(&str, f64, &str); 8] = [
    ("pg_insert_1row_c1", 5_100.4, "txn/s"),
    ("pg_insert_1row_c16", 18_278.5, "txn/s"),
    ("pg_insert_1row_c64", 19_631.4, "txn/s"),
    ("pg_insert_100rows_c1", 95_514.4, "rows/s"),
    ("pg_insert_100rows_c16", 148_620.2, "rows/s"),
    ("amqp_publish_confirmed_pipelined", 33_308.0, "msg/s"),
    ("amqp_consume_ack", 27_723.3, "msg/s"),
    ("http_json_post_axum_c64", 108_593.4, "req/s"),
];
pub const REFERENCE_DATE: &str = "2026-11-25";

/// A ceiling: its case name, value and unit.
#[derive(Clone, Debug)]
pub struct Ceiling {
    pub case: String,
    pub value: f64,
    pub unit: String,
}

/// The ceilings of this run, and where they come from.
#[derive(Clone, Debug)]
pub struct Ceilings {
    pub cases: BTreeMap<String, Ceiling>,
    /// For the reader.
    pub source: String,
    pub measured: bool,
}

impl Ceilings {
    pub fn get(&self, case: &str) -> Option<Ceiling> {
        self.cases.get(case).cloned()
    }

    /// A derived ceiling: `case` divided by `by`, named for what it means.
    pub fn divided(&self, case: &str, by: f64, unit: &str) -> Option<Ceiling> {
        let c = self.get(case)?;
        Some(Ceiling { case: format!("{case} / {by}"), value: c.value / by, unit: unit.into() })
    }

    /// The reference medians themselves (`--no-limits`), marked as not measured.
    pub fn reference() -> Self {
        let cases = REFERENCE
            .iter()
            .map(|(case, value, unit)| {
                (case.to_string(), Ceiling { case: case.to_string(), value: *value, unit: unit.to_string() })
            })
            .collect();
        let source = format!("NOT measured in this run (--no-limits): the reference medians of {REFERENCE_DATE}");
        Self { cases, source, measured: false }
    }

    /// The reference median of `case`, as a ceiling named for its date.
    pub fn reference_of(case: &str) -> Option<Ceiling> {
        let (_, value, unit) = REFERENCE.iter().find(|(name, ..)| *name == case)?;
        Some(Ceiling { case: format!("{case}, {REFERENCE_DATE}"), value: *value, unit: unit.to_string() })
    }
}

/// How long each case runs: seconds for the timed cases, messages for RabbitMQ's.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub secs: f64,
    pub messages: u64,
}

const SCHEMA: &str = "notify_bench_ceilings";
const VHOST: &str = "notify-bench-ceilings";
const QUEUE: &str = "ceilings";

/// Measures every case; one that fails is left out of the table, with a word on stderr.
pub async fn measure(endpoints: &Endpoints, budget: Budget, source: String) -> Ceilings {
    let started = Instant::now();
    let mut cases = BTreeMap::new();
    let mut add = |case: &str, value: anyhow::Result<f64>, unit: &str| match value {
        Ok(value) => {
            say!("  {case}: {} {unit}", super::report::num(value));
            cases.insert(case.to_owned(), Ceiling { case: case.to_owned(), value, unit: unit.into() });
        }
        Err(e) => say!("  {case}: not measured: {e:#}"),
    };
    say!("ceilings: PostgreSQL, {}s per case", budget.secs);
    match postgres_schema(&endpoints.database_url, "CREATE").await {
        Ok(()) => {
            for clients in [1, 16, 64] {
                let rate = pg_inserts(&endpoints.database_url, clients, 1, budget.secs).await;
                add(&format!("pg_insert_1row_c{clients}"), rate, "txn/s");
            }
            for clients in [1, 16] {
                let rate = pg_inserts(&endpoints.database_url, clients, 100, budget.secs).await;
                add(&format!("pg_insert_100rows_c{clients}"), rate, "rows/s");
            }
        }
        Err(e) => say!("  PostgreSQL's ceilings not measured: {e:#}"),
    }
    if let Err(e) = postgres_schema(&endpoints.database_url, "DROP").await {
        say!("  could not drop schema {SCHEMA}: {e:#}");
    }

    say!("ceilings: RabbitMQ, {} messages", budget.messages);
    match rabbitmq(endpoints, budget.messages).await {
        Ok((publish, consume)) => {
            add("amqp_publish_confirmed_pipelined", Ok(publish), "msg/s");
            add("amqp_consume_ack", Ok(consume), "msg/s");
        }
        Err(e) => say!("  RabbitMQ's ceilings not measured: {e:#}"),
    }

    say!("ceilings: HTTP, {}s", budget.secs);
    add("http_json_post_axum_c64", http_json_post(budget.secs).await, "req/s");
    say!("ceilings measured in {:.0}s", started.elapsed().as_secs_f64());
    Ceilings { cases, source, measured: true }
}

/// Creates (dropping any left over) or drops the scratch schema.
async fn postgres_schema(url: &str, what: &str) -> anyhow::Result<()> {
    let mut db = services::connect_postgres(url).await?;
    let drop = format!("SET client_min_messages = warning; DROP SCHEMA IF EXISTS {SCHEMA} CASCADE");
    sqlx::raw_sql(&drop).execute(&mut db).await?;
    if what == "CREATE" {
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA {SCHEMA};
             CREATE TABLE {SCHEMA}.outbox (
                 id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                 tenant_id    text        NOT NULL,
                 channel      text        NOT NULL,
                 priority     smallint    NOT NULL DEFAULT 1,
                 payload      jsonb       NOT NULL,
                 available_at timestamptz NOT NULL DEFAULT now(),
                 created_at   timestamptz NOT NULL DEFAULT now()
             );
             CREATE INDEX outbox_due ON {SCHEMA}.outbox (priority DESC, available_at);"
        ))
        .execute(&mut db)
        .await?;
    }
    Ok(())
}

/// `clients` connections inserting `rows` rows per transaction for `secs`: rows/s (for
/// one row, transactions/s).
async fn pg_inserts(url: &str, clients: usize, rows: u32, secs: f64) -> anyhow::Result<f64> {
    let sql = format!(
        "INSERT INTO {SCHEMA}.outbox (tenant_id, channel, payload)
         SELECT 'tenant-1', 'email', jsonb_build_object('to', 'user' || ($1::bigint + g) || '@example.com',
                'subject', 'Your order has shipped', 'body', repeat('x', 200))
         FROM generate_series(1, {rows}) AS g"
    );
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(services::connect_postgres(url).await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(client, mut db)| {
            let sql = sql.clone();
            tokio::spawn(async move {
                let mut done = 0i64;
                while Instant::now() < deadline {
                    sqlx::query(&sql).bind(((client as i64) << 40) + done * 1000).execute(&mut db).await?;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut transactions = 0;
    for task in tasks {
        transactions += task.await??;
    }
    Ok(transactions as f64 * f64::from(rows) / started.elapsed().as_secs_f64())
}

/// Publishes `count` messages with confirms, pipelined, then consumes and acks them:
/// (published/s, consumed/s).
async fn rabbitmq(endpoints: &Endpoints, count: u64) -> anyhow::Result<(f64, f64)> {
    let api = RabbitApi::new(&endpoints.rabbitmq_api)?;
    api.ensure().await?;
    api.delete_vhost(VHOST).await?;
    api.create_vhost(VHOST).await?;
    let url = format!("{}/{}", endpoints.amqp_url.trim_end_matches('/'), services::percent_encode(VHOST));
    let rates = publish_and_consume(&url, count).await;
    if let Err(e) = api.delete_vhost(VHOST).await {
        say!("  could not delete vhost {VHOST}: {e:#}");
    }
    rates
}

async fn publish_and_consume(url: &str, count: u64) -> anyhow::Result<(f64, f64)> {
    const WINDOW: usize = 1_000;
    let conn = Connection::connect(url, ConnectionProperties::default()).await.context("connecting to RabbitMQ")?;
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    ch.queue_declare(QUEUE.into(), QueueDeclareOptions::durable(), args).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let payload = vec![b'x'; 512];
    let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());

    let acked = |confirm: Option<lapin::Result<lapin::Confirmation>>| match confirm {
        Some(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
        Some(Ok(_)) => bail!("the broker nacked a message"),
        Some(Err(e)) => Err(e.into()),
        None => Ok(()),
    };
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for _ in 0..count {
        if in_flight.len() >= WINDOW {
            acked(in_flight.next().await)?;
        }
        let publish =
            ch.basic_publish("".into(), QUEUE.into(), BasicPublishOptions::default(), &payload, props.clone());
        in_flight.push(publish.await?);
    }
    while !in_flight.is_empty() {
        acked(in_flight.next().await)?;
    }
    let published = count as f64 / started.elapsed().as_secs_f64();

    ch.basic_qos(200, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(QUEUE.into(), "ceilings".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let started = Instant::now();
    for _ in 0..count {
        let delivery = consumer.next().await.context("the consumer was cancelled")??;
        delivery.ack(BasicAckOptions::default()).await?;
    }
    let consumed = count as f64 / started.elapsed().as_secs_f64();
    conn.close(200, "done".into()).await?;
    Ok((published, consumed))
}

/// What the HTTP ceiling posts: the body the reference measurement posted.
const HTTP_BODY: &str = r#"{"type":"order_shipped","recipient":{"email":"ana@example.com"},"payload":{"order":"991"},"idempotency_key":"evt-7781"}"#;

/// The cheapest JSON intake: axum parsing the body and answering 202 with an id, on a
/// thread of its own, loaded by the bench's generator with 64 connections for `secs`.
async fn http_json_post(secs: f64) -> anyhow::Result<f64> {
    use axum::{Json, Router, http::StatusCode, routing::post};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let target = load::Target::new(&format!("http://{}", listener.local_addr()?), "ceiling")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = threads::spawn("ceiling-http", move || async move {
        let app = Router::new().route(
            "/v1/notifications",
            post(|Json(body): Json<serde_json::Value>| async move {
                let answer = serde_json::json!({"id": body.get("idempotency_key"), "status": "accepted"});
                (StatusCode::ACCEPTED, Json(answer))
            }),
        );
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, app).with_graceful_shutdown(async { _ = stopped.await }).await
    })
    .await?;
    let stop_after = Stop::After(Duration::from_secs_f64(secs));
    let load = load::closed_loop(&target, "ceiling", 64, Body::Fixed(HTTP_BODY), stop_after, None).await;
    let _ = stop.send(());
    server.join().await.0.context("the ceiling's HTTP server")?;
    let load = load?;
    if load.errors > 0 {
        bail!("{} errors, the first: {}", load.errors, load.first_error.unwrap_or_default());
    }
    Ok(load.rate())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_names_every_case_once() {
        let reference = Ceilings::reference();
        assert_eq!(reference.cases.len(), REFERENCE.len());
        assert_eq!(reference.get("amqp_consume_ack").map(|c| c.value), Some(27_723.3));
        let c64 = Ceilings::reference_of("pg_insert_1row_c64").unwrap();
        assert_eq!((c64.value, c64.unit.as_str()), (19_631.4, "txn/s"));
        assert!(c64.case.contains(REFERENCE_DATE));
        assert!(Ceilings::reference_of("pg_claim_delete_100_c2").is_none());
    }

    #[tokio::test]
    async fn measures_an_axum_json_post() {
        let rate = http_json_post(0.2).await.unwrap();
        assert!(rate > 100.0, "{rate} req/s");
    }
}
