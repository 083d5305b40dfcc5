//! `cargo xtask dev`: the whole platform on this machine, against the local PostgreSQL
//! and RabbitMQ, with the sandbox providers writing to `target/dev/sandbox/`.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use domain::webhook::WebhookSecret;
use serde_json::Value;
use tokio::process::Command;

use crate::{
    cargo,
    procs::{Exit, Signals, Supervisor, describe},
    receiver::Receiver,
    say,
    services::{self, Endpoints},
    workspace_root,
};

pub struct Options {
    pub port: u16,
    pub smoke: bool,
}

/// The platform's binaries, in the order they start.
pub const BINARIES: [&str; 9] = [
    "notify-api",
    "outbox-relay",
    "email-worker",
    "sms-worker",
    "whatsapp-worker",
    "novu-worker",
    "chat-worker",
    "push-worker",
    "webhook-worker",
];

const DEV_DATABASE: &str = "notify_dev";
const DEV_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/notify_dev";
const DEV_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The dev API's key for subscriber tokens: fixed, so a demo URL printed by one run works
/// in the next. Never use it anywhere else.
/// The local platform's key for sealed secrets: 32 bytes in base64.
pub const DEV_SECRETS_KEY: &str = "ZGV2LW9ubHktc2VhbGluZy1rZXktMzItYnl0ZXMhISE=";
/// Webhook endpoints of a stack on this machine (dev, bench, chaos): a local receiver,
/// over http on loopback. Their secrets are sealed with the stack's key.
pub const LOCAL_WEBHOOKS: [(&str, &str); 2] =
    [("NOTIFY_WEBHOOKS__ALLOW_HTTP", "true"), ("NOTIFY_WEBHOOKS__ALLOWED_SUBNETS", r#"["127.0.0.0/8"]"#)];
const DEV_TOKEN_SECRET: &str = "notify-dev-inbox-token-secret-not-for-production";

/// The side port of the API (9089, `/metrics` only there), the relay (9090) and each
/// worker (9091 to 9097).
fn side_port(index: usize) -> u16 {
    9089 + index as u16
}

const HEALTH_DEADLINE: Duration = Duration::from_secs(30);
const SMOKE_DEADLINE: Duration = Duration::from_secs(10);
pub const STOP_GRACE: Duration = Duration::from_secs(25);

pub async fn run(options: Options) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let endpoints = Endpoints::defaults();
    services::ensure_services(&endpoints).await?;

    build(&root, false).await?;
    let bin_dir = target_dir(&root)?.join("debug");
    let dev_dir = root.join("target").join("dev");
    std::fs::create_dir_all(&dev_dir).with_context(|| format!("creating {}", dev_dir.display()))?;
    let sandbox_dir = dev_dir.join("sandbox");

    ensure_database(&endpoints.database_url, DEV_DATABASE).await?;

    let listen = format!("127.0.0.1:{}", options.port);
    let api = format!("http://{listen}");
    let env: Vec<(&str, String)> = vec![
        ("NOTIFY_DATABASE_URL", DEV_DATABASE_URL.into()),
        ("NOTIFY_AMQP_URL", DEV_AMQP_URL.into()),
        ("NOTIFY_LISTEN", listen.clone()),
        ("RUST_LOG", std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "info".into())),
    ];
    let command = |binary: &str, args: &[&str]| {
        let mut command = Command::new(bin_dir.join(binary));
        command.args(args).current_dir(&dev_dir).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        command.envs(LOCAL_WEBHOOKS).env("NOTIFY_SECRETS__KEYS__DEV", DEV_SECRETS_KEY);
        command
    };

    say!("applying migrations to {DEV_DATABASE}");
    run_step(command("notify-admin", &["migrate"]), "notify-admin migrate").await?;
    say!("declaring the RabbitMQ topology");
    run_step(command("outbox-relay", &["declare-topology"]), "outbox-relay declare-topology").await?;
    forget_local_receivers().await?;
    say!("creating the demo tenant");
    let tenant = create_tenant(command("notify-admin", &["create-tenant", "demo"])).await?;

    if tokio::net::TcpStream::connect(&listen).await.is_ok() {
        bail!("something already listens on {listen} (another `cargo xtask dev`?): stop it, or pass --port <other>");
    }

    // From here on, Ctrl-C and SIGTERM are ours to handle: every wait races them.
    let mut signals = Signals::install()?;
    let mut supervisor = Supervisor::new();
    // Every binary serves /healthz, /readyz and /metrics on a port of its own.
    for (i, binary) in BINARIES.into_iter().enumerate() {
        let mut process = command(binary, &[]);
        if binary == "notify-api" {
            // The inbox demo's token lasts the day (the longest a subscriber token may).
            process.env("NOTIFY_INBOX__TOKEN_SECRET", DEV_TOKEN_SECRET).env("NOTIFY_INBOX__TOKEN_TTL", "24h");
        }
        let key = match binary {
            "notify-api" => "NOTIFY_OPS_LISTEN",
            "outbox-relay" => "NOTIFY_RELAY__LISTEN",
            _ => "NOTIFY_WORKER__LISTEN",
        };
        process.env(key, format!("127.0.0.1:{}", side_port(i)));
        if let Err(e) = supervisor.spawn(binary, process) {
            supervisor.stop(STOP_GRACE).await;
            return Err(e);
        }
    }

    let client = services::http_client()?;
    let receiver = Receiver::start(true).await?;
    say!("waiting for {api}/healthz (at most {}s)", HEALTH_DEADLINE.as_secs());
    match race(wait_healthy(&client, &api), &mut signals, &mut supervisor).await {
        Race::Done(Ok(())) => {}
        Race::Done(Err(e)) => return fail(&mut supervisor, e).await,
        Race::Signal(name) => return interrupted(&mut supervisor, name).await,
        Race::Exited(exit) => return died(&mut supervisor, exit).await,
    }

    let seed = async {
        seed_directory(&client, &api, &tenant.api_key).await?;
        receiver.set_secret(webhook_endpoint(&client, &api, &tenant.api_key, &receiver.url, &["*"]).await?);
        inbox_demo_token(&client, &api, &tenant.api_key).await
    };
    let inbox_token = match race(seed, &mut signals, &mut supervisor).await {
        Race::Done(Ok(token)) => token,
        Race::Done(Err(e)) => return fail(&mut supervisor, e).await,
        Race::Signal(name) => return interrupted(&mut supervisor, name).await,
        Race::Exited(exit) => return died(&mut supervisor, exit).await,
    };
    print_banner(&api, &tenant, &sandbox_dir, &inbox_token, &receiver.url);

    if options.smoke {
        let smoke = smoke(&client, &api, &tenant.api_key, &sandbox_dir, &receiver);
        return match race(smoke, &mut signals, &mut supervisor).await {
            Race::Done(Ok(())) => {
                if supervisor.stop(STOP_GRACE).await {
                    say!("smoke test passed");
                    Ok(ExitCode::SUCCESS)
                } else {
                    say!("smoke test failed: the notification was sent, but a process did not stop cleanly on SIGTERM");
                    Ok(ExitCode::FAILURE)
                }
            }
            Race::Done(Err(e)) => fail(&mut supervisor, e.context("smoke test failed")).await,
            Race::Signal(name) => {
                supervisor.stop(STOP_GRACE).await;
                say!("{name}: smoke test interrupted");
                Ok(ExitCode::FAILURE)
            }
            Race::Exited(exit) => died(&mut supervisor, exit).await,
        };
    }

    match race(std::future::pending::<()>(), &mut signals, &mut supervisor).await {
        Race::Signal(name) => interrupted(&mut supervisor, name).await,
        Race::Exited(exit) => died(&mut supervisor, exit).await,
        Race::Done(()) => unreachable!("pending never completes"),
    }
}

/// `cargo build --bins` (with `--release` if `release`) of the whole workspace, in one
/// invocation: the same command as CI's build step, so its features, and so its build,
/// are shared (naming the packages with `-p` unifies other features and builds the
/// dependencies again). Returns how long it took.
pub async fn build(root: &Path, release: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut command = Command::new(cargo());
    command.args(["build", "--bins"]).current_dir(root);
    if release {
        command.arg("--release");
    }
    say!("building: cargo build{} --bins", if release { " --release" } else { "" });
    let status = command.status().await.context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({})", describe(&status));
    }
    say!("build done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(started.elapsed())
}

/// Where cargo puts its output: `CARGO_TARGET_DIR` (relative to where cargo ran) if set,
/// else the workspace's `target/`.
pub fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => Ok(std::env::current_dir()?.join(dir)),
        None => Ok(root.join("target")),
    }
}

async fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = services::connect_postgres(admin_url).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .context("looking for the dev database")?;
    if exists.is_none() {
        say!("creating database {name}");
        sqlx::query(&format!("CREATE DATABASE {}", quote_ident(name)))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    Ok(())
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub async fn run_step(mut command: Command, what: &str) -> anyhow::Result<()> {
    let status = command.status().await.with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({})", describe(&status));
    }
    Ok(())
}

pub struct Tenant {
    pub id: String,
    pub api_key: String,
}

pub async fn create_tenant(mut command: Command) -> anyhow::Result<Tenant> {
    let output = command.stderr(Stdio::inherit()).output().await.context("running notify-admin create-tenant")?;
    if !output.status.success() {
        bail!("notify-admin create-tenant failed ({})", describe(&output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
            .with_context(|| format!("notify-admin create-tenant printed no `{key}=` line"))
    };
    Ok(Tenant { id: field("tenant_id")?, api_key: field("api_key")? })
}

enum Race<T> {
    Done(T),
    Signal(&'static str),
    Exited(Exit),
}

/// Runs `work` until it completes, a signal arrives, or a child exits.
async fn race<T>(work: impl Future<Output = T>, signals: &mut Signals, supervisor: &mut Supervisor) -> Race<T> {
    tokio::select! {
        result = work => Race::Done(result),
        name = signals.recv() => Race::Signal(name),
        exit = supervisor.next_exit() => Race::Exited(exit),
    }
}

async fn interrupted(supervisor: &mut Supervisor, signal: &str) -> anyhow::Result<ExitCode> {
    say!("{signal} received: stopping the platform");
    supervisor.stop(STOP_GRACE).await;
    say!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn died(supervisor: &mut Supervisor, exit: Exit) -> anyhow::Result<ExitCode> {
    let how = match &exit.status {
        Ok(status) => describe(status),
        Err(e) => format!("status unknown: {e}"),
    };
    say!("{} exited unexpectedly ({how}); stopping the others", exit.name);
    supervisor.stop(STOP_GRACE).await;
    Ok(ExitCode::FAILURE)
}

async fn fail(supervisor: &mut Supervisor, error: anyhow::Error) -> anyhow::Result<ExitCode> {
    say!("error: {error:#}");
    supervisor.stop(STOP_GRACE).await;
    Ok(ExitCode::FAILURE)
}

pub async fn wait_healthy(client: &reqwest::Client, api: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let response = client.get(format!("{api}/healthz")).timeout(Duration::from_secs(1)).send().await;
        if response.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
            say!("API healthy after {} ms", started.elapsed().as_millis());
            return Ok(());
        }
        if started.elapsed() > HEALTH_DEADLINE {
            bail!("{api}/healthz did not answer 200 within {}s", HEALTH_DEADLINE.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The example notification, as printed for curl and as the smoke test sends it.
const EXAMPLE_BODY: &str = r#"{"type":"demo.hello","to":[{"email":"ada@example.com"}],"content":{"subject":"Hello","text":"Hello from Notify"}}"#;

/// The same by subscriber id: the type's template renders it in the subscriber's locale.
const SUBSCRIBER_BODY: &str =
    r#"{"type":"demo.welcome","to":[{"subscriber_id":"demo-user"}],"data":{"product":"Notify"}}"#;

/// One notification of `demo.channels` for `demo-user`: a delivery on every channel, each
/// rendered from the type's template for it.
const EVERY_CHANNEL_BODY: &str =
    r#"{"type":"demo.channels","to":[{"subscriber_id":"demo-user"}],"data":{"product":"Notify"}}"#;

/// The channels of `demo.channels`, and the status of each one's delivery once it went
/// well (the inbox's is `delivered` at the accept).
const EVERY_CHANNEL: [(&str, &str); 7] = [
    ("email", "sent"),
    ("sms", "sent"),
    ("whatsapp", "sent"),
    ("novu", "sent"),
    ("chat", "sent"),
    ("push", "sent"),
    ("in_app", "delivered"),
];

/// `demo-user`'s chat address: a Slack user id, a direct message.
const DEMO_CHAT_RECIPIENT: &str = "slack:U024BE7LH";

/// `demo-user`'s phone, as its app registers it (`PUT .../devices/demo-phone`): a push
/// delivery's recipient is the device's id, and the sandbox records it (never the token).
const DEMO_DEVICE: &str = "demo-phone";

/// What the demo tenant starts with: the type `demo.welcome`, its email template in
/// English and German; the type `demo.channels`, on every channel, with a template for
/// each (each says "by <channel>"); the subscriber `demo-user` (German, with an address
/// on every channel) and its phone `demo-phone` (an FCM device), all through the API.
async fn seed_directory(client: &reqwest::Client, api: &str, key: &str) -> anyhow::Result<()> {
    let puts = [
        ("/v1/types/demo.welcome", r#"{"channels":["email"]}"#),
        (
            "/v1/templates/demo.welcome/email",
            r#"{"subject":"Welcome to {{ product }}","text":"Hello {{ subscriber.data.name }}, welcome to {{ product }}."}"#,
        ),
        (
            "/v1/templates/demo.welcome/email?locale=de",
            r#"{"subject":"Willkommen bei {{ product }}","text":"Hallo {{ subscriber.data.name }}, willkommen bei {{ product }}."}"#,
        ),
        ("/v1/types/demo.channels", r#"{"channels":["email","sms","whatsapp","novu","chat","push","in_app"]}"#),
        (
            "/v1/templates/demo.channels/email",
            r#"{"subject":"Hello from {{ product }}","text":"Hello {{ subscriber.data.name }}, by email."}"#,
        ),
        ("/v1/templates/demo.channels/sms", r#"{"text":"Hello {{ subscriber.data.name }}, by sms."}"#),
        ("/v1/templates/demo.channels/whatsapp", r#"{"text":"Hello {{ subscriber.data.name }}, by whatsapp."}"#),
        ("/v1/templates/demo.channels/chat", r#"{"text":"Hello {{ subscriber.data.name }}, by chat."}"#),
        (
            "/v1/templates/demo.channels/push",
            r#"{"title":"Hello from {{ product }}","body":"Hello {{ subscriber.data.name }}, by push."}"#,
        ),
        (
            "/v1/templates/demo.channels/in_app",
            r#"{"title":"Hello from {{ product }}","body":"Hello {{ subscriber.data.name }}, by in_app."}"#,
        ),
        (
            "/v1/subscribers/demo-user",
            r#"{"email":"grace@example.com","phone":"+15555550100","whatsapp":"+15555550100","chat":{"slack":"U024BE7LH"},"locale":"de-DE","data":{"name":"Grace"}}"#,
        ),
        (
            "/v1/subscribers/demo-user/devices/demo-phone",
            r#"{"platform":"fcm","token":"demo-fcm-registration-token:APA91bDemoOnly","app":"notify-demo"}"#,
        ),
    ];
    for (path, body) in puts {
        let response = client
            .put(format!("{api}{path}"))
            .bearer_auth(key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("PUT {path}"))?;
        if !response.status().is_success() {
            let status = response.status();
            bail!("PUT {path} answered {status}: {}", response.text().await.unwrap_or_default());
        }
    }
    Ok(())
}

/// What the local receivers' endpoints are described as.
const LOCAL_RECEIVER: &str = "a local receiver of cargo xtask";

/// Deletes the endpoints earlier runs made for their receivers, which ended with them: a
/// message of theirs still to be retried would fail against a closed port for a day.
async fn forget_local_receivers() -> anyhow::Result<()> {
    let mut conn = services::connect_postgres(DEV_DATABASE_URL).await?;
    sqlx::query("DELETE FROM webhook_endpoints WHERE description = $1")
        .bind(LOCAL_RECEIVER)
        .execute(&mut conn)
        .await
        .context("deleting the endpoints of earlier runs' receivers")?;
    Ok(())
}

/// A webhook endpoint of the tenant of `key`, taking `events`, at the local receiver
/// `url`; returns its signing secret.
pub async fn webhook_endpoint(
    client: &reqwest::Client,
    api: &str,
    key: &str,
    url: &str,
    events: &[&str],
) -> anyhow::Result<WebhookSecret> {
    let body = serde_json::json!({"url": url, "events": events, "description": LOCAL_RECEIVER});
    let response = client.post(format!("{api}/v1/webhooks")).bearer_auth(key).json(&body).send().await;
    let response = response.context("POST /v1/webhooks")?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST /v1/webhooks answered {status}: {text}");
    }
    let created: Value = serde_json::from_str(&text).with_context(|| format!("POST /v1/webhooks answered {text}"))?;
    let secret = created["secret"].as_str().unwrap_or_default();
    WebhookSecret::parse(secret).with_context(|| format!("POST /v1/webhooks answered no secret: {text}"))
}

/// An in-app notification for `demo-user`: it appears on the inbox demo page at once.
const INBOX_BODY: &str = r#"{"type":"demo.inbox","to":[{"subscriber_id":"demo-user"}],"channels":["in_app"],"content":{"title":"Hello","body":"Hello from Notify"}}"#;

/// A subscriber token for `demo-user`, checked to work on the inbox.
async fn inbox_demo_token(client: &reqwest::Client, api: &str, key: &str) -> anyhow::Result<String> {
    let path = "/v1/subscribers/demo-user/token";
    let response =
        client.post(format!("{api}{path}")).bearer_auth(key).send().await.with_context(|| format!("POST {path}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST {path} answered {status}: {text}");
    }
    let answer: Value =
        serde_json::from_str(&text).with_context(|| format!("POST {path} answer is not JSON: {text}"))?;
    let token =
        answer["token"].as_str().with_context(|| format!("POST {path} answer has no token: {text}"))?.to_owned();
    let response =
        client.get(format!("{api}/v1/inbox/count")).bearer_auth(&token).send().await.context("GET /v1/inbox/count")?;
    if !response.status().is_success() {
        bail!("GET /v1/inbox/count with demo-user's token answered {}", response.status());
    }
    Ok(token)
}

fn print_banner(api: &str, tenant: &Tenant, sandbox_dir: &Path, inbox_token: &str, receiver: &str) {
    let key = &tenant.api_key;
    let body = EXAMPLE_BODY;
    println!(
        "
================================================================================
Notify is running.

  API:            {api}
  Demo tenant:    {tenant_id}
  Demo API key:   {key}
  Sandbox folder: {sandbox}
                  (each channel's messages land in <channel>.jsonl there)
  Metrics:        /metrics, /healthz and /readyz at http://127.0.0.1:9089 (API),
                  :9090 (relay) to :9097 (email, sms, whatsapp, novu, chat, push,
                  webhooks)
  Webhooks:       every event of the demo tenant goes to a local receiver,
                  {receiver}, which checks its signature and prints a line

Send a notification:

  curl -sS -X POST {api}/v1/notifications -H \"Authorization: Bearer {key}\" -H \"Content-Type: application/json\" -d '{body}'

Send one by subscriber id (type, template and subscriber are set up; the email is
rendered from the German template):

  curl -sS -X POST {api}/v1/notifications -H \"Authorization: Bearer {key}\" -H \"Content-Type: application/json\" -d '{by_subscriber}'

Send one on every channel (email, sms, whatsapp, novu, chat, push to demo-user's
phone and the inbox), each rendered from the type's template for it:

  curl -sS -X POST {api}/v1/notifications -H \"Authorization: Bearer {key}\" -H \"Content-Type: application/json\" -d '{every_channel}'

Point a webhook at a receiver of your own (http on this machine is allowed here; the
answer's \"secret\" verifies its signatures, docs/webhooks.md), then see its attempts:

  curl -sS -X POST {api}/v1/webhooks -H \"Authorization: Bearer {key}\" -H \"Content-Type: application/json\" -d '{{\"url\":\"http://127.0.0.1:9999/hooks\",\"events\":[\"delivery.sent\",\"delivery.failed\"]}}'
  curl -sS {api}/v1/webhooks/<id>/attempts -H \"Authorization: Bearer {key}\"

Read it back: replace <id> with the \"id\" of an answer above:

  curl -sS {api}/v1/notifications/<id> -H \"Authorization: Bearer {key}\"

Inbox demo: {api}/inbox-demo?token={inbox_token}
  (demo-user's inbox, live; the token lasts 24 h). Send it something:

  curl -sS -X POST {api}/v1/notifications -H \"Authorization: Bearer {key}\" -H \"Content-Type: application/json\" -d '{inbox_body}'

Press Ctrl-C to stop everything.
================================================================================
",
        tenant_id = tenant.id,
        sandbox = sandbox_dir.display(),
        by_subscriber = SUBSCRIBER_BODY,
        every_channel = EVERY_CHANNEL_BODY,
        inbox_body = INBOX_BODY,
    );
}

/// Sends the example notifications (inline content, by subscriber id, then on every
/// channel), waits until each is `sent`, and checks the sandbox files hold what was
/// rendered.
async fn smoke(
    client: &reqwest::Client,
    api: &str,
    key: &str,
    sandbox_dir: &Path,
    receiver: &Receiver,
) -> anyhow::Result<()> {
    let email = sandbox_dir.join("email.jsonl");
    let view = send_and_wait(client, api, key, EXAMPLE_BODY).await?;
    recorded(&email, &view["deliveries"][0]).await?;
    signed_event(receiver, "delivery.sent", &view["deliveries"][0]).await?;
    let view = send_and_wait(client, api, key, SUBSCRIBER_BODY).await?;
    let line = recorded(&email, &view["deliveries"][0]).await?;
    if line["content"]["subject"] != "Willkommen bei Notify" {
        bail!("{} lacks the German rendering of the subscriber's notification: {line}", email.display());
    }
    println!("smoke: the notification by subscriber id was rendered from the German template");
    every_channel(client, api, key, sandbox_dir).await
}

/// Sends `demo.channels` to `demo-user` and checks that each channel's delivery went out
/// as its template says, recorded in its channel's sandbox file (the inbox has none).
async fn every_channel(client: &reqwest::Client, api: &str, key: &str, sandbox_dir: &Path) -> anyhow::Result<()> {
    let view = send_and_wait(client, api, key, EVERY_CHANNEL_BODY).await?;
    let deliveries = view["deliveries"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (channel, status) in EVERY_CHANNEL {
        let delivery = deliveries
            .iter()
            .find(|d| d["channel"] == channel)
            .with_context(|| format!("the notification on every channel has no {channel} delivery: {view}"))?;
        if delivery["status"] != status {
            bail!("its {channel} delivery is not {status}: {delivery}");
        }
        if channel == "in_app" {
            continue;
        }
        let line = recorded(&sandbox_dir.join(format!("{channel}.jsonl")), delivery).await?;
        // Novu renders in its own workflow: the job carries no content. A push shows a
        // title and a body.
        let says = format!("Hello Grace, by {channel}.");
        let text = if channel == "push" { &line["content"]["body"] } else { &line["content"]["text"] };
        if channel != "novu" && text != says.as_str() {
            bail!("the {channel} message does not say {says:?}: {line}");
        }
        if channel == "push" && (line["device"]["id"] != DEMO_DEVICE || line["device"]["platform"] != "fcm") {
            bail!("the push did not go to {DEMO_DEVICE}'s fcm token: {line}");
        }
        if channel == "chat" && line["to"] != DEMO_CHAT_RECIPIENT {
            bail!("the chat message did not go to {DEMO_CHAT_RECIPIENT}: {line}");
        }
    }
    let channels = EVERY_CHANNEL.map(|(channel, _)| channel).join(", ");
    println!("smoke: notification {} went out on every channel ({channels})", view["id"].as_str().unwrap_or_default());
    Ok(())
}

/// Waits until the receiver took a `kind` event of `delivery` whose signature verifies.
async fn signed_event(receiver: &Receiver, kind: &str, delivery: &Value) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let received = receiver.received();
        let event = received.iter().find(|r| r.body["type"] == kind && r.body["data"]["delivery_id"] == delivery["id"]);
        match event {
            Some(event) if event.verified => break,
            Some(event) => {
                bail!("the receiver's {kind} event does not verify with the endpoint's secret: {}", event.body)
            }
            None if started.elapsed() > SMOKE_DEADLINE => {
                bail!(
                    "no {kind} event of delivery {} at the receiver within {}s",
                    delivery["id"],
                    SMOKE_DEADLINE.as_secs()
                )
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    println!("smoke: the receiver took a signed {kind} event {} ms later", started.elapsed().as_millis());
    Ok(())
}

/// POSTs `body`, polls until the notification is `sent`, and returns its view.
async fn send_and_wait(client: &reqwest::Client, api: &str, key: &str, body: &'static str) -> anyhow::Result<Value> {
    say!("smoke: POST {api}/v1/notifications {body}");
    let started = Instant::now();
    let response = client
        .post(format!("{api}/v1/notifications"))
        .bearer_auth(key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .context("POST /v1/notifications")?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST /v1/notifications answered {status}: {text}");
    }
    let accepted: Value = serde_json::from_str(&text).with_context(|| format!("POST answer is not JSON: {text}"))?;
    let id = accepted["id"].as_str().with_context(|| format!("POST answer has no id: {text}"))?.to_owned();
    say!("smoke: accepted {id} ({status}); polling until it is sent (at most {}s)", SMOKE_DEADLINE.as_secs());

    let mut last = Value::Null;
    loop {
        let response = client
            .get(format!("{api}/v1/notifications/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .context("GET /v1/notifications/{id}")?;
        if response.status().is_success() {
            last = response.json().await.context("GET answer is not JSON")?;
            match last["status"].as_str() {
                Some("sent") => break,
                Some(terminal @ ("failed" | "partial" | "cancelled")) => {
                    bail!("notification {id} ended `{terminal}`: {last}")
                }
                _ => {}
            }
        } else {
            say!("smoke: GET /v1/notifications/{id} answered {}", response.status());
        }
        if started.elapsed() > SMOKE_DEADLINE {
            bail!("notification {id} not sent within {}s; last answer: {last}", SMOKE_DEADLINE.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("smoke: notification {id} sent {} ms after the POST", started.elapsed().as_millis());
    Ok(last)
}

/// The line of `sandbox_file` that records `delivery` (an entry of a notification's
/// `deliveries`), which must be `sent`.
async fn recorded(sandbox_file: &Path, delivery: &Value) -> anyhow::Result<Value> {
    if delivery["status"] != "sent" {
        bail!("delivery is not sent: {delivery}");
    }
    let id = delivery["id"].as_str().with_context(|| format!("delivery without an id: {delivery}"))?;
    let recorded =
        tokio::fs::read_to_string(sandbox_file).await.with_context(|| format!("reading {}", sandbox_file.display()))?;
    let line = recorded
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["delivery_id"] == id)
        .with_context(|| format!("{} does not record delivery {id}", sandbox_file.display()))?;
    println!("smoke: {} records delivery {id}", sandbox_file.display());
    Ok(line)
}
