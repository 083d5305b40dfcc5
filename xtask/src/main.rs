//! Developer tasks of the Notify workspace, run as `cargo xtask <task>`:
//!
//! - `cargo xtask dev [--port 8080] [--smoke]`: the whole platform on this machine.
//! - `cargo xtask test [-- <cargo test args>]`: the test suite on real PostgreSQL and RabbitMQ.
//! - `cargo xtask bench [--smoke] [--history 0,1000000] [--no-limits] [--only peer] [--peer-count N] [--broadcast-members N] [--bin-dir DIR]`:
//!   the stack under load, one table.
//! - `cargo xtask chaos [--notifications N]`: the stack under load through crashes and restarts.
//! - `cargo xtask openapi`: `openapi.json` at the root, the document the API serves.

mod bench;
mod chaos;
mod dev;
mod procs;
mod receiver;
mod services;
mod test;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  dev [--port <port>] [--smoke]   run the whole platform locally (API on 127.0.0.1:<port>, default 8080);
                                  --smoke sends on every channel, checks each is sent, then stops
  test [-- <args>]                install Chromium and chromedriver if missing (as root, with apt-get),
                                  start PostgreSQL/RabbitMQ if needed, clean old test leftovers, then
                                  `cargo test --workspace --no-fail-fast <args>` and one closing total
  bench [--smoke] [--history N,N..] [--no-limits] [--only peer] [--peer-count N] [--broadcast-members N] [--bin-dir DIR]
                                  release builds of the eight binaries under load from our own generator;
                                  prints one table (also target/bench/latest.md and .json): this
                                  machine's ceilings (PostgreSQL inserts, RabbitMQ publish and consume,
                                  a bare axum POST; measured first, unless --no-limits), the peer shape
                                  (N single POSTs at 4, 8 and 64 in flight, default 20000, delivered
                                  over HTTP to a Novu stand-in; then PostgreSQL round trips and commits
                                  per notification through a counting proxy), intake, end to end,
                                  memory and CPU, cost with N historical notifications (default
                                  0,1000000), each as a ratio to the ceilings; --only peer: the peer
                                  shape alone; --broadcast-members: the push broadcast's topic size
                                  (default 10000; 1000 with --smoke); --bin-dir: run the release
                                  binaries in DIR instead of building; --smoke: tiny counts, ceilings
                                  measured briefly (CI)
  chaos [--notifications <n>]     the eight binaries on a PostgreSQL and a RabbitMQ of their own (root), sent
                                  <n> notifications (default 1000) while the relay, workers and API are killed
                                  with SIGKILL, broker connections closed, a queue purged, RabbitMQ
                                  restarted and PostgreSQL crashed; fails unless every accepted
                                  notification ends final and none is lost
  openapi                         write the OpenAPI document the API serves to openapi.json at the
                                  repository's root (a test fails while the two differ)
  help                            this text
";

#[tokio::main]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let Some((task, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    match task.as_str() {
        "dev" => dev::run(parse_dev_args(rest)?).await,
        "test" => test::run(test_args(rest)).await,
        "bench" => bench::run(parse_bench_args(rest)?, rest).await,
        "chaos" => chaos::run(parse_chaos_args(rest)?).await,
        "openapi" if rest.is_empty() => openapi().await,
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprint!("xtask: unknown task `{other}`\n\n{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Writes `openapi.json` at the repository's root from `notify-api openapi`, which prints
/// the document the API serves: the committed contract that clients are generated from.
async fn openapi() -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let output = tokio::process::Command::new(cargo())
        .args(["run", "--quiet", "--package", "notify-api", "--", "openapi"])
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("running cargo run --package notify-api -- openapi")?;
    if !output.status.success() {
        bail!("notify-api openapi failed ({})", output.status);
    }
    let path = root.join("openapi.json");
    std::fs::write(&path, &output.stdout).with_context(|| format!("writing {}", path.display()))?;
    say!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn parse_dev_args(args: &[String]) -> anyhow::Result<dev::Options> {
    let mut options = dev::Options { port: 8080, smoke: false };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => options.smoke = true,
            "--port" => {
                let value = args.next().context("--port needs a value")?;
                options.port = value.parse().with_context(|| format!("invalid port `{value}`"))?;
            }
            s if s.starts_with("--port=") => {
                let value = &s["--port=".len()..];
                options.port = value.parse().with_context(|| format!("invalid port `{value}`"))?;
            }
            other => bail!("unknown argument `{other}` for `dev`\n\n{USAGE}"),
        }
    }
    Ok(options)
}

fn parse_chaos_args(args: &[String]) -> anyhow::Result<chaos::Options> {
    let mut options = chaos::Options { notifications: 1000 };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--notifications" => args.next().context("--notifications needs a value")?.as_str(),
            s if s.starts_with("--notifications=") => &s["--notifications=".len()..],
            other => bail!("unknown argument `{other}` for `chaos`\n\n{USAGE}"),
        };
        options.notifications = value.parse().with_context(|| format!("invalid count `{value}`"))?;
    }
    Ok(options)
}

/// A count as the bench's flags take it: digits, `_` allowed between them (`20_000`).
fn parse_count(value: &str) -> anyhow::Result<u64> {
    value.replace('_', "").parse().with_context(|| format!("invalid count `{value}`"))
}

fn parse_bench_args(args: &[String]) -> anyhow::Result<bench::Options> {
    let mut options = bench::Options {
        smoke: false,
        history: None,
        no_limits: false,
        only_peer: false,
        peer_count: None,
        broadcast_members: None,
        bin_dir: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg.as_str(), None),
        };
        // The flag's value: after `=`, or the next argument.
        let mut value = |what: &str| match inline {
            Some(value) => Ok(value),
            None => args.next().map(String::as_str).with_context(|| format!("{name} needs {what}")),
        };
        match name {
            "--smoke" if inline.is_none() => options.smoke = true,
            "--no-limits" if inline.is_none() => options.no_limits = true,
            "--only" => {
                let phase = value("a phase: peer")?;
                if phase != "peer" {
                    bail!("unknown phase `{phase}` for --only (known: peer)");
                }
                options.only_peer = true;
            }
            "--peer-count" => {
                let count = parse_count(value("a number")?)?;
                if count == 0 {
                    bail!("--peer-count must be at least 1");
                }
                options.peer_count = Some(count);
            }
            "--broadcast-members" => options.broadcast_members = Some(parse_count(value("a number")?)?),
            "--bin-dir" => options.bin_dir = Some(PathBuf::from(value("a directory")?)),
            "--history" => {
                let mut sizes = value("a value, such as 0,1000000")?
                    .split(',')
                    .map(|v| {
                        v.trim().replace('_', "").parse::<u64>().with_context(|| format!("invalid history size `{v}`"))
                    })
                    .collect::<anyhow::Result<Vec<u64>>>()?;
                sizes.sort_unstable();
                sizes.dedup();
                options.history = Some(sizes);
            }
            _ => bail!("unknown argument `{arg}` for `bench`\n\n{USAGE}"),
        }
    }
    Ok(options)
}

/// `cargo xtask test -- a b` reaches us as `test -- a b` (cargo eats only its own `--`):
/// drop that separator, pass the rest to `cargo test` as they are.
fn test_args(args: &[String]) -> Vec<String> {
    match args.split_first() {
        Some((first, rest)) if first == "--" => rest.to_vec(),
        _ => args.to_vec(),
    }
}

/// The workspace root: the folder above this crate.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// The cargo that runs us (cargo sets `CARGO`), else the one on the PATH.
pub fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Progress, on stderr so it interleaves with the children's logs and keeps stdout for
/// what a human copies.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("xtask: {}", format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bench_flags_either_way() {
        let args = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let options =
            parse_bench_args(&args("--only peer --peer-count=2_000 --bin-dir /b/release --history 1000,0")).unwrap();
        assert!(options.only_peer && !options.smoke && !options.no_limits);
        assert_eq!(options.peer_count, Some(2000));
        assert_eq!(options.bin_dir, Some(PathBuf::from("/b/release")));
        assert_eq!(options.history, Some(vec![0, 1000]));
        let options = parse_bench_args(&args("--smoke --no-limits --only=peer --peer-count 5")).unwrap();
        assert!(options.smoke && options.no_limits && options.only_peer);
        assert_eq!(options.peer_count, Some(5));
        let options = parse_bench_args(&args("--smoke --broadcast-members 10_000")).unwrap();
        assert_eq!(options.broadcast_members, Some(10_000));
        for wrong in ["--only intake", "--peer-count 0", "--peer-count", "--smoke=yes", "--history 1,x", "--fast"] {
            assert!(parse_bench_args(&args(wrong)).is_err(), "{wrong}");
        }
    }
}
