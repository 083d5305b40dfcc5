//! The platform as the benchmark runs it: release binaries, eight processes, a database
//! `notify_bench` and a RabbitMQ vhost `notify-bench` of their own (dropped and made again
//! on each run, so the benchmark never touches dev or test data), the sandbox provider on
//! every channel writing under `target/bench/sandbox/` (but for the peer shape, whose
//! novu-worker sends to the Novu stand-in).

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::Context;
use reqwest::Url;
use tokio::process::Command;

use crate::{
    dev::{self, BINARIES, Tenant},
    procs::Supervisor,
    say,
    services::{self, Endpoints, RabbitApi},
};

pub const DATABASE: &str = "notify_bench";
pub const VHOST: &str = "notify-bench";
/// Not the dev command's 8080, so a running `cargo xtask dev` is no obstacle.
pub const API_LISTEN: &str = "127.0.0.1:18180";
pub const CHANNELS: [&str; 6] = ["email", "sms", "whatsapp", "novu", "chat", "push"];

/// The key that seals the bench tenant's secrets (its integrations', its webhook
/// endpoint's; 32 bytes, base64; the run's database is dropped at the next run).
const BENCH_SECRETS_KEY: &str = "YmVuY2gtb25seS1zZWFsaW5nLWtleS0zMi1ieXRlcyE=";

/// The settings the benchmark changes from the defaults (it reports them).
#[derive(Clone, Debug)]
pub struct Tuning {
    pub worker_prefetch: u32,
    pub relay_batch_size: u32,
    pub rust_log: String,
}

impl Tuning {
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFY_WORKER__PREFETCH", self.worker_prefetch.to_string()),
            // The webhooks phase's one endpoint may take the webhook-worker's whole
            // prefetch: the phase measures the machinery, not the cap that protects a
            // receiver.
            ("NOTIFY_WEBHOOKS__ENDPOINT_CONCURRENCY", self.worker_prefetch.to_string()),
            ("NOTIFY_RELAY__BATCH_SIZE", self.relay_batch_size.to_string()),
            // The open loop keeps up to 4,096 requests in flight: the benchmark measures
            // how fast the stack goes, not the API's admission bound (512 by default).
            ("NOTIFY_ADMISSION__MAX_CONCURRENT_REQUESTS", "8192".to_string()),
            ("RUST_LOG", self.rust_log.clone()),
        ]
    }
}

#[derive(Clone)]
pub struct Stack {
    bin_dir: PathBuf,
    /// `target/bench`: the children's working directory (sandbox files, logs).
    pub dir: PathBuf,
    /// The bench's own way to the database.
    pub database_url: String,
    /// The binaries' way, when not `database_url` (the round trips' counting proxy).
    binaries_database_url: Option<String>,
    pub amqp_url: String,
    pub api: String,
    tuning: Tuning,
    /// The novu-worker's own settings (its provider), when not the sandbox.
    novu_env: Vec<(&'static str, String)>,
    /// Settings every binary is given besides the defaults.
    env: Vec<(&'static str, String)>,
}

impl Stack {
    pub fn new(endpoints: &Endpoints, bin_dir: PathBuf, dir: PathBuf, tuning: Tuning) -> anyhow::Result<Self> {
        let mut database_url = Url::parse(&endpoints.database_url).context("the database URL")?;
        database_url.set_path(&format!("/{DATABASE}"));
        let amqp_url = format!("{}/{}", endpoints.amqp_url.trim_end_matches('/'), services::percent_encode(VHOST));
        Ok(Self {
            bin_dir,
            dir,
            database_url: database_url.to_string(),
            binaries_database_url: None,
            amqp_url,
            api: format!("http://{API_LISTEN}"),
            tuning,
            novu_env: Vec::new(),
            env: Vec::new(),
        })
    }

    /// The same stack, its novu-worker configured with `env` instead of the sandbox.
    pub fn with_novu(&self, env: Vec<(&'static str, String)>) -> Self {
        Self { novu_env: env, ..self.clone() }
    }

    /// The same stack, every binary given `env` too.
    pub fn with_env(&self, env: Vec<(&'static str, String)>) -> Self {
        Self { env, ..self.clone() }
    }

    /// The same stack, its binaries reaching the database at `url`.
    pub fn with_binaries_database_url(&self, url: String) -> Self {
        Self { binaries_database_url: Some(url), ..self.clone() }
    }

    fn command(&self, binary: &str, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin_dir.join(binary));
        command
            .args(args)
            .current_dir(&self.dir)
            .env("NOTIFY_DATABASE_URL", self.binaries_database_url.as_ref().unwrap_or(&self.database_url))
            .env("NOTIFY_AMQP_URL", &self.amqp_url)
            .env("NOTIFY_LISTEN", API_LISTEN)
            // No trace export during a benchmark, whatever the shell has.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(dev::LOCAL_WEBHOOKS)
            .env("NOTIFY_SECRETS__KEYS__BENCH", BENCH_SECRETS_KEY)
            .envs(self.tuning.env())
            .envs(self.env.iter().map(|(k, v)| (*k, v)));
        command
    }

    /// A fresh database and vhost, migrated and declared, and the bench tenant with a rate
    /// limit that does not throttle the benchmark.
    pub async fn prepare(&self, endpoints: &Endpoints) -> anyhow::Result<Tenant> {
        let mut admin = services::connect_postgres(&endpoints.database_url).await?;
        say!("recreating database {DATABASE}");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", dev::quote_ident(DATABASE)))
            .execute(&mut admin)
            .await
            .context("dropping the bench database")?;
        sqlx::query(&format!("CREATE DATABASE {}", dev::quote_ident(DATABASE)))
            .execute(&mut admin)
            .await
            .context("creating the bench database")?;
        let rabbit = RabbitApi::new(&endpoints.rabbitmq_api)?;
        rabbit.ensure().await?;
        say!("recreating RabbitMQ vhost {VHOST}");
        rabbit.delete_vhost(VHOST).await?;
        rabbit.create_vhost(VHOST).await.context("creating the bench vhost")?;

        for sub in ["sandbox", "logs"] {
            let path = self.dir.join(sub);
            if path.exists() {
                std::fs::remove_dir_all(&path).with_context(|| format!("clearing {}", path.display()))?;
            }
            std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }

        let mut migrate = self.command("notify-admin", &["migrate"]);
        migrate.stdout(Stdio::null());
        dev::run_step(migrate, "notify-admin migrate").await?;
        let mut declare = self.command("outbox-relay", &["declare-topology"]);
        declare.stdout(Stdio::null());
        dev::run_step(declare, "outbox-relay declare-topology").await?;
        let tenant = dev::create_tenant(self.command("notify-admin", &["create-tenant", "bench"])).await?;
        let mut limit = self
            .command("notify-admin", &["set-rate-limit", &tenant.id, "--per-second", "1000000", "--burst", "1000000"]);
        limit.stdout(Stdio::null());
        dev::run_step(limit, "notify-admin set-rate-limit").await?;
        Ok(tenant)
    }

    /// Starts the binaries, each logging to `target/bench/logs/<binary>.log` (appended:
    /// a run starts the stack twice).
    pub fn start(&self, supervisor: &mut Supervisor) -> anyhow::Result<()> {
        for binary in BINARIES {
            let log_path = self.dir.join("logs").join(format!("{binary}.log"));
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?;
            let mut command = self.command(binary, &[]);
            if binary == "novu-worker" {
                command.envs(self.novu_env.iter().map(|(k, v)| (*k, v)));
            }
            // Every pool at its size, and the bench's own connection, would pass
            // PostgreSQL's 100 during the webhooks phase: the webhook-worker takes 3, the
            // least it runs with (two held by its group slots).
            if binary == "webhook-worker" {
                command.env("NOTIFY_DATABASE_MAX_CONNECTIONS", "3");
            }
            command.stdout(log.try_clone()?).stderr(log);
            supervisor.spawn(binary, command)?;
        }
        Ok(())
    }

    pub fn sandbox_dir(&self) -> PathBuf {
        self.dir.join("sandbox")
    }
}

/// Counts the lines the sandbox providers appended (one per message sent), reading only
/// what was appended since the last call.
pub struct SandboxCounter {
    files: Vec<(PathBuf, u64, u64)>,
}

impl SandboxCounter {
    pub fn new(dir: &Path) -> Self {
        Self { files: CHANNELS.iter().map(|c| (dir.join(format!("{c}.jsonl")), 0, 0)).collect() }
    }

    pub fn lines(&mut self) -> u64 {
        let mut buf = Vec::new();
        for (path, offset, lines) in &mut self.files {
            let Ok(mut file) = File::open(&*path) else { continue };
            buf.clear();
            if file.seek(SeekFrom::Start(*offset)).is_ok() && file.read_to_end(&mut buf).is_ok() {
                // Count complete lines only; a half-written one is read again next time.
                if let Some(last) = buf.iter().rposition(|b| *b == b'\n') {
                    *lines += buf[..=last].iter().filter(|b| **b == b'\n').count() as u64;
                    *offset += last as u64 + 1;
                }
            }
        }
        self.files.iter().map(|(_, _, lines)| lines).sum()
    }
}
