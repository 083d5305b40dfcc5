//! Stand-ins of the providers' real APIs, run as real servers on loopback: moto (SES v2,
//! SNS) and aiosmtpd (an SMTP sink). They come from PyPI; `cargo xtask test` installs
//! them into `.venv-stubs` and points `NOTIFY_TEST_PYTHON` at its interpreter.

use std::{net::TcpListener, path::PathBuf, process::Stdio};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::harness::eventually;

fn python() -> PathBuf {
    if let Ok(python) = std::env::var("NOTIFY_TEST_PYTHON") {
        return python.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-stubs/bin/python");
    if venv.exists() { venv } else { "python3".into() }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(python())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python with moto and aiosmtpd (run `cargo xtask test`, which installs them)")
}

/// A moto server of its own for one test: SES v2 and SNS at `url`, state in `data()`.
pub struct Moto {
    pub url: String,
    _server: Child,
}

impl Moto {
    pub async fn start() -> Self {
        let port = free_port();
        let server = spawn(&["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()]);
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("moto to answer", || async {
            http.get(format!("{url}/moto-api/")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        Self { url, _server: server }
    }

    /// moto's record of everything it received (`ses.Message`, `sns.SMS`, ...).
    pub async fn data(&self) -> Value {
        reqwest::get(format!("{}/moto-api/data.json", self.url)).await.unwrap().json().await.unwrap()
    }
}

/// An SMTP server that keeps every message it receives in a Maildir.
pub struct SmtpSink {
    pub port: u16,
    maildir: tempfile::TempDir,
    _server: Child,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let port = free_port();
        let maildir = tempfile::tempdir().unwrap();
        // Python's Maildir makes its folders only when the directory itself is new.
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir(maildir.path().join(sub)).unwrap();
        }
        let listen = format!("127.0.0.1:{port}");
        let dir = maildir.path().to_str().unwrap().to_owned();
        let server = spawn(&["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Mailbox", &dir, "-l", &listen]);
        eventually("the SMTP sink to listen", || async {
            tokio::net::TcpStream::connect(&listen).await.ok().map(|_| ())
        })
        .await;
        Self { port, maildir, _server: server }
    }

    /// The raw messages received so far.
    pub fn messages(&self) -> Vec<String> {
        ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.maildir.path().join(sub)).ok())
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .collect()
    }
}
