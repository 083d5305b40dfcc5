//! PostgreSQL and RabbitMQ: check they answer, start them when they do not (the local
//! Debian services if installed, else Docker Compose), and the RabbitMQ management API.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use reqwest::Url;
use sqlx::{Connection, PgConnection};
use tokio::{net::TcpStream, process::Command};

use crate::{say, workspace_root};

/// How long a started service may take to answer.
pub const SERVICE_DEADLINE: Duration = Duration::from_secs(60);

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672";
pub const DEFAULT_RABBITMQ_API: &str = "http://guest:guest@127.0.0.1:15672";

/// Where the services are. `cargo xtask dev` uses the defaults; `cargo xtask test` lets
/// `NOTIFY_TEST_*` override them (the tests read the same variables).
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The `postgres` (maintenance) database: an account that may create and drop databases.
    pub database_url: String,
    pub amqp_url: String,
    /// The management API, credentials in the URL.
    pub rabbitmq_api: String,
}

impl Endpoints {
    pub fn defaults() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.into(),
            amqp_url: DEFAULT_AMQP_URL.into(),
            rabbitmq_api: DEFAULT_RABBITMQ_API.into(),
        }
    }

    pub fn from_test_env() -> Self {
        let var =
            |name: &str, default: &str| std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or(default.into());
        Self {
            database_url: var("NOTIFY_TEST_DATABASE_URL", DEFAULT_DATABASE_URL),
            amqp_url: var("NOTIFY_TEST_AMQP_URL", DEFAULT_AMQP_URL),
            rabbitmq_api: var("NOTIFY_TEST_RABBITMQ_API", DEFAULT_RABBITMQ_API),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Postgres,
    Rabbitmq,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Postgres => "PostgreSQL",
            Service::Rabbitmq => "RabbitMQ",
        }
    }

    /// The service's name in docker-compose.yml.
    fn compose_name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::Rabbitmq => "rabbitmq",
        }
    }
}

/// A host and port to connect to.
#[derive(Clone, Debug)]
struct Addr {
    host: String,
    port: u16,
}

impl Addr {
    fn from_url(url: &str, default_port: u16) -> anyhow::Result<Self> {
        let parsed = Url::parse(url).with_context(|| format!("invalid URL `{}`", redact(url)))?;
        let host = parsed.host_str().with_context(|| format!("no host in `{}`", redact(url)))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Self { host, port: parsed.port().unwrap_or(default_port) })
    }

    fn is_local(&self) -> bool {
        matches!(self.host.as_str(), "127.0.0.1" | "localhost" | "::1")
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Makes sure PostgreSQL and RabbitMQ accept connections, starting those that do not.
pub async fn ensure_services(endpoints: &Endpoints) -> anyhow::Result<()> {
    let targets = [
        (Service::Postgres, Addr::from_url(&endpoints.database_url, 5432)?),
        (Service::Rabbitmq, Addr::from_url(&endpoints.amqp_url, 5672)?),
    ];
    let mut down = Vec::new();
    for (service, addr) in &targets {
        if tcp_open(addr).await {
            say!("{} is up at {addr}", service.name());
        } else {
            down.push((*service, addr.clone()));
        }
    }
    if down.is_empty() {
        return Ok(());
    }

    let mut for_docker = Vec::new();
    for (service, addr) in &down {
        if !addr.is_local() {
            bail!(
                "{} at {addr} does not answer, and it is not on this machine, so xtask cannot start it",
                service.name()
            );
        }
        if installed_locally(*service) {
            start_local(*service).await?;
        } else {
            for_docker.push(*service);
        }
    }
    if !for_docker.is_empty() {
        start_with_docker(&for_docker).await?;
    }

    for (service, addr) in &down {
        say!("waiting for {} at {addr} (at most {}s)", service.name(), SERVICE_DEADLINE.as_secs());
        wait_tcp(addr, SERVICE_DEADLINE)
            .await
            .with_context(|| format!("{} was started but does not accept connections at {addr}", service.name()))?;
        say!("{} is up at {addr}", service.name());
    }
    Ok(())
}

/// Whether the Debian package of the service is installed here.
fn installed_locally(service: Service) -> bool {
    match service {
        Service::Postgres => find_program("pg_ctlcluster").is_some() && Path::new("/etc/postgresql").is_dir(),
        Service::Rabbitmq => find_program("rabbitmq-server").is_some() && find_program("rabbitmqctl").is_some(),
    }
}

pub fn postgres_version() -> anyhow::Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .context("reading /etc/postgresql")?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match versions.len() {
        1 => Ok(versions.remove(0)),
        0 => bail!("no PostgreSQL cluster in /etc/postgresql"),
        _ => bail!(
            "several PostgreSQL versions in /etc/postgresql ({}): start the one to use yourself",
            versions.join(", ")
        ),
    }
}

async fn start_local(service: Service) -> anyhow::Result<()> {
    match service {
        Service::Postgres => {
            let version = postgres_version()?;
            say!("starting PostgreSQL {version}: pg_ctlcluster --skip-systemctl-redirect {version} main start");
            run_checked(
                Command::new(find_program("pg_ctlcluster").expect("checked")).args([
                    "--skip-systemctl-redirect",
                    &version,
                    "main",
                    "start",
                ]),
                "pg_ctlcluster",
            )
            .await
        }
        Service::Rabbitmq => {
            say!("starting RabbitMQ: rabbitmq-server -detached, then rabbitmqctl await_startup");
            run_checked(
                Command::new(find_program("rabbitmq-server").expect("checked")).arg("-detached"),
                "rabbitmq-server -detached",
            )
            .await?;
            // await_startup waits for the node to boot; our TCP poll below bounds the wait.
            run_checked(
                Command::new(find_program("rabbitmqctl").expect("checked")).args(["await_startup", "--timeout", "60"]),
                "rabbitmqctl await_startup",
            )
            .await
        }
    }
}

async fn start_with_docker(services: &[Service]) -> anyhow::Result<()> {
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    let docker_works = match find_program("docker") {
        Some(docker) => Command::new(docker)
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success()),
        None => false,
    };
    if !docker_works {
        bail!(
            "{} is not running, not installed on this machine, and there is no working Docker engine to run it in.\n\
             Install the services (Debian/Ubuntu: `apt-get install postgresql rabbitmq-server`), \
             or install and start Docker, then run this again.",
            names.join(" and ")
        );
    }
    let compose_services: Vec<&str> = services.iter().map(|s| s.compose_name()).collect();
    let (program, mut args): (PathBuf, Vec<&str>) = if Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
    {
        (find_program("docker").expect("checked"), vec!["compose"])
    } else if let Some(compose) = find_program("docker-compose") {
        (compose, vec![])
    } else {
        bail!("Docker works but neither `docker compose` nor `docker-compose` is installed");
    };
    args.extend(["up", "-d"]);
    args.extend(&compose_services);
    say!("starting {} with Docker: {} {}", names.join(" and "), program.display(), args.join(" "));
    run_checked(Command::new(&program).args(&args).current_dir(workspace_root()), "docker compose up").await
}

async fn run_checked(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command.status().await.with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// A program on the PATH, or in the sbin folders a non-root PATH may lack.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether we run as root (the owner of `/proc/self` is our effective user).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn tcp_open(addr: &Addr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect((addr.host.as_str(), addr.port))).await,
        Ok(Ok(_))
    )
}

async fn wait_tcp(addr: &Addr, deadline: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while !tcp_open(addr).await {
        if start.elapsed() > deadline {
            bail!("nothing listens at {addr} after {}s", deadline.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Connects to PostgreSQL, retrying for a while when a server that just opened its port
/// is still starting up ("the database system is starting up", or the connection drops).
pub async fn connect_postgres(url: &str) -> anyhow::Result<PgConnection> {
    // Only a local server can be one xtask just started.
    let local = Addr::from_url(url, 5432)?.is_local();
    let start = Instant::now();
    let mut said = false;
    loop {
        match PgConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(e) if local && starting_up(&e) && start.elapsed() < SERVICE_DEADLINE => {
                if !said {
                    say!("PostgreSQL is not ready yet ({e}); retrying for up to {}s", SERVICE_DEADLINE.as_secs());
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {}", redact(url))),
        }
    }
}

fn starting_up(e: &sqlx::Error) -> bool {
    match e {
        // cannot_connect_now: starting up, shutting down, in recovery.
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
        sqlx::Error::Io(_) => true,
        _ => false,
    }
}

/// A client for the local services: no proxy (a developer's HTTP_PROXY must not see
/// 127.0.0.1 traffic), short timeouts.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?)
}

/// The RabbitMQ management HTTP API.
pub struct RabbitApi {
    client: reqwest::Client,
    base: Url,
    user: String,
    password: String,
}

impl RabbitApi {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let mut base = Url::parse(url).with_context(|| format!("invalid RabbitMQ API URL `{}`", redact(url)))?;
        let user = percent_decode(base.username());
        let password = percent_decode(base.password().unwrap_or(""));
        let (user, password) =
            if user.is_empty() { ("guest".to_owned(), "guest".to_owned()) } else { (user, password) };
        let _ = base.set_username("");
        let _ = base.set_password(None);
        Ok(Self { client: http_client()?, base, user, password })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    async fn answers(&self) -> bool {
        let request = self.client.get(self.url("/api/overview")).basic_auth(&self.user, Some(&self.password));
        request.send().await.is_ok_and(|r| r.status().is_success())
    }

    /// Makes sure the management API answers, enabling the plugin if it does not.
    pub async fn ensure(&self) -> anyhow::Result<()> {
        if self.answers().await {
            say!("RabbitMQ management API answers at {}", self.base);
            return Ok(());
        }
        let local = self.base.host_str().is_some_and(|h| matches!(h, "127.0.0.1" | "localhost" | "[::1]"));
        if local && let Some(plugins) = find_program("rabbitmq-plugins") {
            say!("enabling the RabbitMQ management plugin: rabbitmq-plugins enable rabbitmq_management");
            run_checked(Command::new(plugins).args(["enable", "rabbitmq_management"]), "rabbitmq-plugins enable")
                .await?;
        }
        say!("waiting for the RabbitMQ management API at {} (at most {}s)", self.base, SERVICE_DEADLINE.as_secs());
        let start = Instant::now();
        while !self.answers().await {
            if start.elapsed() > SERVICE_DEADLINE {
                bail!(
                    "the RabbitMQ management API does not answer at {}/api/overview (the tests create a vhost per \
                     test through it): run `rabbitmq-plugins enable rabbitmq_management`",
                    self.base.as_str().trim_end_matches('/')
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        say!("RabbitMQ management API answers at {}", self.base);
        Ok(())
    }

    pub async fn vhosts(&self) -> anyhow::Result<Vec<String>> {
        let response = self
            .client
            .get(self.url("/api/vhosts"))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await?
            .error_for_status()?;
        let body: serde_json::Value = response.json().await?;
        let list = body.as_array().context("GET /api/vhosts did not answer a list")?;
        Ok(list.iter().filter_map(|v| v.get("name")?.as_str().map(str::to_owned)).collect())
    }

    /// Creates the vhost and gives our user every permission on it (as the tests do).
    pub async fn create_vhost(&self, name: &str) -> anyhow::Result<()> {
        let vhost = percent_encode(name);
        let url = self.url(&format!("/api/vhosts/{vhost}"));
        self.client.put(url).basic_auth(&self.user, Some(&self.password)).send().await?.error_for_status()?;
        let url = self.url(&format!("/api/permissions/{vhost}/{}", percent_encode(&self.user)));
        let permissions = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        let request = self.client.put(url).basic_auth(&self.user, Some(&self.password)).json(&permissions);
        request.send().await?.error_for_status()?;
        Ok(())
    }

    /// `GET /api/overview`: the broker's version and more.
    pub async fn overview(&self) -> anyhow::Result<serde_json::Value> {
        let request = self.client.get(self.url("/api/overview")).basic_auth(&self.user, Some(&self.password));
        Ok(request.send().await?.error_for_status()?.json().await?)
    }

    pub async fn delete_vhost(&self, name: &str) -> anyhow::Result<()> {
        let url = self.url(&format!("/api/vhosts/{}", percent_encode(name)));
        let response = self.client.delete(url).basic_auth(&self.user, Some(&self.password)).send().await?;
        if !response.status().is_success() && response.status() != reqwest::StatusCode::NOT_FOUND {
            bail!("DELETE vhost `{name}`: {}", response.status());
        }
        Ok(())
    }
}

/// Percent-encodes everything but the unreserved characters (RFC 3986), for a path segment.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_vhost_names() {
        assert_eq!(percent_encode("notify-test-abc_1"), "notify-test-abc_1");
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("a b"), "a%20b");
    }

    #[test]
    fn decodes_credentials() {
        assert_eq!(percent_decode("gu%40st"), "gu@st");
        assert_eq!(percent_decode("guest"), "guest");
        assert_eq!(percent_decode("50%"), "50%");
    }

    #[test]
    fn parses_addresses() {
        let a = Addr::from_url("postgres://postgres@127.0.0.1:5433/postgres", 5432).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 5433));
        let a = Addr::from_url("amqp://guest:guest@localhost", 5672).unwrap();
        assert_eq!((a.host.as_str(), a.port, a.is_local()), ("localhost", 5672, true));
    }
}
