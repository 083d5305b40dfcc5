//! `cargo xtask chaos`: the platform's binaries under load while the faults it
//! promises to survive happen to it, then a check that every accepted notification
//! reached a final state and none was lost.
//!
//! It runs a PostgreSQL cluster and a RabbitMQ node of its own (under
//! `target/chaos/`, on ports 55432 and 56720), so crashing them disturbs nothing else on
//! the machine; that needs root, as the servers run as their own users. The faults, one
//! after another while notifications are being sent: `kill -9` of the relay, then of the
//! email and SMS workers, then of the API (which publishes what it accepts after the
//! commit); `rabbitmqctl close_all_connections`; a purged queue; a RabbitMQ
//! restart; a PostgreSQL crash (`pg_ctl stop -m immediate`, losing the commits that did
//! not wait for the disk); `kill -9` of the workers again (email, SMS, push and webhooks).
//! The notifications are email, SMS and push (to one registered phone) in turn. The
//! tenant has a webhook endpoint for `notification.completed` at a local receiver, which
//! must get every accepted notification's event, signed, at least once.

use std::{
    collections::{BTreeMap, HashMap},
    fs::OpenOptions,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde_json::json;
use tokio::{process::Command, sync::Mutex};
use uuid::Uuid;

use crate::{
    dev::{self, BINARIES},
    receiver::Receiver,
    say,
    services::{self, find_program},
    workspace_root,
};

const PG_PORT: u16 = 55432;
const AMQP_PORT: u16 = 56720;
const RABBIT_NODE: &str = "notify-chaos@localhost";
const API_LISTEN: &str = "127.0.0.1:18280";
/// How long the platform has, after the last fault and the last request, to settle.
const SETTLE_DEADLINE: Duration = Duration::from_secs(180);

pub struct Options {
    pub notifications: usize,
}

pub async fn run(options: Options) -> anyhow::Result<ExitCode> {
    if std::fs::metadata("/proc/self").context("reading /proc/self")?.uid() != 0 {
        bail!("cargo xtask chaos runs its own PostgreSQL and RabbitMQ as their users: run it as root");
    }
    let root = workspace_root();
    dev::build(&root, false).await?;
    let bin_dir = dev::target_dir(&root)?.join("debug");
    let dir = dev::target_dir(&root)?.join("chaos");
    if dir.exists() {
        stop_leftovers(&dir).await;
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("logs"))?;

    let postgres = Postgres::init(&dir).await?;
    let rabbit = Rabbit::init(&dir).await?;
    let outcome = chaos(&options, &bin_dir, &dir, &postgres, &rabbit).await;
    rabbit.stop().await;
    postgres.stop("fast").await;
    let report = outcome?;
    println!("{report}");
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn chaos(
    options: &Options,
    bin_dir: &Path,
    dir: &Path,
    postgres: &Postgres,
    rabbit: &Rabbit,
) -> anyhow::Result<Report> {
    let database_url = format!("postgres://postgres@127.0.0.1:{PG_PORT}/postgres");
    let mut procs = Procs::new(bin_dir, dir, &database_url);
    dev::run_step(procs.command("notify-admin", &["migrate"]), "notify-admin migrate").await?;
    dev::run_step(procs.command("outbox-relay", &["declare-topology"]), "outbox-relay declare-topology").await?;
    let tenant = dev::create_tenant(procs.command("notify-admin", &["create-tenant", "chaos"])).await?;
    let limit = ["set-rate-limit", &tenant.id, "--per-second", "100000", "--burst", "100000"];
    dev::run_step(procs.command("notify-admin", &limit), "notify-admin set-rate-limit").await?;
    for binary in BINARIES {
        procs.spawn(binary)?;
    }
    let api = format!("http://{API_LISTEN}");
    let client = services::http_client()?;
    dev::wait_healthy(&client, &api).await?;

    register_phone(&client, &api, &tenant.api_key).await?;
    let receiver = Receiver::start(false).await?;
    receiver.set_secret(
        dev::webhook_endpoint(&client, &api, &tenant.api_key, &receiver.url, &["notification.completed"]).await?,
    );

    let started = Instant::now();
    let sending = Arc::new(AtomicBool::new(true));
    let producer = tokio::spawn(produce(client.clone(), api.clone(), tenant.api_key.clone(), options.notifications));
    let procs = Arc::new(Mutex::new(procs));
    let faults = inject_faults(&procs, postgres, rabbit, &sending).await;
    let accepted = producer.await.context("the producer task")??;
    sending.store(false, Ordering::Relaxed);
    faults?;
    say!(
        "chaos: {} notifications accepted in {:.1}s; waiting for them to settle",
        accepted.len(),
        started.elapsed().as_secs_f64()
    );

    let mut conn = services::connect_postgres(&database_url).await?;
    let settle_started = Instant::now();
    let mut unsettled;
    loop {
        unsettled = unsettled_count(&mut conn, &accepted).await?;
        if unsettled == 0 || settle_started.elapsed() > SETTLE_DEADLINE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Each final notification's `notification.completed` event, signed, at the receiver.
    let webhooks = loop {
        let webhooks = Webhooks::count(&receiver, &accepted);
        if webhooks.missing == 0 || settle_started.elapsed() > SETTLE_DEADLINE {
            break webhooks;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settled_in = settle_started.elapsed();
    let report = Report::gather(&mut conn, dir, &accepted, (unsettled, settled_in), rabbit, webhooks).await?;
    procs.lock().await.stop_all().await;
    Ok(report)
}

/// The faults, a few seconds apart, while the producer sends.
async fn inject_faults(
    procs: &Mutex<Procs>,
    postgres: &Postgres,
    rabbit: &Rabbit,
    sending: &AtomicBool,
) -> anyhow::Result<()> {
    let pause = || tokio::time::sleep(Duration::from_secs(3));
    let step = |what: &str| say!("chaos: {what}");
    pause().await;
    step("kill -9 outbox-relay");
    procs.lock().await.kill_and_restart(&["outbox-relay"]).await?;
    pause().await;
    step("kill -9 email-worker and sms-worker");
    procs.lock().await.kill_and_restart(&["email-worker", "sms-worker"]).await?;
    pause().await;
    // Accepts committed but not yet published by the API are left to the relays.
    step("kill -9 notify-api");
    procs.lock().await.kill_and_restart(&["notify-api"]).await?;
    pause().await;
    step("rabbitmqctl close_all_connections");
    rabbit.ctl(&["close_all_connections", "chaos"]).await?;
    pause().await;
    step("rabbitmqctl purge_queue notify.email");
    rabbit.ctl(&["purge_queue", "notify.email"]).await?;
    pause().await;
    step("RabbitMQ restart");
    rabbit.stop().await;
    rabbit.start().await?;
    pause().await;
    step("PostgreSQL crash: pg_ctl stop -m immediate, then start");
    postgres.stop("immediate").await;
    postgres.start().await?;
    pause().await;
    step("kill -9 email-worker, sms-worker, push-worker and webhook-worker");
    procs.lock().await.kill_and_restart(&["email-worker", "sms-worker", "push-worker", "webhook-worker"]).await?;
    if sending.load(Ordering::Relaxed) {
        step("faults done; the producer is still sending");
    }
    Ok(())
}

/// The subscriber `chaos-phones` and its phone (an FCM device): the push notifications'
/// recipient.
async fn register_phone(client: &reqwest::Client, api: &str, key: &str) -> anyhow::Result<()> {
    for (path, body) in [
        ("/v1/subscribers/chaos-phones", json!({})),
        ("/v1/subscribers/chaos-phones/devices/phone", json!({"platform": "fcm", "token": "chaos-fcm-token"})),
    ] {
        let response = client.put(format!("{api}{path}")).bearer_auth(key).json(&body).send().await?;
        if !response.status().is_success() {
            bail!("PUT {path} answered {}", response.status());
        }
    }
    Ok(())
}

/// Sends `n` notifications, email, SMS and push in turn, eight requests at a time, over about
/// half a minute. Each has an idempotency key and is sent again until it is answered
/// `202` (an outage answers 5xx or drops the connection), so every one is accepted once.
async fn produce(client: reqwest::Client, api: String, key: String, n: usize) -> anyhow::Result<Vec<Uuid>> {
    let gap = Duration::from_secs(30) / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let started = Instant::now();
    let results: Vec<anyhow::Result<Uuid>> = stream::iter(0..n)
        .map(|i| {
            let (client, api, key) = (client.clone(), api.clone(), key.clone());
            async move {
                tokio::time::sleep_until((started + gap * u32::try_from(i).unwrap_or(u32::MAX)).into()).await;
                let body = match i % 3 {
                    0 => json!({"type": "chaos", "to": [{"email": format!("user{i}@example.com")}],
                                "content": {"subject": "Chaos", "text": "Still here"}}),
                    1 => json!({"type": "chaos", "to": [{"phone": format!("+1555{i:07}")}],
                                "content": {"text": "Still here"}}),
                    _ => json!({"type": "chaos", "to": [{"subscriber_id": "chaos-phones"}], "channels": ["push"],
                                "content": {"title": "Chaos", "body": "Still here"}}),
                };
                accept(&client, &api, &key, &format!("chaos-{i}"), &body).await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn accept(
    client: &reqwest::Client,
    api: &str,
    key: &str,
    idempotency_key: &str,
    body: &serde_json::Value,
) -> anyhow::Result<Uuid> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let response = client
            .post(format!("{api}/v1/notifications"))
            .bearer_auth(key)
            .header("Idempotency-Key", idempotency_key)
            .timeout(Duration::from_secs(10))
            .json(body)
            .send()
            .await;
        let why = match response {
            Ok(r) if r.status() == 202 => {
                let answer: serde_json::Value = r.json().await.context("the accept's answer")?;
                return answer["id"].as_str().context("an id in the answer")?.parse().context("a notification id");
            }
            Ok(r) if r.status().is_server_error() || r.status() == 429 || r.status() == 409 => r.status().to_string(),
            Ok(r) => bail!("POST /v1/notifications answered {}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("{idempotency_key} was never accepted; last answer: {why}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn unsettled_count(conn: &mut sqlx::PgConnection, accepted: &[Uuid]) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM unnest($1::uuid[]) AS a(id) LEFT JOIN notifications n ON n.id = a.id
         WHERE n.id IS NULL OR n.status NOT IN ('sent', 'partial', 'failed', 'cancelled')",
    )
    .bind(accepted)
    .fetch_one(conn)
    .await
    .context("counting unsettled notifications")?;
    Ok(n)
}

/// Deliveries sent more than once, as a share of those sent, that fail the run (0.1 %).
const MAX_DUPLICATE_RATIO: f64 = 0.001;

struct Report {
    accepted: usize,
    lost: i64,
    unsettled: i64,
    settled_in: Duration,
    notifications: BTreeMap<String, i64>,
    deliveries: BTreeMap<String, i64>,
    /// Deliveries with more than one attempt row of the same number.
    duplicate_attempts: i64,
    /// Deliveries the sandbox providers sent more than once.
    sent_twice: usize,
    /// Deliveries the sandbox providers sent at all.
    sent: usize,
    /// Deliveries failed as `stranded`: failed without a reason of their own.
    stranded: i64,
    /// Of those, deliveries whose attempts log has fewer entries than the sandbox's sends:
    /// a duplicate nobody could see from the API.
    unlogged_duplicates: usize,
    recovered: i64,
    dead_letters: String,
    webhooks: Webhooks,
}

/// What the tenant's webhook receiver took: a `notification.completed` event of each
/// accepted notification, signed with the endpoint's secret.
#[derive(Default)]
struct Webhooks {
    /// Requests taken, duplicates (at least once) included.
    received: usize,
    /// Accepted notifications without a verified `notification.completed` event.
    missing: usize,
    /// Requests whose signature did not verify.
    unverified: usize,
}

impl Webhooks {
    fn count(receiver: &Receiver, accepted: &[Uuid]) -> Self {
        let received = receiver.received();
        let completed: std::collections::HashSet<&str> = received
            .iter()
            .filter(|r| r.verified && r.body["type"] == "notification.completed")
            .filter_map(|r| r.body["data"]["notification_id"].as_str())
            .collect();
        let missing = accepted.iter().filter(|id| !completed.contains(id.to_string().as_str())).count();
        let unverified = received.iter().filter(|r| !r.verified).count();
        Self { received: received.len(), missing, unverified }
    }
}

impl Report {
    async fn gather(
        conn: &mut sqlx::PgConnection,
        dir: &Path,
        accepted: &[Uuid],
        (unsettled, settled_in): (i64, Duration),
        rabbit: &Rabbit,
        webhooks: Webhooks,
    ) -> anyhow::Result<Self> {
        let (lost,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM unnest($1::uuid[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE n.id = a.id)",
        )
        .bind(accepted)
        .fetch_one(&mut *conn)
        .await?;
        let counts = |sql: &'static str| sqlx::query_as::<_, (String, i64)>(sql);
        let notifications =
            counts("SELECT status, count(*) FROM notifications GROUP BY status").fetch_all(&mut *conn).await?;
        let deliveries =
            counts("SELECT status, count(*) FROM deliveries GROUP BY status").fetch_all(&mut *conn).await?;
        let (duplicate_attempts,): (i64,) = sqlx::query_as(
            "SELECT count(DISTINCT delivery_id) FROM
                (SELECT delivery_id FROM delivery_attempts GROUP BY delivery_id, number HAVING count(*) > 1) d",
        )
        .fetch_one(&mut *conn)
        .await?;
        let logged: HashMap<String, i64> =
            counts("SELECT delivery_id::text, count(*) FROM delivery_attempts GROUP BY delivery_id")
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
        let (recovered,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_events WHERE action = 'recovered'")
            .fetch_one(&mut *conn)
            .await?;
        let (stranded,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'failed' AND last_error_code = 'stranded'")
                .fetch_one(&mut *conn)
                .await?;
        let mut sends: HashMap<String, usize> = HashMap::new();
        for channel in ["email", "sms"] {
            let text =
                std::fs::read_to_string(dir.join("sandbox").join(format!("{channel}.jsonl"))).unwrap_or_default();
            for line in text.lines() {
                let value: serde_json::Value = serde_json::from_str(line).context("a sandbox line")?;
                *sends.entry(value["delivery_id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
            }
        }
        let dead_letters = rabbit
            .output(&["list_queues", "name", "messages", "--no-table-headers", "--quiet"])
            .await
            .unwrap_or_else(|e| format!("(could not list: {e:#})"));
        Ok(Self {
            accepted: accepted.len(),
            lost,
            unsettled,
            settled_in,
            notifications: notifications.into_iter().collect(),
            deliveries: deliveries.into_iter().collect(),
            duplicate_attempts,
            sent_twice: sends.values().filter(|n| **n > 1).count(),
            sent: sends.len(),
            stranded,
            unlogged_duplicates: sends
                .iter()
                .filter(|(id, n)| **n > 1 && logged.get(*id).copied().unwrap_or(0) < **n as i64)
                .count(),
            recovered,
            webhooks,
            dead_letters: dead_letters
                .lines()
                .filter(|l| l.contains(".dead"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Deliveries sent more than once, of those sent.
    fn duplicate_ratio(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { self.sent_twice as f64 / self.sent as f64 }
    }

    fn passed(&self) -> bool {
        self.lost == 0
            && self.unsettled == 0
            && self.unlogged_duplicates == 0
            && self.stranded == 0
            && self.duplicate_ratio() < MAX_DUPLICATE_RATIO
            && self.webhooks.missing == 0
            && self.webhooks.unverified == 0
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "chaos: accepted {}, lost {}, not final {} (settled {:.1}s after the last request)",
            self.accepted,
            self.lost,
            self.unsettled,
            self.settled_in.as_secs_f64()
        )?;
        writeln!(f, "chaos: notifications by status {:?}", self.notifications)?;
        writeln!(f, "chaos: deliveries by status {:?}", self.deliveries)?;
        writeln!(
            f,
            "chaos: deliveries sent more than once by the sandbox {} of {} sent ({:.3} %, the bar is under {} %), \
             with a repeated attempt number in the attempts log {}, with fewer attempts logged than sent {}",
            self.sent_twice,
            self.sent,
            self.duplicate_ratio() * 100.0,
            MAX_DUPLICATE_RATIO * 100.0,
            self.duplicate_attempts,
            self.unlogged_duplicates
        )?;
        writeln!(
            f,
            "chaos: recovered by the sweeper {}, failed as stranded {}; dead-letter queues: {}",
            self.recovered, self.stranded, self.dead_letters
        )?;
        writeln!(
            f,
            "chaos: webhooks: {} requests at the receiver; notifications without a signed notification.completed \
             event {}, requests whose signature did not verify {}",
            self.webhooks.received, self.webhooks.missing, self.webhooks.unverified
        )?;
        write!(
            f,
            "chaos: {}",
            if self.passed() {
                "passed"
            } else {
                "FAILED: an accepted notification was lost or never finished, a delivery failed as stranded, \
                 duplicates reached the bar, a duplicate send is not in the attempts log, or a notification's \
                 webhook event never arrived signed"
            }
        )
    }
}

/// The eight binaries, each logging to `logs/<binary>.log` (appended across restarts).
struct Procs {
    bin_dir: PathBuf,
    dir: PathBuf,
    database_url: String,
    children: HashMap<&'static str, tokio::process::Child>,
}

impl Procs {
    fn new(bin_dir: &Path, dir: &Path, database_url: &str) -> Self {
        Self {
            bin_dir: bin_dir.to_owned(),
            dir: dir.to_owned(),
            database_url: database_url.to_owned(),
            children: HashMap::new(),
        }
    }

    fn command(&self, binary: &str, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin_dir.join(binary));
        command
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .env("NOTIFY_DATABASE_URL", &self.database_url)
            .env("NOTIFY_AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{AMQP_PORT}/%2f"))
            .env("NOTIFY_LISTEN", API_LISTEN)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env("RUST_LOG", "info")
            // Short leases and a quick sweeper, so recovery shows within the run.
            .env("NOTIFY_WORKER__PROVIDER_TIMEOUT", "1s")
            .env("NOTIFY_WORKER__LEASE", "3s")
            .env("NOTIFY_RELAY__SWEEP_INTERVAL", "1s")
            .env("NOTIFY_RELAY__STRANDED_AFTER", "10s")
            .envs(dev::LOCAL_WEBHOOKS)
            .env("NOTIFY_SECRETS__KEYS__DEV", dev::DEV_SECRETS_KEY)
            .env("NOTIFY_WEBHOOKS__TIMEOUT", "1s")
            .env("NOTIFY_WEBHOOKS__RETRY_SCHEDULE", r#"["200ms", "1s", "1s", "1s", "1s", "1s"]"#);
        for channel in ["EMAIL", "SMS", "WHATSAPP", "NOVU", "CHAT"] {
            command
                .env(format!("NOTIFY_{channel}__SANDBOX__LATENCY"), "20ms")
                .env(format!("NOTIFY_{channel}__SANDBOX__FAILURE_RATE"), "0.1")
                .env(format!("NOTIFY_{channel}__RETRY__INITIAL_DELAY"), "200ms")
                .env(format!("NOTIFY_{channel}__RETRY__MAX_DELAY"), "1s")
                .env(format!("NOTIFY_{channel}__RETRY__MAX_ATTEMPTS"), "6");
        }
        command
    }

    fn spawn(&mut self, binary: &'static str) -> anyhow::Result<()> {
        let path = self.dir.join("logs").join(format!("{binary}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut command = self.command(binary, &[]);
        command.stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        self.children.insert(binary, command.spawn().with_context(|| format!("starting {binary}"))?);
        Ok(())
    }

    /// SIGKILL, as `kill -9` sends: no graceful shutdown, nothing flushed.
    async fn kill_and_restart(&mut self, binaries: &[&'static str]) -> anyhow::Result<()> {
        for binary in binaries {
            if let Some(mut child) = self.children.remove(binary) {
                let _ = child.kill().await;
            }
        }
        for binary in binaries {
            self.spawn(binary)?;
        }
        Ok(())
    }

    async fn stop_all(&mut self) {
        for (_, mut child) in self.children.drain() {
            let _ = child.kill().await;
        }
    }
}

/// Runs `program` as `user` (the servers refuse to run as root).
fn as_user(user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", user, "--"]).arg(program);
    command
}

async fn checked(mut command: Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().await.with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

async fn chown(user: &str, path: &Path) -> anyhow::Result<()> {
    let mut command = Command::new("chown");
    command.arg("-R").arg(format!("{user}:")).arg(path);
    checked(command, "chown").await
}

struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
}

impl Postgres {
    async fn init(dir: &Path) -> anyhow::Result<Self> {
        let version = services::postgres_version()?;
        let base = dir.join("postgres");
        std::fs::create_dir_all(&base)?;
        chown("postgres", &base).await?;
        let this = Self {
            bin: PathBuf::from(format!("/usr/lib/postgresql/{version}/bin")),
            data: base.join("data"),
            log: base.join("log"),
        };
        let mut initdb = as_user("postgres", this.bin.join("initdb"));
        initdb.arg("-D").arg(&this.data).args(["-U", "postgres", "--auth=trust", "-E", "UTF8"]).stdout(Stdio::null());
        checked(initdb, "initdb").await?;
        this.start().await?;
        Ok(this)
    }

    fn pg_ctl(&self) -> Command {
        let mut command = as_user("postgres", self.bin.join("pg_ctl"));
        command.arg("-D").arg(&self.data);
        command
    }

    async fn start(&self) -> anyhow::Result<()> {
        let mut start = self.pg_ctl();
        let socket_dir = self.data.parent().expect("under the chaos folder");
        start
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-o"])
            .arg(format!("-p {PG_PORT} -c listen_addresses=127.0.0.1 -k {}", socket_dir.display()))
            .arg("start")
            .stdout(Stdio::null());
        checked(start, "pg_ctl start").await
    }

    /// `fast` shuts down cleanly; `immediate` is a crash (recovery from the log at start).
    async fn stop(&self, mode: &str) {
        let mut stop = self.pg_ctl();
        stop.args(["-m", mode, "stop"]).stdout(Stdio::null());
        if let Err(e) = checked(stop, "pg_ctl stop").await {
            say!("chaos: {e:#}");
        }
    }
}

struct Rabbit {
    dir: PathBuf,
}

impl Rabbit {
    async fn init(dir: &Path) -> anyhow::Result<Self> {
        let base = dir.join("rabbitmq");
        std::fs::create_dir_all(&base)?;
        std::fs::write(
            base.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{AMQP_PORT}\nloopback_users = none\n"),
        )?;
        // No plugins: the machine's management plugin would want port 15672 too.
        std::fs::write(base.join("enabled_plugins"), "[].\n")?;
        chown("rabbitmq", &base).await?;
        let this = Self { dir: base };
        this.start().await?;
        Ok(this)
    }

    fn env(&self, command: &mut Command) {
        command
            .env("RABBITMQ_NODENAME", RABBIT_NODE)
            .env("RABBITMQ_DIST_PORT", (AMQP_PORT + 1).to_string())
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"));
    }

    async fn start(&self) -> anyhow::Result<()> {
        let server = find_program("rabbitmq-server").context("rabbitmq-server is not installed")?;
        let mut command = Command::new(server);
        command.arg("-detached").stdout(Stdio::null());
        self.env(&mut command);
        checked(command, "rabbitmq-server -detached").await?;
        // The node registers a moment after -detached returns.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ctl(&["await_startup", "--timeout", "60"]).await.is_err() {
            if Instant::now() > deadline {
                bail!("the chaos RabbitMQ node did not start (see {})", self.dir.join("log").display());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    async fn stop(&self) {
        if let Err(e) = self.ctl(&["stop"]).await {
            say!("chaos: stopping RabbitMQ: {e:#}");
        }
    }

    fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("rabbitmqctl");
        command.args(["-n", RABBIT_NODE]).args(args);
        command
    }

    async fn ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        checked(self.ctl_command(args), &format!("rabbitmqctl {}", args.join(" "))).await
    }

    async fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.ctl_command(args).output().await.context("running rabbitmqctl")?;
        if !output.status.success() {
            bail!("rabbitmqctl {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A run that was killed may have left its servers running.
async fn stop_leftovers(dir: &Path) {
    let data = dir.join("postgres").join("data");
    if data.join("postmaster.pid").exists() {
        let version = services::postgres_version().unwrap_or_default();
        let mut stop = as_user("postgres", format!("/usr/lib/postgresql/{version}/bin/pg_ctl"));
        stop.arg("-D").arg(&data).args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = stop.status().await;
    }
    let mut stop = Command::new("rabbitmqctl");
    stop.args(["-n", RABBIT_NODE, "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
    let _ = stop.status().await;
}
