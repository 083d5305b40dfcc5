//! `cargo xtask bench`: the real stack (release binaries, eight processes, this machine's
//! PostgreSQL and RabbitMQ, sandbox providers but for the peer shape) under load from our
//! own generator, and one table of what it did, each figure next to this machine's
//! ceiling for the same shape (`ceilings.rs`, measured in the same run) and, for the peer
//! shape, issue 21's targets. Written to `target/bench/latest.{md,json}` (and a dated
//! copy).
//!
//! Phases, in order: the ceilings (before the stack starts); the peer shape (`peer.rs`:
//! a fixed count of single ~300 B requests at 4, 8 and 64 in flight, delivered over HTTP
//! to a Novu stand-in), then its round trips and commits per notification on the stack
//! started again behind a counting PostgreSQL proxy (`pg_proxy.rs`); then the stack again
//! on the sandbox providers: idle memory; intake with single requests (closed loop, 64 in
//! flight) and with batches of 1,000; end to end, a burst of 100,000 notifications across
//! the six queued channels, delivered/s from the database; open loop at 50 % and 100 % of that
//! rate, accept-to-sent latency from the database (`deliveries.sent_at -
//! notifications.created_at`); then, for each `--history` size, the tables filled with
//! that many sent notifications, intake and relay again; webhooks, a burst whose every sent
//! delivery's event goes to one endpoint at a receiver in the bench; last, a push broadcast to a topic of
//! members with two FCM devices each, through the tenant's FCM integration at an FCM stand-in
//! (`fcm.rs`). Nothing is asserted: it measures.

mod ceilings;
mod client;
mod fcm;
mod load;
mod novu;
mod peer;
mod pg_proxy;
mod report;
mod resources;
mod stack;
mod threads;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;
use sqlx::PgConnection;

use self::{
    ceilings::{Budget, Ceilings},
    fcm::FcmStandIn,
    load::{Body, Stop, Target},
    novu::NovuStandIn,
    report::{Report, Row, num},
    resources::{Sampler, Watched, Who},
    stack::{SandboxCounter, Stack, Tuning},
};
use crate::{
    dev::{self, STOP_GRACE, Tenant},
    procs::{Signals, Supervisor},
    receiver::{self, Receiver},
    say,
    services::{self, Endpoints, RabbitApi},
    workspace_root,
};

pub struct Options {
    pub smoke: bool,
    /// Sizes of history to measure intake and relay with, in order.
    pub history: Option<Vec<u64>>,
    /// Skip measuring the ceilings (use the reference medians, marked as such).
    pub no_limits: bool,
    /// `--only peer`: the peer shape alone (the ceilings too, unless `--no-limits`).
    pub only_peer: bool,
    /// Notifications per concurrency of the peer shape, instead of the plan's.
    pub peer_count: Option<u64>,
    /// Members of the push broadcast's topic, instead of the plan's.
    pub broadcast_members: Option<u64>,
    /// Prebuilt release binaries to run instead of building this checkout's.
    pub bin_dir: Option<PathBuf>,
}

/// How much of everything: the full run, or the smoke run that only keeps the benchmark
/// from rotting.
#[derive(Clone)]
struct Plan {
    ceilings: Budget,
    /// Notifications per concurrency of the peer shape.
    peer_count: u64,
    /// Notifications of the round-trip phase.
    round_trip_count: u64,
    intake_secs: u64,
    concurrency: usize,
    batch_concurrency: usize,
    batch_size: u64,
    e2e_notifications: u64,
    open_loop_secs: u64,
    history: Vec<u64>,
    history_intake_secs: u64,
    relay_backlog: u64,
    drain_deadline: Duration,
    /// Members of the push broadcast's topic (two devices each).
    broadcast_members: u64,
    /// Notifications of the webhooks phase.
    webhook_notifications: u64,
}

impl Plan {
    fn new(options: &Options) -> Self {
        let default_history = if options.smoke { vec![0, 10_000] } else { vec![0, 1_000_000] };
        let history = options.history.clone().unwrap_or(default_history);
        if options.smoke {
            Plan {
                ceilings: Budget { secs: 0.3, messages: 1_000 },
                peer_count: options.peer_count.unwrap_or(200),
                round_trip_count: 100,
                intake_secs: 2,
                concurrency: 64,
                batch_concurrency: 2,
                batch_size: 1000,
                e2e_notifications: 2_000,
                open_loop_secs: 2,
                history,
                history_intake_secs: 1,
                relay_backlog: 2_000,
                drain_deadline: Duration::from_secs(60),
                broadcast_members: options.broadcast_members.unwrap_or(1_000),
                webhook_notifications: 2_000,
            }
        } else {
            Plan {
                ceilings: Budget { secs: 3.0, messages: 20_000 },
                peer_count: options.peer_count.unwrap_or(20_000),
                round_trip_count: 2_000,
                intake_secs: 10,
                concurrency: 64,
                batch_concurrency: 2,
                batch_size: 1000,
                e2e_notifications: 100_000,
                open_loop_secs: 20,
                history,
                history_intake_secs: 5,
                relay_backlog: 20_000,
                drain_deadline: Duration::from_secs(900),
                broadcast_members: options.broadcast_members.unwrap_or(10_000),
                webhook_notifications: 100_000,
            }
        }
    }
}

/// The push broadcast's topic.
const BROADCAST_TOPIC: &str = "bench-push-broadcast";

/// The push audience, set-based, before the phases: `$2` subscribers `push-<n>` in the
/// broadcast's topic, each with an FCM device (`phone-1`) whose token has the shape and
/// length of a real one; the burst's push share goes to the first `load::PUSH_AUDIENCE`.
const PUSH_AUDIENCE_SQL: [&str; 3] = [
    "INSERT INTO subscribers (tenant_id, id) SELECT $1::uuid, 'push-' || g FROM generate_series(1, $2) g",
    "INSERT INTO topic_members (tenant_id, topic, subscriber_id)
     SELECT $1::uuid, 'bench-push-broadcast', 'push-' || g FROM generate_series(1, $2) g",
    DEVICE_SQL_1,
];
const DEVICE_SQL_1: &str = "INSERT INTO devices (tenant_id, subscriber_id, device_id, platform, token, token_hash)
     SELECT $1::uuid, 'push-' || g, 'phone-1', 'fcm', t.token, sha256(convert_to('fcm:' || t.token, 'UTF8'))
     FROM generate_series(1, $2) g,
          LATERAL (SELECT 'bench' || lpad(g::text, 8, '0') || '1:APA91b' || repeat('Xy_-', 34) AS token) t";
/// The broadcast's second device per member (`phone-2`).
const DEVICE_SQL_2: &str = "INSERT INTO devices (tenant_id, subscriber_id, device_id, platform, token, token_hash)
     SELECT $1::uuid, 'push-' || g, 'phone-2', 'fcm', t.token, sha256(convert_to('fcm:' || t.token, 'UTF8'))
     FROM generate_series(1, $2) g,
          LATERAL (SELECT 'bench' || lpad(g::text, 8, '0') || '2:APA91b' || repeat('Xy_-', 34) AS token) t";

/// A service-account JSON as Google issues it, with an RSA key made for the run (by the
/// `openssl` command) and the stand-in as its token URI.
async fn service_account(base_url: &str) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .await
        .context("running openssl genpkey for the broadcast's service account")?;
    if !output.status.success() {
        bail!("openssl genpkey: {}", String::from_utf8_lossy(&output.stderr));
    }
    let key = String::from_utf8(output.stdout).context("openssl's PEM")?;
    Ok(json!({
        "type": "service_account",
        "project_id": "bench-project",
        "private_key_id": "bench-key-1",
        "private_key": key,
        "client_email": "notify@bench-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": format!("{base_url}/token"),
    })
    .to_string())
}

/// How long the release build took, from a debug build that handed the run over.
const BUILD_SECS_ENV: &str = "XTASK_BENCH_BUILD_SECS";

/// `args`: the task's arguments as given, for [`hand_over`].
pub async fn run(options: Options, args: &[String]) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    if cfg!(debug_assertions) {
        return hand_over(&root, &options, args).await;
    }
    let run_started = Instant::now();
    let plan = Plan::new(&options);
    let endpoints = Endpoints::defaults();
    services::ensure_services(&endpoints).await?;

    let (build, bin_dir) = match &options.bin_dir {
        Some(dir) => {
            for binary in dev::BINARIES {
                let path = dir.join(binary);
                if !path.is_file() {
                    bail!("--bin-dir: no {}", path.display());
                }
            }
            let build = std::env::var(BUILD_SECS_ENV).ok().and_then(|s| s.parse().ok()).map(Duration::from_secs_f64);
            (build, std::path::absolute(dir)?)
        }
        None => (Some(dev::build(&root, true).await?), dev::target_dir(&root)?.join("release")),
    };
    let dir = root.join("target").join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let ceilings = if options.no_limits {
        Ceilings::reference()
    } else {
        let source = if options.smoke {
            format!(
                "measured in this run, briefly (--smoke: {}s per case, {} messages): these figures mean little",
                plan.ceilings.secs, plan.ceilings.messages
            )
        } else {
            format!(
                "measured in this run by the bench itself ({}s per case, {} messages)",
                plan.ceilings.secs,
                num(plan.ceilings.messages as f64)
            )
        };
        ceilings::measure(&endpoints, plan.ceilings, source).await
    };

    let tuning = Tuning { worker_prefetch: 256, relay_batch_size: 1000, rust_log: "warn".into() };
    let stack = Stack::new(&endpoints, bin_dir.clone(), dir.clone(), tuning.clone())?;
    let tenant = stack.prepare(&endpoints).await?;
    let machine = machine(&endpoints).await;

    if tokio::net::TcpStream::connect(stack::API_LISTEN).await.is_ok() {
        bail!("something already listens on {} (another `cargo xtask bench`?)", stack::API_LISTEN);
    }
    let mut signals = Signals::install()?;
    // The peer shape first, on fresh tables, with the novu-worker sending to the stand-in;
    // then its round trips, through the proxy; then the stack again, sandbox everywhere,
    // for the other phases.
    let stand_in = NovuStandIn::start().await?;
    let peer_stack = stack.with_novu(stand_in.worker_env());
    let (peer, peer_clean) =
        on_stack(&peer_stack, &tenant, &plan, &mut signals, peer::watched(&stand_in), async |bench: &Bench| {
            bench.measure_peer(&stand_in).await
        })
        .await;
    let (round_trips, round_trips_clean) = if peer.is_err() {
        (Ok(None), true)
    } else {
        let (measured, clean) =
            peer::round_trips(&peer_stack, &tenant, &plan, &mut signals, &endpoints.database_url, &stand_in).await;
        (measured.map(Some), clean)
    };
    let (main, main_clean) = if peer.is_err() || round_trips.is_err() || options.only_peer {
        (Ok(None), true)
    } else {
        let fcm = FcmStandIn::start().await?;
        let xtask = vec![
            Watched { name: "load generator (xtask)".into(), who: Who::Pid(std::process::id()) },
            Watched { name: "FCM stand-in (xtask thread)".into(), who: Who::Thread(fcm.tid) },
        ];
        // Tenants' FCM clients go to the stand-in (the operator's stand-in rule).
        let main_stack = stack.with_env(vec![
            ("NOTIFY_INTEGRATIONS__BASE_URLS__FCM", fcm.base_url.clone()),
            ("NO_PROXY", "127.0.0.1,localhost".into()),
        ]);
        on_stack(&main_stack, &tenant, &plan, &mut signals, xtask, async |bench: &Bench| {
            bench.measure(&fcm).await.map(Some)
        })
        .await
    };
    let clean = peer_clean && round_trips_clean && main_clean;
    if let Err(e) = RabbitApi::new(&endpoints.rabbitmq_api)?.delete_vhost(stack::VHOST).await {
        say!("could not delete vhost {}: {e:#}", stack::VHOST);
    }
    let measured = Measured { peer: peer?, round_trips: round_trips?, main: main? };

    let binaries = match build {
        Some(secs) => format!("release build of this checkout ({:.0}s)", secs.as_secs_f64()),
        None => format!("prebuilt, from {} (--bin-dir)", bin_dir.display()),
    };
    let report =
        context_report(measured, &options, &tuning, &ceilings, machine, binaries, run_started.elapsed(), clean);
    let stem = time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!("[year][month][day]-[hour][minute][second]"))
        .unwrap_or_else(|_| "run".into());
    let stem = if options.smoke { format!("smoke-{stem}") } else { format!("bench-{stem}") };
    report.write(&dir, &stem)?;
    println!("{}", report.markdown());
    say!("wrote {}/{stem}.md and .json (and latest.md, latest.json)", dir.display());
    if !clean {
        say!("a process did not stop cleanly on SIGTERM (see target/bench/logs/)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask` runs a debug build of this task, but the bench's own side (the load
/// generator, the Novu stand-in, the ceilings, the proxy) must run optimized, as the
/// platform does: unoptimized it takes several times the CPU the platform then lacks, and
/// measures ceilings a fraction of the machine's. So a debug build builds the release one
/// (with the eight binaries, as `cargo build --release --bins` does; alone under
/// `--bin-dir`, with the workspace's features so that nothing is compiled twice) and hands
/// the run over to it.
async fn hand_over(root: &std::path::Path, options: &Options, args: &[String]) -> anyhow::Result<ExitCode> {
    let release = dev::target_dir(root)?.join("release");
    let mut command = tokio::process::Command::new(release.join("xtask"));
    command.arg("bench").args(args);
    if options.bin_dir.is_none() {
        let build = dev::build(root, true).await?;
        command.arg("--bin-dir").arg(&release).env(BUILD_SECS_ENV, build.as_secs_f64().to_string());
    } else {
        let mut build = tokio::process::Command::new(crate::cargo());
        build.args(["build", "--release", "--workspace", "--bin", "xtask"]).current_dir(root);
        say!("building the bench itself: cargo build --release --workspace --bin xtask");
        dev::run_step(build, "cargo build --release --workspace --bin xtask").await?;
    }
    // Ctrl-C reaches both processes: the release one stops its stack, this one waits for it.
    let _signals = Signals::install()?;
    let status = command.status().await.context("running the bench's release build")?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Starts the binaries, runs `phases` on them (failing if a signal comes or one of
/// them exits meanwhile), then stops them. The sampler watches the binaries, PostgreSQL,
/// RabbitMQ and `xtask` (this process, or its threads). Returns what the phases measured,
/// and whether every binary stopped cleanly.
async fn on_stack<T>(
    stack: &Stack,
    tenant: &Tenant,
    plan: &Plan,
    signals: &mut Signals,
    xtask: Vec<Watched>,
    phases: impl AsyncFnOnce(&Bench) -> anyhow::Result<T>,
) -> (anyhow::Result<T>, bool) {
    let mut supervisor = Supervisor::new();
    if let Err(e) = stack.start(&mut supervisor) {
        supervisor.stop(STOP_GRACE).await;
        return (Err(e), false);
    }
    let mut watched: Vec<Watched> =
        supervisor.pids().into_iter().map(|(name, pid)| Watched { name, who: Who::Pid(pid) }).collect();
    watched.push(Watched { name: "postgres".into(), who: Who::Postgres { database: stack::DATABASE } });
    watched.push(Watched { name: "rabbitmq (beam.smp)".into(), who: Who::Comm("beam.smp") });
    watched.extend(xtask);
    let sampler = Sampler::start(watched, Duration::from_millis(500));

    let bench = Bench {
        plan: plan.clone(),
        stack: stack.clone(),
        tenant_id: tenant.id.clone(),
        api_key: tenant.api_key.clone(),
        sampler,
    };
    let outcome = tokio::select! {
        result = phases(&bench) => result,
        name = signals.recv() => Err(anyhow::anyhow!("{name} received: benchmark interrupted")),
        exit = supervisor.next_exit() => Err(anyhow::anyhow!(
            "{} exited during the benchmark ({}); see target/bench/logs/",
            exit.name,
            exit.status.map_or_else(|e| e.to_string(), |s| crate::procs::describe(&s))
        )),
    };
    (outcome, supervisor.stop(STOP_GRACE).await)
}

struct Machine {
    cores: usize,
    memory_gib: f64,
    kernel: String,
    postgres: String,
    rabbitmq: String,
}

async fn machine(endpoints: &Endpoints) -> Machine {
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let postgres = match services::connect_postgres(&endpoints.database_url).await {
        Ok(mut conn) => {
            let q = "SELECT current_setting('server_version') || ' (shared_buffers ' || current_setting('shared_buffers') \
                     || ', synchronous_commit ' || current_setting('synchronous_commit') || ', max_connections ' \
                     || current_setting('max_connections') || ')'";
            sqlx::query_scalar::<_, String>(q).fetch_one(&mut conn).await.unwrap_or_default()
        }
        Err(_) => "unknown".into(),
    };
    let rabbitmq = match RabbitApi::new(&endpoints.rabbitmq_api) {
        Ok(api) => api
            .overview()
            .await
            .ok()
            .and_then(|o| {
                Some(format!("{} (Erlang {})", o["rabbitmq_version"].as_str()?, o["erlang_version"].as_str()?))
            })
            .unwrap_or_else(|| "unknown".into()),
        Err(_) => "unknown".into(),
    };
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib,
        kernel,
        postgres,
        rabbitmq,
    }
}

struct Bench {
    plan: Plan,
    stack: Stack,
    tenant_id: String,
    api_key: String,
    sampler: Sampler,
}

/// Accept-to-sent of one phase's deliveries, from the database.
#[derive(Debug, Default, Clone)]
struct Delivered {
    sent: i64,
    not_sent: i64,
    by_channel: BTreeMap<String, i64>,
    p50_ms: f64,
    p99_ms: f64,
    /// From the first notification's acceptance to the last delivery's send.
    span_secs: f64,
}

impl Delivered {
    fn rate(&self) -> f64 {
        self.sent as f64 / self.span_secs.max(1e-9)
    }
}

struct HistoryPoint {
    history: u64,
    fill_secs: f64,
    intake: f64,
    intake_p99_ms: f64,
    relay: f64,
    relay_note: Option<String>,
}

/// What the run measured: the peer shape and its round trips, and the other phases
/// unless `--only peer`.
struct Measured {
    peer: Vec<peer::PeerPoint>,
    round_trips: Option<peer::RoundTrips>,
    main: Option<Phases>,
}

/// What the phases after the peer shape measured.
struct Phases {
    single: load::LoadResult,
    batch: load::LoadResult,
    e2e_intake: load::LoadResult,
    e2e: Delivered,
    e2e_cpu: BTreeMap<String, f64>,
    e2e_wall_secs: f64,
    open: Vec<(f64, f64, u64, load::LoadResult, Delivered)>,
    single_cpu: BTreeMap<String, f64>,
    idle: BTreeMap<String, resources::Memory>,
    peak: BTreeMap<String, resources::Memory>,
    history: Vec<HistoryPoint>,
    sandbox_bytes: u64,
    webhooks: Webhooks,
    broadcast: Broadcast,
}

/// The webhooks phase: a burst whose every sent delivery's `delivery.sent` event goes to
/// one endpoint.
struct Webhooks {
    notifications: u64,
    /// Verified `delivery.sent` events of the phase's deliveries at the receiver.
    events: u64,
    /// Requests whose signature did not verify.
    unverified: u64,
    /// From the first request of the burst to the last event received.
    wall_secs: f64,
    /// From the event's write (its `timestamp`) to its arrival, ms.
    p50_ms: f64,
    p99_ms: f64,
    /// From the notification's acceptance to its event's arrival, ms.
    accept_p50_ms: f64,
    accept_p99_ms: f64,
    cpu: BTreeMap<String, f64>,
}

impl Webhooks {
    fn rate(&self) -> f64 {
        self.events as f64 / self.wall_secs.max(1e-9)
    }
}

/// The push broadcast through the FCM stand-in.
struct Broadcast {
    members: u64,
    accept_ms: f64,
    delivered: Delivered,
    grants: u64,
    /// CPU seconds per second of the broadcast, per process: where the machine's cores
    /// went while the deliveries went out.
    cpu: BTreeMap<String, f64>,
    /// From the accept to the first delivery sent, ms.
    first_sent_ms: f64,
}

impl Bench {
    async fn db(&self) -> anyhow::Result<PgConnection> {
        services::connect_postgres(&self.stack.database_url).await
    }

    async fn measure(&self, fcm: &FcmStandIn) -> anyhow::Result<Phases> {
        let client = services::http_client()?;
        dev::wait_healthy(&client, &self.stack.api).await?;
        let target = Target::new(&self.stack.api, &self.api_key)?;
        let mut counter = SandboxCounter::new(&self.stack.sandbox_dir());
        let mut expected = 0u64;
        let members = self.plan.broadcast_members.max(load::PUSH_AUDIENCE);
        let mut db = self.db().await?;
        for statement in PUSH_AUDIENCE_SQL {
            sqlx::query(statement)
                .bind(&self.tenant_id)
                .bind(members as i64)
                .execute(&mut db)
                .await
                .context("writing the push audience")?;
        }
        drop(db);

        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = self.sampler.memory();

        let p = &self.plan;
        say!("intake: single POSTs, {} in flight, {}s", p.concurrency, p.intake_secs);
        let cpu0 = self.sampler.cpu();
        let single = load::closed_loop(
            &target,
            "bench.intake.single",
            p.concurrency,
            Body::Single,
            Stop::After(Duration::from_secs(p.intake_secs)),
            None,
        )
        .await?;
        let single_cpu: BTreeMap<String, f64> =
            self.sampler.cpu().since(&cpu0).into_iter().map(|(k, v)| (k, v / single.elapsed.as_secs_f64())).collect();
        say!(
            "  {} accepted/s, {} errors {}",
            num(single.rate()),
            single.errors,
            single.first_error.as_deref().unwrap_or("")
        );
        expected += single.accepted;

        say!("intake: batches of {}, {} in flight, {}s", p.batch_size, p.batch_concurrency, p.intake_secs);
        let batch = load::closed_loop(
            &target,
            "bench.intake.batch",
            p.batch_concurrency,
            Body::Batch(p.batch_size),
            Stop::After(Duration::from_secs(p.intake_secs)),
            None,
        )
        .await?;
        say!(
            "  {} accepted/s, {} errors {}",
            num(batch.rate()),
            batch.errors,
            batch.first_error.as_deref().unwrap_or("")
        );
        expected += batch.accepted;
        self.drain(|| counter.lines(), expected, "the intake phases").await?;

        say!("end to end: {} notifications in batches, across the six channels", num(p.e2e_notifications as f64));
        let cpu0 = self.sampler.cpu();
        let t0 = Instant::now();
        let e2e_intake = load::closed_loop(
            &target,
            "bench.e2e.burst",
            p.batch_concurrency,
            Body::Batch(p.batch_size),
            Stop::Requests(p.e2e_notifications.div_ceil(p.batch_size)),
            None,
        )
        .await?;
        expected += e2e_intake.accepted;
        self.drain(|| counter.lines(), expected, "the end-to-end burst").await?;
        let e2e_wall_secs = t0.elapsed().as_secs_f64();
        let e2e_cpu = self.sampler.cpu().since(&cpu0);
        let e2e = self.delivered("bench.e2e.burst").await?;
        say!(
            "  {} delivered/s; accept-to-sent p50 {} ms, p99 {} ms",
            num(e2e.rate()),
            num(e2e.p50_ms),
            num(e2e.p99_ms)
        );

        let mut open = Vec::new();
        for share in [0.5, 1.0] {
            let rate = (e2e.rate() * share).max(1.0);
            let kind = format!("bench.e2e.open{}", (share * 100.0) as u32);
            say!("end to end: open loop at {} % of that, {}/s for {}s", share * 100.0, num(rate), p.open_loop_secs);
            // Single requests while single intake can carry the rate, else small batches at
            // about 100 requests/s, so that the rate, not the intake path, is what is tested.
            let per_request = if rate <= 0.8 * single.rate() { 1 } else { (rate / 100.0).ceil() as u64 };
            say!("  ({per_request} notifications per request)");
            let duration = Duration::from_secs(p.open_loop_secs);
            let result = load::open_loop(&target, &kind, rate, per_request, duration, 4096).await?;
            expected += result.accepted;
            self.drain(|| counter.lines(), expected, &kind).await?;
            let delivered = self.delivered(&kind).await?;
            say!(
                "  accepted {}/s ({} dropped by the generator); accept-to-sent p50 {} ms, p99 {} ms",
                num(result.rate()),
                result.dropped,
                num(delivered.p50_ms),
                num(delivered.p99_ms)
            );
            open.push((share, rate, per_request, result, delivered));
        }

        let mut history = Vec::new();
        let mut filled = 0u64;
        for &size in &p.history {
            let started = Instant::now();
            if size > filled {
                self.fill_history(filled, size).await?;
                filled = size;
            }
            let fill_secs = started.elapsed().as_secs_f64();
            let kind = format!("bench.history{size}.intake");
            say!(
                "history {}: intake, single POSTs, {} in flight, {}s",
                num(size as f64),
                p.concurrency,
                p.history_intake_secs
            );
            let intake = load::closed_loop(
                &target,
                &kind,
                p.concurrency,
                Body::Single,
                Stop::After(Duration::from_secs(p.history_intake_secs)),
                None,
            )
            .await?;
            expected += intake.accepted;
            self.drain(|| counter.lines(), expected, &kind).await?;
            let (relay, relay_note, accepted) = self.relay_rate(&target, size, batch.rate()).await?;
            expected += accepted;
            self.drain(|| counter.lines(), expected, "the relay backlog").await?;
            say!("  intake {}/s, relay {}/s", num(intake.rate()), num(relay));
            history.push(HistoryPoint {
                history: size,
                fill_secs,
                intake: intake.rate(),
                intake_p99_ms: intake.ms(0.99),
                relay,
                relay_note,
            });
        }

        let webhooks = self.webhooks(&client, &target, &mut counter, &mut expected).await?;
        let broadcast = self.push_broadcast(&client, fcm).await?;

        let peak = self.sampler.memory();
        let sandbox_bytes = stack::CHANNELS
            .iter()
            .filter_map(|c| std::fs::metadata(self.stack.sandbox_dir().join(format!("{c}.jsonl"))).ok())
            .map(|m| m.len())
            .sum();
        Ok(Phases {
            single,
            batch,
            e2e_intake,
            e2e,
            e2e_cpu,
            e2e_wall_secs,
            open,
            single_cpu,
            idle,
            peak,
            history,
            sandbox_bytes,
            webhooks,
            broadcast,
        })
    }

    /// The tenant's webhook endpoint for `delivery.sent` at a receiver on this process,
    /// then a burst of notifications in batches across the channels: every sent delivery's
    /// event must reach the receiver, signed. The endpoint is deleted after, so the
    /// broadcast that follows sends no events.
    async fn webhooks(
        &self,
        client: &reqwest::Client,
        target: &Target,
        counter: &mut SandboxCounter,
        expected: &mut u64,
    ) -> anyhow::Result<Webhooks> {
        const KIND: &str = "bench.webhooks";
        let p = &self.plan;
        say!(
            "webhooks: {} notifications in batches, each sent delivery's delivery.sent to one endpoint",
            num(p.webhook_notifications as f64)
        );
        let receiver = Receiver::start(false).await?;
        let api = &self.stack.api;
        let secret = dev::webhook_endpoint(client, api, &self.api_key, &receiver.url, &["delivery.sent"]).await?;
        receiver.set_secret(secret);
        let cpu0 = self.sampler.cpu();
        let started = Instant::now();
        let intake = load::closed_loop(
            target,
            KIND,
            p.batch_concurrency,
            Body::Batch(p.batch_size),
            Stop::Requests(p.webhook_notifications.div_ceil(p.batch_size)),
            None,
        )
        .await?;
        *expected += intake.accepted;
        self.drain(|| counter.lines(), *expected, "the webhooks burst").await?;
        let sent = self.delivered(KIND).await?.sent as u64;
        let ours = |r: &&receiver::Received| r.body["data"]["notification_type"] == KIND;
        let mut said = Instant::now();
        loop {
            let events = receiver.count(|r| ours(&r) && r.verified) as u64;
            if events >= sent {
                break;
            }
            if started.elapsed() > p.drain_deadline {
                bail!("webhooks: {events} of {sent} events at the receiver after {}s", p.drain_deadline.as_secs());
            }
            if said.elapsed() > Duration::from_secs(5) {
                say!("  waiting for events: {} of {}", num(events as f64), num(sent as f64));
                said = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wall_secs = started.elapsed().as_secs_f64();
        let received = receiver.received();
        let cpu: BTreeMap<String, f64> =
            self.sampler.cpu().since(&cpu0).into_iter().map(|(k, v)| (k, v / wall_secs)).collect();
        let (mut latency, mut from_accept) = (load::histogram(), load::histogram());
        let micros = |d: time::Duration| u64::try_from(d.whole_microseconds().clamp(1, 600_000_000_000)).unwrap_or(1);
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        let ids: Vec<String> = received
            .iter()
            .filter(ours)
            .filter_map(|r| r.body["data"]["notification_id"].as_str().map(str::to_owned))
            .collect();
        let accepted: HashMap<String, time::OffsetDateTime> =
            sqlx::query_as("SELECT id::text, created_at FROM notifications WHERE id = ANY($1::uuid[])")
                .bind(&ids)
                .fetch_all(&mut self.db().await?)
                .await
                .context("reading the webhooks phase's acceptance times")?
                .into_iter()
                .collect();
        for r in received.iter().filter(ours) {
            if let Some(written) =
                r.body["timestamp"].as_str().and_then(|t| time::OffsetDateTime::parse(t, rfc3339).ok())
            {
                latency.saturating_record(micros(r.received_at - written));
            }
            if let Some(at) = r.body["data"]["notification_id"].as_str().and_then(|id| accepted.get(id)) {
                from_accept.saturating_record(micros(r.received_at - *at));
            }
        }
        let phase = Webhooks {
            notifications: intake.accepted,
            events: received.iter().filter(ours).filter(|r| r.verified).count() as u64,
            unverified: received.iter().filter(|r| !r.verified).count() as u64,
            wall_secs,
            p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
            accept_p50_ms: from_accept.value_at_quantile(0.5) as f64 / 1000.0,
            accept_p99_ms: from_accept.value_at_quantile(0.99) as f64 / 1000.0,
            cpu,
        };
        say!(
            "  {} events/s ({} events, {} more: duplicates or unverified); accept to event received p50 {} ms, p99 {} ms; event written to received p50 {} ms, p99 {} ms",
            num(phase.rate()),
            num(phase.events as f64),
            received.iter().filter(ours).count() as u64 - phase.events,
            num(phase.accept_p50_ms),
            num(phase.accept_p99_ms),
            num(phase.p50_ms),
            num(phase.p99_ms)
        );
        say!("  CPU during the phase, % of one core: {}", cpu_line(&phase.cpu));
        let list = client.get(format!("{api}/v1/webhooks")).bearer_auth(&self.api_key).send().await?;
        let endpoints: serde_json::Value = list.json().await?;
        for endpoint in endpoints.as_array().into_iter().flatten() {
            let id = endpoint["id"].as_str().unwrap_or_default();
            client.delete(format!("{api}/v1/webhooks/{id}")).bearer_auth(&self.api_key).send().await?;
        }
        Ok(phase)
    }

    /// A tenant's broadcast to a topic whose members have two FCM devices each, through its
    /// own FCM integration (a service account made for the run) at the FCM stand-in: one
    /// request, `2 × members` push deliveries. Last, since the integration then takes the
    /// tenant's push deliveries from the sandbox.
    async fn push_broadcast(&self, client: &reqwest::Client, fcm: &FcmStandIn) -> anyhow::Result<Broadcast> {
        const KIND: &str = "bench.push.broadcast";
        let members = self.plan.broadcast_members.max(load::PUSH_AUDIENCE);
        say!(
            "push broadcast: a topic of {} members, two FCM devices each, through the FCM stand-in",
            num(members as f64)
        );
        let mut db = self.db().await?;
        sqlx::query(DEVICE_SQL_2)
            .bind(&self.tenant_id)
            .bind(members as i64)
            .execute(&mut db)
            .await
            .context("writing the broadcast's second devices")?;
        let settings = json!({"settings": {"service_account": service_account(&fcm.base_url).await?}});
        let url = format!("{}/v1/integrations/push/fcm", self.stack.api);
        let answer = client.put(&url).bearer_auth(&self.api_key).json(&settings).send().await?;
        if !answer.status().is_success() {
            bail!("PUT {url}: {} {}", answer.status(), answer.text().await.unwrap_or_default());
        }
        let body = json!({"type": KIND, "to": [{"topic": BROADCAST_TOPIC}], "channels": ["push"],
                          "content": {"title": "Flash sale", "body": "Everything is 20 % off until midnight."}});
        let cpu0 = self.sampler.cpu();
        let started = Instant::now();
        let answer = client
            .post(format!("{}/v1/notifications", self.stack.api))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await?;
        let accept_ms = started.elapsed().as_secs_f64() * 1000.0;
        if answer.status() != reqwest::StatusCode::ACCEPTED {
            bail!("the broadcast: {} {}", answer.status(), answer.text().await.unwrap_or_default());
        }
        self.drain(|| fcm.messages(), 2 * members, "the push broadcast").await?;
        let wall = started.elapsed().as_secs_f64();
        let cpu: BTreeMap<String, f64> =
            self.sampler.cpu().since(&cpu0).into_iter().map(|(k, v)| (k, v / wall)).collect();
        let delivered = self.delivered(KIND).await?;
        let first_sent_ms = self.first_sent_ms(KIND).await?;
        say!(
            "  {} delivered/s; accept-to-sent p50 {} ms, p99 {} ms; accept {} ms; first sent {} ms; {} token grants",
            num(delivered.rate()),
            num(delivered.p50_ms),
            num(delivered.p99_ms),
            num(accept_ms),
            num(first_sent_ms),
            fcm.grants()
        );
        say!("  CPU during the broadcast, % of one core: {}", cpu_line(&cpu));
        Ok(Broadcast { members, accept_ms, delivered, grants: fcm.grants(), cpu, first_sent_ms })
    }

    /// Waits until `sent` (the sandbox's lines, or the Novu stand-in's triggers) reaches
    /// `expected` messages, then until the database has recorded every outcome.
    async fn drain(&self, mut sent: impl FnMut() -> u64, expected: u64, what: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut said = Instant::now();
        loop {
            let lines = sent();
            if lines >= expected {
                break;
            }
            if started.elapsed() > self.plan.drain_deadline {
                bail!(
                    "after {what}: {lines} of {expected} messages sent after {}s",
                    self.plan.drain_deadline.as_secs()
                );
            }
            if said.elapsed() > Duration::from_secs(5) {
                say!("  waiting for delivery: {} of {} sent", num(lines as f64), num(expected as f64));
                said = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut db = self.db().await?;
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM deliveries WHERE status NOT IN ('sent', 'failed', 'cancelled', 'suppressed')",
            )
            .fetch_one(&mut db)
            .await?;
            if open == 0 {
                return Ok(());
            }
            if started.elapsed() > self.plan.drain_deadline {
                bail!("after {what}: {open} deliveries still not final");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// From the accept of the notifications of `kind` to their first sent delivery, ms.
    async fn first_sent_ms(&self, kind: &str) -> anyhow::Result<f64> {
        let mut db = self.db().await?;
        let ms: Option<f64> = sqlx::query_scalar(
            "SELECT 1000 * extract(epoch FROM min(d.sent_at) - min(n.created_at))::float8
             FROM notifications n JOIN deliveries d ON d.notification_id = n.id
             WHERE n.tenant_id = $1::uuid AND n.type = $2",
        )
        .bind(&self.tenant_id)
        .bind(kind)
        .fetch_one(&mut db)
        .await?;
        Ok(ms.unwrap_or(f64::NAN))
    }

    async fn delivered(&self, kind: &str) -> anyhow::Result<Delivered> {
        let mut db = self.db().await?;
        let row: (i64, i64, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE d.status = 'sent'),
                    count(*) FILTER (WHERE d.status <> 'sent'),
                    1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.sent_at - n.created_at)::float8)
                        FILTER (WHERE d.status = 'sent'),
                    1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.sent_at - n.created_at)::float8)
                        FILTER (WHERE d.status = 'sent'),
                    extract(epoch FROM max(d.sent_at) - min(n.created_at))::float8
             FROM notifications n JOIN deliveries d ON d.notification_id = n.id
             WHERE n.tenant_id = $1::uuid AND n.type = $2",
        )
        .bind(&self.tenant_id)
        .bind(kind)
        .fetch_one(&mut db)
        .await
        .with_context(|| format!("reading the deliveries of {kind}"))?;
        let by_channel: Vec<(String, i64)> = sqlx::query_as(
            "SELECT d.channel, count(*) FROM notifications n JOIN deliveries d ON d.notification_id = n.id
             WHERE n.tenant_id = $1::uuid AND n.type = $2 AND d.status = 'sent' GROUP BY d.channel ORDER BY d.channel",
        )
        .bind(&self.tenant_id)
        .bind(kind)
        .fetch_all(&mut db)
        .await?;
        Ok(Delivered {
            sent: row.0,
            not_sent: row.1,
            by_channel: by_channel.into_iter().collect(),
            p50_ms: row.2.unwrap_or(f64::NAN),
            p99_ms: row.3.unwrap_or(f64::NAN),
            span_secs: row.4.unwrap_or(f64::NAN),
        })
    }

    /// Notifications `from..to` of history: sent, each with its delivery, its attempt and
    /// its `accepted` audit event, spread over the past days, written set-based in chunks.
    async fn fill_history(&self, from: u64, to: u64) -> anyhow::Result<()> {
        const CHUNK: u64 = 250_000;
        let mut db = self.db().await?;
        let started = Instant::now();
        say!("history: filling notifications {} to {}", num(from as f64), num(to as f64));
        let mut start = from;
        while start < to {
            let end = (start + CHUNK).min(to);
            sqlx::query(HISTORY_SQL)
                .bind(&self.tenant_id)
                .bind(start as i64)
                .bind(end as i64 - 1)
                .execute(&mut db)
                .await
                .context("filling history")?;
            start = end;
            say!("  {} rows of each table ({:.0}s)", num(end as f64), started.elapsed().as_secs_f64());
        }
        sqlx::query("VACUUM ANALYZE notifications, deliveries, delivery_attempts, audit_events")
            .execute(&mut db)
            .await
            .context("VACUUM ANALYZE after filling history")?;
        say!(
            "history: {} notifications in {:.0}s (with VACUUM ANALYZE)",
            num(to as f64),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The relay alone on a backlog: `relay_backlog` notifications accepted with one
    /// `send_at` a little ahead, so their outbox rows all fall due at once; the rate is the
    /// backlog over the time from that moment until the outbox is empty.
    async fn relay_rate(
        &self,
        target: &Target,
        history: u64,
        batch_rate: f64,
    ) -> anyhow::Result<(f64, Option<String>, u64)> {
        let k = self.plan.relay_backlog;
        let lead = Duration::from_secs_f64((k as f64 / batch_rate.max(100.0)) * 2.0 + 2.0);
        let due = time::OffsetDateTime::now_utc() + lead;
        let due_at = Instant::now() + lead;
        let send_at = due.format(&time::format_description::well_known::Rfc3339)?;
        say!(
            "history {}: relay, {} scheduled notifications due in {:.1}s",
            num(history as f64),
            num(k as f64),
            lead.as_secs_f64()
        );
        // Half the intake's batches: with `send_at` on each item a full one exceeds the
        // API's body limit (256 KiB).
        let size = (self.plan.batch_size / 2).max(1);
        let submitted = load::closed_loop(
            target,
            &format!("bench.history{history}.relay"),
            self.plan.batch_concurrency,
            Body::Batch(size),
            Stop::Requests(k.div_ceil(size)),
            Some(send_at),
        )
        .await?;
        if submitted.errors > 0 {
            bail!(
                "the relay backlog: {} of {} requests refused, the first: {}",
                submitted.errors,
                submitted.requests,
                submitted.first_error.unwrap_or_default()
            );
        }
        let mut note = None;
        if Instant::now() > due_at {
            note = Some("the backlog was still being accepted when it fell due: the relay rate is understated".into());
        }
        let mut db = self.db().await?;
        let empty_at = loop {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&mut db).await?;
            let now = Instant::now();
            if left == 0 && now >= due_at {
                break now;
            }
            if now > due_at + self.plan.drain_deadline {
                bail!("the relay left {left} outbox rows after {}s", self.plan.drain_deadline.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let secs = empty_at.saturating_duration_since(due_at).as_secs_f64().max(0.02);
        Ok((submitted.accepted as f64 / secs, note, submitted.accepted))
    }
}

/// One chunk of history: `$2..=$3` are the notification numbers, `$1` the tenant. Ids are
/// time-ordered like the API's UUIDv7 (48-bit millisecond prefix).
const HISTORY_SQL: &str = r#"
WITH g AS (
    SELECT i, now() - interval '1 day' - make_interval(secs => i * 0.01) AS at
    FROM generate_series($2::bigint, $3::bigint) AS i
), n AS (
    INSERT INTO notifications (id, tenant_id, type, status, priority, data, content, created_at, updated_at)
    SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7' || substr(md5(i::text), 1, 19))::uuid,
           $1::uuid, 'history', 'sent', 'normal', jsonb_build_object('order', i::text),
           '{"subject": "Your order shipped", "text": "It is on its way."}'::jsonb, at, at
    FROM g
    RETURNING id, created_at
), d AS (
    INSERT INTO deliveries (id, tenant_id, notification_id, channel, recipient, status, attempts, provider,
                            provider_message_id, sent_at, created_at, updated_at)
    SELECT (substr(replace(x.id::text, '-', ''), 1, 12) || '7' || substr(md5(x.id::text || 'd'), 1, 19))::uuid,
           $1::uuid, x.id, x.channel,
           CASE x.channel WHEN 'email' THEN 'user@example.com' WHEN 'novu' THEN 'subscriber-1'
                          WHEN 'chat' THEN 'slack:C00000001' ELSE '+15550000001' END,
           'sent', 1, 'sandbox', 'sandbox-' || md5(x.id::text), x.created_at + interval '1 second', x.created_at,
           x.created_at + interval '1 second'
    FROM (SELECT id, created_at, (ARRAY['email', 'sms', 'whatsapp', 'novu', 'chat'])[1 + abs(hashtext(id::text)) % 5] AS channel
          FROM n) AS x
    RETURNING id, created_at
), a AS (
    INSERT INTO delivery_attempts (tenant_id, delivery_id, number, provider, outcome, latency_ms, started_at, finished_at)
    SELECT $1::uuid, id, 1, 'sandbox', 'sent', 1, created_at + interval '900 milliseconds', created_at + interval '1 second'
    FROM d
)
INSERT INTO audit_events (tenant_id, notification_id, action, actor, created_at)
SELECT $1::uuid, id, 'accepted', 'api_key:history', created_at FROM n
"#;

#[allow(clippy::too_many_arguments)]
fn context_report(
    m: Measured,
    options: &Options,
    tuning: &Tuning,
    ceilings: &Ceilings,
    machine: Machine,
    binaries: String,
    run: Duration,
    clean: bool,
) -> Report {
    let c = ceilings;
    let mut rows = ceiling_rows(c);
    rows.extend(peer::rows(&m.peer, m.round_trips.as_ref(), c));
    if let Some(main) = &m.main {
        rows.extend(main_rows(main, c, machine.cores));
    }
    let date = time::OffsetDateTime::now_utc();
    let date_s = date.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let header = vec![
        ("Date".into(), date_s.clone()),
        (
            "Mode".into(),
            format!(
                "{}{}; peer shape: {} notifications per concurrency",
                if options.smoke { "--smoke (tiny counts: these figures mean nothing)" } else { "full" },
                if options.only_peer { "; --only peer" } else { "" },
                num(m.peer.first().map_or(0, |p| p.load.requests) as f64)
            ),
        ),
        (
            "Machine".into(),
            format!(
                "{} cores, {:.1} GiB, Linux {}; everything, the load generator included, shares the cores",
                machine.cores, machine.memory_gib, machine.kernel
            ),
        ),
        ("PostgreSQL".into(), machine.postgres.clone()),
        ("RabbitMQ".into(), machine.rabbitmq.clone()),
        (
            "Configuration".into(),
            format!(
                "release binaries; `NOTIFY_WORKER__PREFETCH={}` (default 32; 128 for the webhook-worker) and `NOTIFY_WEBHOOKS__ENDPOINT_CONCURRENCY` the same (default 16), the webhook-worker's `NOTIFY_DATABASE_MAX_CONNECTIONS=3` (default 4: with every pool full PostgreSQL's 100 connections run out), `NOTIFY_RELAY__BATCH_SIZE={}` (default 500), `RUST_LOG={}`; other settings default; peer shape: the novu provider at a Novu stand-in on a thread of the bench's process (`NOTIFY_NOVU__PROVIDERS=[\"novu\"]`, `NOTIFY_NOVU__NOVU__BASE_URL`); other phases: sandbox provider on every channel, files under target/bench/sandbox ({})",
                tuning.worker_prefetch,
                tuning.relay_batch_size,
                tuning.rust_log,
                match m.main.as_ref().map(|main| main.sandbox_bytes) {
                    None => "not run: --only peer".to_owned(),
                    Some(bytes) if bytes >= 1 << 20 => format!("{} MiB written", num(bytes as f64 / 1048576.0)),
                    Some(bytes) => format!("{bytes} bytes written"),
                }
            ),
        ),
        ("Ceilings".into(), c.source.clone()),
        ("Binaries".into(), binaries.clone()),
        ("Time".into(), format!("run {:.0}s", run.as_secs_f64())),
    ];
    let mut notes = vec![
        format!("ratio = measured / ceiling; a ceiling is the fastest this machine does that shape with nothing of Notify in the way, measured by the bench before the stack starts (`xtask/src/bench/ceilings.rs`). The ceilings' own ratios are to the reference medians of {}: these machines differ by up to 2x from day to day, so judge a figure on a run whose ceilings are within 20 % of the reference, or scale it by the ceilings of its run.", ceilings::REFERENCE_DATE),
        "peer shape: run first, on fresh tables; each concurrency sends its notifications on an empty pipeline, waits until the stand-in has them all and the database has every outcome, and its CPU (utime + stime from /proc, as for resources) runs over that span, divided by its notifications. The platform is the API, the relay, the six workers, PostgreSQL (its server-wide processes and the backends of `notify_bench`) and RabbitMQ (the whole node); the load generator (its own thread, our HTTP/1.1 client on a current-thread runtime), the Novu stand-in (the provider, its own thread) and the rest of the bench's process are counted apart. End to end: the stand-in's arrival minus the generator's clock before the POST, matched by the request number the notification's `data` carries to the trigger's payload. The intake ceilings: `http_json_post_axum_c64`, and the single-row commit rate measured with the fewest clients at least the concurrency (measured: 1, 16 and 64). Targets are issue 21's, printed, not asserted.".to_owned(),
        "round trips: the stack started again with its binaries' `database_url` at a TCP proxy in the bench that counts the frontend messages after which a client waits (`Query`, and `Sync`, which ends every extended-protocol statement and is sqlx's ping on acquiring and releasing a pooled connection); over the stack's whole life (start, load, idle polling, stop) divided by the phase's notifications. `xact_commit` of `notify_bench` and `pg_stat_wal.wal_sync` over the same span; wal_sync is server-wide, so another database's commits during the run count too. Not part of the figures above: the proxy adds a hop to each round trip.".to_owned(),
    ];
    if let Some(main) = &m.main {
        notes.extend(main_notes(main));
    }
    if !clean {
        notes.push("a process did not stop cleanly on SIGTERM at the end of the run (target/bench/logs/).".into());
    }
    let mut json = json!({
        "date": date_s,
        "smoke": options.smoke,
        "machine": {"cores": machine.cores, "memory_gib": machine.memory_gib, "kernel": machine.kernel,
                    "postgres": machine.postgres, "rabbitmq": machine.rabbitmq},
        "configuration": {"worker_prefetch": tuning.worker_prefetch, "relay_batch_size": tuning.relay_batch_size, "rust_log": tuning.rust_log},
        "binaries": binaries,
        "run_secs": run.as_secs_f64(),
        "peer_shape": peer::json(&m.peer, m.round_trips.as_ref()),
    });
    if let (Some(main), Some(json)) = (&m.main, json.as_object_mut())
        && let serde_json::Value::Object(main) = main_json(main)
    {
        json.extend(main);
    }
    Report {
        title: format!("Notify benchmark, {}", &date_s[..10.min(date_s.len())]),
        header,
        rows,
        notes,
        ceilings: c.clone(),
        json,
    }
}

/// The ceilings themselves, each beside its reference median.
fn ceiling_rows(c: &Ceilings) -> Vec<Row> {
    c.cases
        .values()
        .map(|ceiling| {
            Row::new("ceilings", format!("`{}`", ceiling.case), format!("{} {}", num(ceiling.value), ceiling.unit))
                .against(ceiling.value, [Ceilings::reference_of(&ceiling.case)])
        })
        .collect()
}

/// The rows of the phases after the peer shape.
fn main_rows(m: &Phases, c: &Ceilings, cores: usize) -> Vec<Row> {
    let lat = |r: &load::LoadResult| format!("{} / {} / {} ms", num(r.ms(0.5)), num(r.ms(0.99)), num(r.ms(0.999)));
    let mut rows = Vec::new();

    rows.push(
        Row::new(
            "intake",
            "single `POST /v1/notifications` (1 recipient, 1 channel), closed loop, 64 in flight: accepted/s",
            format!("{}/s", num(m.single.rate())),
        )
        .against(m.single.rate(), [c.get("pg_insert_1row_c64"), c.get("http_json_post_axum_c64")]),
    );
    rows.push(Row::new("intake", "single: accept latency p50 / p99 / p99.9", lat(&m.single)));
    rows.push(Row::new(
        "intake",
        "single: CPU during the phase, % of one core (the relay and workers deliver meanwhile)",
        cpu_line(&m.single_cpu),
    ));
    rows.push(
        Row::new(
            "intake",
            "`POST /v1/notifications/batch` (1,000 per request), 2 in flight: accepted notifications/s",
            format!("{}/s", num(m.batch.rate())),
        )
        .against(m.batch.rate(), [c.divided("pg_insert_100rows_c16", 3.0, "notif/s (3 rows each)")]),
    );
    rows.push(Row::new("intake", "batch: request latency p50 / p99 / p99.9", lat(&m.batch)));

    let channels =
        m.e2e.by_channel.iter().map(|(k, v)| format!("{k} {}", num(*v as f64))).collect::<Vec<_>>().join(", ");
    rows.push(
        Row::new(
            "end to end",
            format!(
                "delivered/s, burst of {} notifications ({channels}), first accept to last send",
                num(m.e2e.sent as f64)
            ),
            format!("{}/s", num(m.e2e.rate())),
        )
        .against(m.e2e.rate(), [c.get("amqp_publish_confirmed_pipelined"), c.get("amqp_consume_ack")]),
    );
    rows.push(Row::new(
        "end to end",
        "burst: accept-to-sent p50 / p99 (mostly time queued behind the burst)",
        format!("{} / {} ms", num(m.e2e.p50_ms), num(m.e2e.p99_ms)),
    ));
    rows.push(Row::new(
        "end to end",
        "burst: intake rate while the pipeline drains",
        format!("{}/s", num(m.e2e_intake.rate())),
    ));
    for (share, rate, per_request, result, delivered) in &m.open {
        let how = if *per_request == 1 { "single POSTs".to_owned() } else { format!("batches of {per_request}") };
        rows.push(
            Row::new(
                "end to end",
                format!(
                    "open loop at {:.0} % of the max ({}/s in {how}, {}s): delivered/s; accept-to-sent p50 / p99; request latency p50 / p99",
                    share * 100.0,
                    num(*rate),
                    result.elapsed.as_secs()
                ),
                format!(
                    "{}/s; {} / {} ms; {} / {} ms{}",
                    num(delivered.rate()),
                    num(delivered.p50_ms),
                    num(delivered.p99_ms),
                    num(result.ms(0.5)),
                    num(result.ms(0.99)),
                    if result.dropped + result.errors > 0 {
                        format!(" ({} not started: generator at its in-flight cap, {} errors)", result.dropped, result.errors)
                    } else {
                        String::new()
                    }
                ),
            )
            .against(delivered.rate(), [c.get("amqp_publish_confirmed_pipelined")]),
        );
    }

    let b = &m.broadcast;
    rows.push(
        Row::new(
            "push broadcast",
            format!(
                "one notification to a topic of {} members with two FCM devices each, through the tenant's FCM integration at the FCM stand-in: delivered/s",
                num(b.members as f64)
            ),
            format!("{}/s", num(b.delivered.rate())),
        )
        .against(b.delivered.rate(), [c.get("amqp_publish_confirmed_pipelined")]),
    );
    rows.push(Row::new(
        "push broadcast",
        "accept-to-sent p50 / p99; the request's latency; accept to the first push sent; OAuth2 token grants",
        format!(
            "{} / {} ms; {} ms; {} ms; {}",
            num(b.delivered.p50_ms),
            num(b.delivered.p99_ms),
            num(b.accept_ms),
            num(b.first_sent_ms),
            b.grants
        ),
    ));
    rows.push(Row::new("push broadcast", "CPU during the broadcast, % of one core", cpu_line(&b.cpu)));

    let w = &m.webhooks;
    rows.push(
        Row::new(
            "webhooks",
            format!(
                "{} notifications in batches across the channels, each sent delivery's `delivery.sent` event to one endpoint (a receiver in the bench that checks every signature): events/s",
                num(w.notifications as f64)
            ),
            format!("{}/s", num(w.rate())),
        )
        .against(w.rate(), [c.get("amqp_publish_confirmed_pipelined")]),
    );
    rows.push(Row::new(
        "webhooks",
        "accept to event received p50 / p99; event written to received p50 / p99; events; requests that did not verify",
        format!(
            "{} / {} ms; {} / {} ms; {}; {}",
            num(w.accept_p50_ms),
            num(w.accept_p99_ms),
            num(w.p50_ms),
            num(w.p99_ms),
            num(w.events as f64),
            w.unverified
        ),
    ));
    rows.push(Row::new("webhooks", "CPU during the phase, % of one core", cpu_line(&w.cpu)));

    let per_k = (m.e2e_intake.accepted as f64 / 1000.0).max(1e-9);
    for name in m.peak.keys().chain(m.e2e_cpu.keys().filter(|k| !m.peak.contains_key(*k))) {
        let idle = m.idle.get(name).map_or(f64::NAN, |x| x.rss_mib);
        let peak = m.peak.get(name).map_or(f64::NAN, |x| x.peak_mib);
        let cpu = m.e2e_cpu.get(name).copied().unwrap_or(f64::NAN);
        rows.push(
            Row::new(
                "resources",
                format!("{name}: RSS idle / peak; CPU s per 1,000 notifications (burst)"),
                format!("{} / {} MiB; {} s", num(idle), num(peak), num(cpu / per_k)),
            )
            .extra(
                json!({"idle_rss_mib": idle, "peak_rss_mib": peak, "cpu_s_per_1000": cpu / per_k, "cpu_s_burst": cpu}),
            ),
        );
    }
    let total_cpu: f64 = m.e2e_cpu.values().sum();
    rows.push(Row::new(
        "resources",
        "all of the above: CPU s per 1,000 notifications (burst); CPU used of the 2 cores during the burst",
        format!("{} s; {:.0} %", num(total_cpu / per_k), 100.0 * total_cpu / (m.e2e_wall_secs * cores as f64)),
    ));

    for h in &m.history {
        rows.push(
            Row::new(
                "history",
                format!(
                    "{} historical notifications: single intake, 64 in flight: accepted/s (p99)",
                    num(h.history as f64)
                ),
                format!("{}/s ({} ms)", num(h.intake), num(h.intake_p99_ms)),
            )
            .against(h.intake, [c.get("pg_insert_1row_c64")]),
        );
        rows.push(
            Row::new(
                "history",
                format!(
                    "{} historical notifications: relay, outbox rows published/s{}",
                    num(h.history as f64),
                    h.relay_note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
                ),
                format!("{}/s", num(h.relay)),
            )
            .against(h.relay, [c.get("amqp_publish_confirmed_pipelined")]),
        );
    }

    rows
}

/// The notes on the phases after the peer shape.
fn main_notes(m: &Phases) -> Vec<String> {
    let mut notes = vec![
        "intake: notifications accepted (`202`, or a batch item's `202`) per second by a closed loop; accept latency is the HTTP round trip seen by the generator.".to_owned(),
        "end to end: delivered/s = sent deliveries / (last `deliveries.sent_at` - first `notifications.created_at`) of the phase; accept-to-sent = `sent_at - created_at` (both transaction start times). Open loop: requests started at the rate whatever the answers; accept latency counted from the intended start.".to_owned(),
        "resources: RSS from /proc/<pid>/status (peak: VmHWM; for PostgreSQL and RabbitMQ, the largest sampled sum of their processes' PSS, so shared buffers count once); CPU = utime + stime from /proc/<pid>/stat over the burst phase (its intake and its delivery) divided by its notifications. PostgreSQL's backends that exit are not counted. PostgreSQL is its server-wide processes (WAL writer, checkpointer, ...) and the backends of `notify_bench`, not other databases' backends (though its server-wide processes serve them too); RabbitMQ is the whole node: anything else using it during the run is counted too.".to_owned(),
        "history: the tables filled with N sent notifications (one delivery, attempt and audit event each), set-based, then VACUUM ANALYZE; relay = a backlog of scheduled notifications falling due at once, over the time until the outbox is empty (the workers run meanwhile).".to_owned(),
    ];
    notes.push("push broadcast: the bench tenant's own FCM integration (`PUT /v1/integrations/push/fcm`, a service account with an RSA key made by `openssl genpkey` for the run), its client sent to an FCM stand-in on a thread of the bench (`integrations.base_urls.fcm`) that grants a token and answers each `messages:send` with 200; the topic's subscribers and devices written by SQL before; one `POST /v1/notifications`; delivered/s and accept-to-sent as for the burst.".to_owned());
    let sent_failed: i64 =
        m.open.iter().map(|o| o.4.not_sent).sum::<i64>() + m.e2e.not_sent + m.broadcast.delivered.not_sent;
    if sent_failed > 0 {
        notes.push(format!("{sent_failed} deliveries of the end-to-end phases ended other than `sent`."));
    }
    notes
}

/// The JSON of the phases after the peer shape.
fn main_json(m: &Phases) -> serde_json::Value {
    json!({
        "intake": {
            "single": {"cpu_cores": m.single_cpu, "accepted_per_s": m.single.rate(), "accepted": m.single.accepted, "errors": m.single.errors,
                       "first_error": m.single.first_error, "p50_ms": m.single.ms(0.5), "p99_ms": m.single.ms(0.99), "p999_ms": m.single.ms(0.999)},
            "batch": {"accepted_per_s": m.batch.rate(), "accepted": m.batch.accepted, "errors": m.batch.errors,
                      "first_error": m.batch.first_error, "p50_ms": m.batch.ms(0.5), "p99_ms": m.batch.ms(0.99), "p999_ms": m.batch.ms(0.999)},
        },
        "end_to_end": {
            "burst": {"notifications": m.e2e_intake.accepted, "sent": m.e2e.sent, "by_channel": m.e2e.by_channel,
                      "delivered_per_s": m.e2e.rate(), "span_s": m.e2e.span_secs, "p50_ms": m.e2e.p50_ms, "p99_ms": m.e2e.p99_ms,
                      "intake_per_s": m.e2e_intake.rate(), "cpu_s": m.e2e_cpu},
            "open_loop": m.open.iter().map(|(share, rate, per_request, r, d)| json!({
                "share_of_max": share, "target_per_s": rate, "per_request": per_request, "accepted_per_s": r.rate(), "dropped": r.dropped, "errors": r.errors,
                "accept_p50_ms": r.ms(0.5), "accept_p99_ms": r.ms(0.99), "accept_p999_ms": r.ms(0.999),
                "delivered_per_s": d.rate(), "sent": d.sent, "accept_to_sent_p50_ms": d.p50_ms, "accept_to_sent_p99_ms": d.p99_ms,
            })).collect::<Vec<_>>(),
        },
        "webhooks": {"notifications": m.webhooks.notifications, "events": m.webhooks.events, "unverified": m.webhooks.unverified,
                     "events_per_s": m.webhooks.rate(), "wall_s": m.webhooks.wall_secs,
                     "written_to_received_p50_ms": m.webhooks.p50_ms, "written_to_received_p99_ms": m.webhooks.p99_ms,
                     "accept_to_received_p50_ms": m.webhooks.accept_p50_ms, "accept_to_received_p99_ms": m.webhooks.accept_p99_ms,
                     "cpu_cores": m.webhooks.cpu},
        "push_broadcast": {"members": m.broadcast.members, "sent": m.broadcast.delivered.sent, "not_sent": m.broadcast.delivered.not_sent,
                           "delivered_per_s": m.broadcast.delivered.rate(), "accept_ms": m.broadcast.accept_ms,
                           "accept_to_sent_p50_ms": m.broadcast.delivered.p50_ms, "accept_to_sent_p99_ms": m.broadcast.delivered.p99_ms,
                           "token_grants": m.broadcast.grants, "first_sent_ms": m.broadcast.first_sent_ms,
                           "cpu_cores": m.broadcast.cpu},
        "history": m.history.iter().map(|h| json!({
            "history": h.history, "fill_s": h.fill_secs, "intake_per_s": h.intake, "intake_p99_ms": h.intake_p99_ms,
            "relay_per_s": h.relay, "relay_note": h.relay_note,
        })).collect::<Vec<_>>(),
    })
}

/// Busy processes, busiest first, in % of one core (below 0.5 % left out).
fn cpu_line(cpu: &BTreeMap<String, f64>) -> String {
    let mut v: Vec<(&String, &f64)> = cpu.iter().filter(|(_, c)| **c >= 0.005).collect();
    v.sort_by(|a, b| b.1.total_cmp(a.1));
    v.iter().map(|(k, c)| format!("{k} {:.0} %", *c * 100.0)).collect::<Vec<_>>().join(", ")
}
