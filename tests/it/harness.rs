use std::{
    future::Future,
    path::PathBuf,
    time::{Duration, Instant},
};

use bootstrap::SecretString;
use domain::{Channel, RetryPolicy};
use queue::Topology;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor, PgConnection};
use store::Store;
use tokio::{sync::OnceCell, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use worker::{ChannelSettings, SandboxConfig, WorkerConfig, WorkerSettings, webhooks::WebhookWorkerConfig};

pub const DEADLINE: Duration = Duration::from_secs(20);

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn admin_database_url() -> String {
    env_or("NOTIFY_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
}

fn amqp_base_url() -> String {
    env_or("NOTIFY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
}

fn rabbitmq_api() -> reqwest::Url {
    env_or("NOTIFY_TEST_RABBITMQ_API", "http://guest:guest@127.0.0.1:15672")
        .parse()
        .expect("NOTIFY_TEST_RABBITMQ_API is a URL")
}

fn with_database(url: &str, name: &str) -> String {
    let mut u: reqwest::Url = url.parse().expect("database URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// A migrated database that test databases are cloned from, made once per test process
/// and named after the migrations, so a changed migration makes a new one.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let mut hash = Sha256::new();
            for m in store::MIGRATOR.iter() {
                hash.update(&m.checksum);
            }
            let name = format!("notify_test_template_{}", &hex::encode(hash.finalize())[..12]);
            let mut admin = PgConnection::connect(&admin_database_url()).await.expect("PostgreSQL is reachable");
            // Serialize template creation across test processes.
            admin.execute("SELECT pg_advisory_lock(7215001)").await.unwrap();
            let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut admin)
                .await
                .unwrap();
            if exists.is_none() {
                admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
                let url = with_database(&admin_database_url(), &name);
                let mut conn = PgConnection::connect(&url).await.unwrap();
                store::MIGRATOR.run(&mut conn).await.expect("migrations apply");
                conn.close().await.unwrap();
            }
            admin.execute("SELECT pg_advisory_unlock(7215001)").await.unwrap();
            admin.close().await.unwrap();
            name
        })
        .await
}

/// A fresh database, and a RabbitMQ vhost made the first time a test needs the broker.
/// Both are removed when the test ends, so the broker does not fill up with the quorum
/// queues of finished tests.
pub struct TestEnv {
    pub database_url: String,
    database: String,
    vhost: OnceCell<String>,
    pub store: Store,
}

impl TestEnv {
    pub async fn new() -> Self {
        let template = template().await;
        let database = format!("notify_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_database_url()).await.unwrap();
        admin.execute(format!("CREATE DATABASE {database} TEMPLATE {template}").as_str()).await.unwrap();
        admin.close().await.unwrap();
        let database_url = with_database(&admin_database_url(), &database);
        let store = Store::connect_lazy(&database_url, 4).unwrap();
        Self { database_url, database, vhost: OnceCell::new(), store }
    }

    pub async fn vhost(&self) -> &str {
        self.vhost.get_or_init(create_vhost).await
    }

    pub async fn amqp_url(&self) -> String {
        format!("{}/{}", amqp_base_url(), self.vhost().await)
    }
}

async fn create_vhost() -> String {
    let vhost = format!("notify-test-{}", Uuid::new_v4().simple());
    let management = Management::new();
    management
        .request(reqwest::Method::PUT, &format!("/api/vhosts/{vhost}"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("the RabbitMQ management API creates a vhost (is rabbitmq_management enabled?)");
    let amqp_user = amqp_base_url().parse::<reqwest::Url>().unwrap().username().to_owned();
    management
        .request(reqwest::Method::PUT, &format!("/api/permissions/{vhost}/{amqp_user}"))
        .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("vhost permissions");
    vhost
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let database = self.database.clone();
        let vhost = self.vhost.get().cloned();
        // Drop cannot await, and the test's runtime is the one dropping us: clean up on a
        // thread of its own. Failing to clean up is not a test failure (`cargo xtask test`
        // removes leftovers before each run).
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Some(vhost) = vhost {
                    let _ = Management::new()
                        .request(reqwest::Method::DELETE, &format!("/api/vhosts/{vhost}"))
                        .send()
                        .await;
                }
                if let Ok(mut admin) = PgConnection::connect(&admin_database_url()).await {
                    let _ = admin.execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str()).await;
                }
            })
        })
        .join();
    }
}

/// The RabbitMQ management HTTP API.
pub struct Management {
    base: reqwest::Url,
    user: String,
    password: String,
    http: reqwest::Client,
}

impl Management {
    pub fn new() -> Self {
        let mut base = rabbitmq_api();
        let user = base.username().to_owned();
        let password = base.password().unwrap_or_default().to_owned();
        // Credentials go in the header only: reqwest would send the URL's as well.
        base.set_username("").unwrap();
        base.set_password(None).unwrap();
        Self { base, user, password, http: reqwest::Client::new() }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.base.join(path).unwrap()).basic_auth(&self.user, Some(&self.password))
    }
}

/// A service running in this process; `stop` shuts it down gracefully, `kill` drops it
/// mid-flight as a crash would (its connections close, its transactions roll back).
pub struct Service {
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

impl Service {
    fn spawn<F>(f: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(f(shutdown.clone()));
        Self { shutdown, handle: Some(handle) }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("running");
        handle.await.expect("service task").expect("service ran without error");
    }

    pub async fn kill(mut self) {
        let handle = self.handle.take().expect("running");
        handle.abort();
        let _ = handle.await;
    }
}

/// Fast retries, so tests see the whole schedule in well under a second.
pub fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay: Duration::from_millis(50),
        multiplier: 2.0,
        max_delay: Duration::from_millis(200),
        jitter: 0.0,
    }
}

pub struct WorkerOptions {
    pub prefetch: u16,
    pub retry: RetryPolicy,
    pub sandbox: SandboxConfig,
    /// The channel's providers in order of preference, and their settings.
    pub providers: Vec<String>,
    pub rate_limits: std::collections::BTreeMap<String, f64>,
    /// Where the worker serves `/healthz` and `/readyz`.
    pub listen: Option<std::net::SocketAddr>,
    /// How long a claim holds a delivery, and a provider call may take.
    pub lease: Duration,
    pub provider_timeout: Duration,
    /// The providers' sections of the channel, as a config file has them under
    /// `[<channel>]`: `{"twilio": {"account_sid": …}}`, read through the units.
    pub settings: Value,
    /// The keys that open sealed secrets; [`test_secrets`] unless set.
    pub secrets: Option<bootstrap::seal::SecretsConfig>,
    /// Where tenants' integrations call, by provider (`integrations.base_urls`): a stand-in.
    pub integration_base_urls: std::collections::BTreeMap<String, String>,
    /// `<channel>.tenant_fallback`: tenants may use the operator's providers.
    pub tenant_fallback: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            prefetch: 16,
            retry: fast_retry(4),
            sandbox: SandboxConfig::default(),
            providers: vec!["sandbox".into()],
            rate_limits: Default::default(),
            listen: None,
            lease: WorkerSettings::default().lease,
            provider_timeout: WorkerSettings::default().provider_timeout,
            settings: serde_json::json!({}),
            secrets: None,
            integration_base_urls: Default::default(),
            tenant_fallback: true,
        }
    }
}

/// The API, with a tenant and its key, plus whatever relays and workers a test starts.
pub struct TestApp {
    pub env: TestEnv,
    pub api_url: String,
    pub api_key: String,
    pub tenant_id: Uuid,
    pub http: reqwest::Client,
    pub sandbox: tempfile::TempDir,
    _api: Service,
}

impl TestApp {
    /// The API alone: no relay, no workers.
    pub async fn api_only() -> Self {
        Self::api_with(|_| {}).await
    }

    /// The API alone, with settings of the test's own (receipts, ...) set by `configure`.
    pub async fn api_with(configure: impl FnOnce(&mut notify_api::Config)) -> Self {
        Self::start_api(false, configure).await
    }

    /// The API alone, connected to the test's vhost: inbox events go through the broker,
    /// so they reach the sockets of a [`Self::second_api`] too.
    pub async fn api_with_broker(configure: impl FnOnce(&mut notify_api::Config)) -> Self {
        Self::start_api(true, configure).await
    }

    /// Another API replica on the same database, vhost and token secret, with `configure`
    /// applied; returns its URL.
    pub async fn second_api(&self, configure: impl FnOnce(&mut notify_api::Config)) -> (String, Service) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = api_config(&self.env, true).await;
        configure(&mut config);
        (url, Service::spawn(|shutdown| notify_api::run(config, listener, shutdown)))
    }

    async fn start_api(broker: bool, configure: impl FnOnce(&mut notify_api::Config)) -> Self {
        let env = TestEnv::new().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = api_config(&env, broker).await;
        configure(&mut config);
        let api = Service::spawn(|shutdown| notify_api::run(config, listener, shutdown));
        let tenant = env.store.create_tenant("test").await.unwrap();
        Self {
            env,
            api_url,
            api_key: tenant.api_key,
            tenant_id: tenant.tenant_id,
            http: reqwest::Client::new(),
            sandbox: tempfile::tempdir().unwrap(),
            _api: api,
        }
    }

    /// The API (publishing what it accepts itself, as it does with a broker), one relay
    /// and a default worker for every channel.
    pub async fn spawn() -> (Self, Vec<Service>) {
        let app = Self::api_with_broker(|_| {}).await;
        // Declared before the first accept, which the relay's own declaration may not be.
        let (conn, _) = app.amqp().await;
        let _ = conn.close(200, "declared".into()).await;
        let mut services = vec![app.start_relay(500).await];
        for channel in Channel::QUEUED {
            services.push(app.start_worker(channel, WorkerOptions::default()).await);
        }
        (app, services)
    }

    pub async fn start_relay(&self, batch_size: i64) -> Service {
        self.start_relay_with(outbox_relay::RelaySettings { batch_size, ..Default::default() }).await
    }

    pub async fn start_relay_with(&self, relay: outbox_relay::RelaySettings) -> Service {
        let config = outbox_relay::Config {
            database_url: Some(SecretString::from(self.env.database_url.clone())),
            amqp_url: Some(SecretString::from(self.env.amqp_url().await)),
            database_max_connections: 3,
            relay,
            broker: Topology::default(),
        };
        Service::spawn(|shutdown| outbox_relay::run(config, shutdown))
    }

    /// A worker of `channel` calling `providers`, test doubles of the provider trait.
    pub async fn start_worker_with(
        &self,
        channel: Channel,
        options: WorkerOptions,
        providers: Vec<std::sync::Arc<dyn worker::Provider>>,
    ) -> Service {
        let config = self.worker_config(&options).await;
        Service::spawn(move |shutdown| worker::run(channel, config, providers, shutdown))
    }

    async fn worker_config(&self, options: &WorkerOptions) -> WorkerConfig {
        let sandbox = SandboxConfig { dir: self.sandbox.path().to_owned(), ..options.sandbox.clone() };
        WorkerConfig {
            database_url: Some(SecretString::from(self.env.database_url.clone())),
            amqp_url: Some(SecretString::from(self.env.amqp_url().await)),
            database_max_connections: 4,
            environment: Default::default(),
            worker: WorkerSettings {
                prefetch: options.prefetch,
                listen: options.listen,
                lease: options.lease,
                provider_timeout: options.provider_timeout,
                ..Default::default()
            },
            broker: Topology::default(),
            secrets: options.secrets.clone().unwrap_or_else(test_secrets),
            integrations: providers::IntegrationRules {
                allow_private_hosts: true,
                base_urls: options.integration_base_urls.clone(),
                ..Default::default()
            },
            channel: ChannelSettings {
                retry: options.retry.clone(),
                sandbox,
                providers: options.providers.clone(),
                rate_limits: options.rate_limits.clone(),
                tenant_fallback: options.tenant_fallback,
                ..Default::default()
            },
        }
    }

    /// A worker of `channel` as its binary runs it: the providers `options` lists, read
    /// from `options.settings` through the channel's units of `providers::CATALOG`.
    pub async fn start_worker(&self, channel: Channel, options: WorkerOptions) -> Service {
        let worker = self.worker_config(&options).await;
        // `[integrations]` as the binary's configuration has it next to the channel's (the
        // operator's Web Push reads `allow_private_hosts`: wiremock is on loopback).
        let section = serde_json::json!({
            channel.as_str(): options.settings,
            "integrations": {"allow_private_hosts": true, "base_urls": options.integration_base_urls},
        });
        let figment = figment::Figment::from(figment::providers::Serialized::defaults(section));
        Service::spawn(move |shutdown| async move {
            let units: Vec<&dyn providers::ProviderUnit> = providers::units(channel).collect();
            worker::run_units(channel, worker, &figment, &units, shutdown).await
        })
    }

    /// A webhook-worker that may reach loopback (the tests' receivers), retrying after
    /// 100 ms three times, with `configure` applied.
    pub async fn start_webhook_worker(&self, configure: impl FnOnce(&mut WebhookWorkerConfig)) -> Service {
        let mut config = WebhookWorkerConfig {
            database_url: Some(SecretString::from(self.env.database_url.clone())),
            amqp_url: Some(SecretString::from(self.env.amqp_url().await)),
            database_max_connections: 4,
            worker: WorkerSettings { prefetch: 16, lease: Duration::from_secs(20), ..Default::default() },
            broker: Topology::default(),
            secrets: test_secrets(),
            webhooks: providers::webhook_endpoint::WebhookSettings {
                allowed_subnets: vec!["127.0.0.0/8".parse().unwrap()],
                timeout: Duration::from_secs(5),
                retry_schedule: vec![Duration::from_millis(100).into(); 3],
                retry_jitter: 0.0,
                ..Default::default()
            },
        };
        configure(&mut config);
        Service::spawn(|shutdown| worker::webhooks::run(config, shutdown))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }

    /// Any API call with the tenant's key: `method` on `path` with an optional JSON body;
    /// returns status and JSON body (`null` when there is none).
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self.http.request(method, self.url(path)).bearer_auth(&self.api_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a notification with the tenant's key; returns status and JSON body.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        let response =
            self.http.post(self.url("/v1/notifications")).bearer_auth(&self.api_key).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs and expects `202`; returns the notification id.
    pub async fn accept(&self, body: &Value) -> Uuid {
        let (status, answer) = self.post(body).await;
        assert_eq!(status, 202, "answer: {answer}");
        answer["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn get(&self, id: Uuid) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/v1/notifications/{id}")))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The notification's deliveries (its first 500) with their rendered content.
    pub async fn deliveries_with_content(&self, id: Uuid) -> Vec<Value> {
        let path = format!("/v1/notifications/{id}/deliveries?include=content&limit=500");
        let (status, page) = self.call("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().unwrap().clone()
    }

    /// Polls the notification until its status is `status`, up to [`DEADLINE`].
    pub async fn wait_for_status(&self, id: Uuid, status: &str) -> Value {
        let started = Instant::now();
        loop {
            let n = self.get(id).await;
            if n["status"] == status {
                return n;
            }
            assert!(started.elapsed() < DEADLINE, "notification {id} never became {status}: {n:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn sandbox_file(&self, channel: Channel) -> PathBuf {
        self.sandbox.path().join(format!("{channel}.jsonl"))
    }

    /// The messages the sandbox provider of `channel` recorded.
    pub fn sandbox_messages(&self, channel: Channel) -> Vec<Value> {
        match std::fs::read_to_string(self.sandbox_file(channel)) {
            Ok(text) => text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect(),
            Err(_) => vec![],
        }
    }

    /// How many times the sandbox sent the delivery.
    pub fn sends_of(&self, channel: Channel, delivery_id: &str) -> usize {
        self.sandbox_messages(channel).iter().filter(|m| m["delivery_id"] == delivery_id).count()
    }

    /// A broker connection to the test's vhost, topology declared.
    pub async fn amqp(&self) -> (lapin::Connection, lapin::Channel) {
        let conn = queue::connect(&self.env.amqp_url().await, "test").await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        Topology::default().declare(&channel).await.unwrap();
        (conn, channel)
    }
}

/// The key every test API signs subscriber tokens with, so replicas verify each other's.
pub const TOKEN_SECRET: &str = "notify-tests-inbox-token-secret-0123456789";

/// An API's settings for `env`: its database, and its vhost when `broker`.
async fn api_config(env: &TestEnv, broker: bool) -> notify_api::Config {
    let mut config = notify_api::Config {
        database_url: Some(SecretString::from(env.database_url.clone())),
        database_max_connections: 8,
        ..Default::default()
    };
    if broker {
        config.amqp_url = Some(SecretString::from(env.amqp_url().await));
    }
    config.inbox.token_secret = Some(SecretString::from(TOKEN_SECRET));
    config.secrets = test_secrets();
    // No test reaches a real provider: integrations call a closed local port unless a test
    // points them at its wiremock stand-in (`integrations.base_urls`), on loopback.
    config.integrations.allow_private_hosts = true;
    for unit in providers::CATALOG {
        config.integrations.base_urls.insert(unit.name().to_owned(), "http://127.0.0.1:9".to_owned());
    }
    config
}

/// Polls `check` until it returns `Some`, up to [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(DEADLINE, what, check).await
}

/// Polls `check` until it returns `Some`, up to `deadline`.
pub async fn within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a change made through another connection may take to reach an API replica's
/// cache (its change notification; normally milliseconds).
pub const NOTIFIED: Duration = Duration::from_secs(2);

pub fn email(to: &str) -> Value {
    serde_json::json!({"type": "test.email", "to": [{"email": to}], "content": {"subject": "Hi", "text": "Hello"}})
}

impl TestApp {
    /// Deliveries in status `sent`, and deliveries in all.
    pub async fn sent_and_total(&self) -> (i64, i64) {
        sqlx::query_as("SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FROM deliveries")
            .fetch_one(self.env.store.pool())
            .await
            .unwrap()
    }

    /// Waits until every delivery is `sent`.
    pub async fn wait_all_sent(&self) {
        eventually("every delivery sent", || async {
            let (sent, total) = self.sent_and_total().await;
            (sent == total).then_some(())
        })
        .await
    }

    /// Accepts `n` email notifications, eight requests at a time; returns their ids.
    pub async fn accept_many(&self, n: usize) -> Vec<Uuid> {
        use futures_util::{StreamExt, stream};
        stream::iter(0..n)
            .map(|i| async move { self.accept(&email(&format!("user{i}@example.com"))).await })
            .buffered(8)
            .collect()
            .await
    }

    /// Closes every client connection to the test's vhost, as a broker restart or a
    /// network cut would, once there are at least two (relay and worker). Returns how many.
    pub async fn close_broker_connections(&self) -> usize {
        let management = Management::new();
        let names: Vec<String> = eventually("the services' broker connections", || async {
            let list: Value = management
                .request(reqwest::Method::GET, &format!("/api/vhosts/{}/connections", self.env.vhost().await))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let names: Vec<String> =
                list.as_array()?.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect();
            (names.len() >= 2).then_some(names)
        })
        .await;
        for name in &names {
            let path = format!("/api/connections/{}", urlencode(name));
            management.request(reqwest::Method::DELETE, &path).send().await.unwrap().error_for_status().unwrap();
        }
        names.len()
    }

    /// Waits until `n` API replicas listen for inbox events: the fanout exchange
    /// `notify.inbox` has a queue bound for each (before that, a replica's events reach
    /// only its own sockets).
    pub async fn wait_inbox_replicas(&self, n: usize) {
        let management = Management::new();
        let path = format!("/api/exchanges/{}/notify.inbox/bindings/source", self.env.vhost().await);
        eventually("every API replica bound to notify.inbox", || async {
            let response = management.request(reqwest::Method::GET, &path).send().await.ok()?;
            let bindings: Value = response.json().await.ok()?;
            (bindings.as_array()?.len() >= n).then_some(())
        })
        .await
    }

    pub async fn delivery_ids(&self) -> Vec<String> {
        let rows: Vec<(Uuid,)> =
            sqlx::query_as("SELECT id FROM deliveries").fetch_all(self.env.store.pool()).await.unwrap();
        rows.into_iter().map(|r| r.0.to_string()).collect()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The intake of one notification `request` for `tenant`, validated and planned as the
/// API does, without an idempotency key.
pub async fn intake_of(store: &Store, tenant: Uuid, request: Value) -> store::Intake {
    let request: domain::NewNotification = serde_json::from_value(request).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let n = request.validate(domain::request::Limits::default(), now).unwrap();
    let directory = store.directory(tenant, &[&n]).await.unwrap();
    let mut data = store.subscriber_data(tenant);
    let mut budget = domain::plan::Budget::default();
    let mut plans = domain::plan::plan_all(&[&n], &directory, now, &mut budget, 1, &mut data).await.unwrap();
    let plan = plans.pop().unwrap().unwrap();
    store::Intake { notification: n, plan, idempotency: None, subscribers: vec![] }
}

/// The tests' key for sealed secrets (integrations, chat webhook addresses).
pub fn test_secrets() -> bootstrap::seal::SecretsConfig {
    bootstrap::seal::SecretsConfig {
        current: Some("test".into()),
        keys: [("test".to_owned(), SecretString::from("dGVzdC1vbmx5LXNlYWxpbmcta2V5LTMyLWJ5dGVzISE="))].into(),
    }
}
