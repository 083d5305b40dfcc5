//! The platform's processes while `cargo xtask dev` runs, and the signals that stop them.

use std::{
    process::ExitStatus,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{
    process::Command,
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
};

use crate::say;

/// Ctrl-C and SIGTERM. Once this exists, those signals no longer kill xtask: every wait
/// must race `Signals::recv`.
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        })
    }

    /// The name of the next signal received.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

struct Proc {
    name: String,
    pid: u32,
    exited: bool,
}

/// Child processes, each in its own process group: a Ctrl-C in the terminal reaches only
/// xtask, which then sends each child one SIGTERM (a second signal makes our binaries
/// exit at once, skipping their graceful shutdown).
pub struct Supervisor {
    procs: Vec<Proc>,
    tx: mpsc::UnboundedSender<(usize, std::io::Result<ExitStatus>)>,
    rx: mpsc::UnboundedReceiver<(usize, std::io::Result<ExitStatus>)>,
}

pub struct Exit {
    pub name: String,
    pub status: std::io::Result<ExitStatus>,
}

impl Supervisor {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { procs: Vec::new(), tx, rx }
    }

    pub fn spawn(&mut self, name: &str, mut command: Command) -> anyhow::Result<()> {
        command.process_group(0).kill_on_drop(false);
        let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("a just-started child has a pid")?;
        let index = self.procs.len();
        self.procs.push(Proc { name: name.to_owned(), pid, exited: false });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send((index, status));
        });
        say!("started {name} (pid {pid})");
        Ok(())
    }

    /// The name and pid of every child still running.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.running().map(|p| (p.name.clone(), p.pid)).collect()
    }

    fn running(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| !p.exited)
    }

    /// The next child to exit. Pending forever when none runs.
    pub async fn next_exit(&mut self) -> Exit {
        if self.running().next().is_none() {
            return std::future::pending().await;
        }
        let (index, status) = self.rx.recv().await.expect("the sender lives in self");
        let proc = &mut self.procs[index];
        proc.exited = true;
        Exit { name: proc.name.clone(), status }
    }

    /// SIGTERM to every running child, then waits up to `grace` for them; SIGKILL for
    /// those still running. Returns whether every child stopped cleanly (exit 0) in time.
    pub async fn stop(&mut self, grace: Duration) -> bool {
        let mut clean = true;
        let count = self.running().count();
        if count > 0 {
            say!("stopping {count} processes (SIGTERM; SIGKILL after {}s)", grace.as_secs());
        }
        for proc in self.running() {
            send_signal("TERM", proc.pid).await;
        }
        let deadline = Instant::now() + grace;
        while self.running().next().is_some() {
            match tokio::time::timeout_at(deadline.into(), self.next_exit()).await {
                Ok(exit) => match &exit.status {
                    Ok(s) if s.success() => say!("{} stopped", exit.name),
                    Ok(s) => {
                        clean = false;
                        say!("{} stopped: {}", exit.name, describe(s));
                    }
                    Err(e) => {
                        clean = false;
                        say!("{} stopped, status unknown: {e}", exit.name);
                    }
                },
                Err(_) => break,
            }
        }
        let late: Vec<(String, u32)> = self.running().map(|p| (p.name.clone(), p.pid)).collect();
        for (name, pid) in &late {
            clean = false;
            say!("{name} (pid {pid}) did not stop within {}s: SIGKILL", grace.as_secs());
            send_signal("KILL", *pid).await;
        }
        if !late.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while self.running().next().is_some() {
                    self.next_exit().await;
                }
            })
            .await;
        }
        clean
    }
}

/// `kill -<signal> <pid>`: no libc binding needed (the workspace forbids unsafe code).
async fn send_signal(signal: &str, pid: u32) {
    let result = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().await;
    if let Err(e) = result {
        say!("could not run `kill -{signal} {pid}`: {e}");
    }
}

pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}
