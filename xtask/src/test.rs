//! `cargo xtask test`: the services the tests need, a clean slate, then `cargo test`.

use std::process::{ExitCode, Stdio};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    cargo,
    dev::quote_ident,
    procs::describe,
    say,
    services::{self, Endpoints, RabbitApi},
    workspace_root,
};

/// What the tests create, one per test: databases `notify_test_<...>`, vhosts
/// `notify-test-<...>`. A run that was killed leaves them behind.
const DATABASE_PREFIX: &str = "notify_test_";
const VHOST_PREFIX: &str = "notify-test-";

pub async fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let endpoints = Endpoints::from_test_env();
    services::ensure_services(&endpoints).await?;
    let rabbit = RabbitApi::new(&endpoints.rabbitmq_api)?;
    rabbit.ensure().await?;

    drop_test_databases(&endpoints.database_url).await?;
    delete_test_vhosts(&rabbit).await?;

    let python = ensure_stubs().await?;
    let mut command = tokio::process::Command::new(cargo());
    command
        .args(["test", "--workspace"])
        .args(&args)
        .current_dir(workspace_root())
        .env("NOTIFY_TEST_PYTHON", &python)
        .stdout(Stdio::piped());
    say!("running: cargo test --workspace {}", args.join(" "));
    let mut child = command.spawn().context("running cargo test")?;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut totals = Totals::default();
    // A Ctrl-C reaches cargo test too (same process group): let it end, report its status.
    let status = loop {
        tokio::select! {
            line = lines.next_line() => match line.context("reading cargo test's output")? {
                Some(line) => {
                    println!("{line}");
                    totals.add(&line);
                }
                None => break child.wait().await.context("waiting for cargo test")?,
            },
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    // One closing line for the whole run: cargo test prints one per test binary, and the
    // last of those is usually a crate with no tests.
    println!("tests: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    if status.success() {
        return Ok(ExitCode::SUCCESS);
    }
    say!("cargo test failed ({})", describe(&status));
    let code = status.code().and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0).unwrap_or(1);
    Ok(ExitCode::from(code))
}

/// The providers' stand-ins the tests run (moto for SES and SNS, aiosmtpd for SMTP),
/// from PyPI into `.venv-stubs` when they are missing. Returns its Python.
async fn ensure_stubs() -> anyhow::Result<std::path::PathBuf> {
    let venv = workspace_root().join(".venv-stubs");
    let python = venv.join("bin").join("python");
    let ready = |python: std::path::PathBuf| async move {
        tokio::process::Command::new(python)
            .args(["-c", "import moto.server, aiosmtpd, flask_cors"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    };
    if ready(python.clone()).await {
        return Ok(python);
    }
    say!("installing the providers' stand-ins (moto, aiosmtpd) into {}", venv.display());
    let created = tokio::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status().await;
    if !created.is_ok_and(|s| s.success()) {
        bail!("could not create {} (Debian: apt-get install python3-venv)", venv.display());
    }
    let installed = tokio::process::Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "moto[server]==5.*", "aiosmtpd==1.*"])
        .status()
        .await
        .context("running pip")?;
    if !installed.success() || !ready(python.clone()).await {
        bail!("installing moto and aiosmtpd into {} failed", venv.display());
    }
    Ok(python)
}

/// The sum of cargo test's `test result: ok. N passed; N failed; N ignored; ...` lines.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(count)) = (words.next(), words.next()) else { continue };
            let Ok(count) = count.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

async fn drop_test_databases(admin_url: &str) -> anyhow::Result<()> {
    let mut conn = services::connect_postgres(admin_url).await?;
    // `_` is a LIKE wildcard: escape it so only the literal prefix matches.
    let pattern = format!("{}%", DATABASE_PREFIX.replace('_', "\\_"));
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1 ESCAPE '\\'")
        .bind(&pattern)
        .fetch_all(&mut conn)
        .await
        .context("listing test databases")?;
    for name in &names {
        debug_assert!(name.starts_with(DATABASE_PREFIX));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)))
            .execute(&mut conn)
            .await
            .with_context(|| format!("dropping database {name}"))?;
    }
    if !names.is_empty() {
        say!("dropped {} leftover test databases", names.len());
    }
    Ok(())
}

async fn delete_test_vhosts(rabbit: &RabbitApi) -> anyhow::Result<()> {
    let names: Vec<String> = rabbit.vhosts().await.context("listing RabbitMQ vhosts")?;
    let leftovers: Vec<&String> = names.iter().filter(|n| n.starts_with(VHOST_PREFIX)).collect();
    for name in &leftovers {
        rabbit.delete_vhost(name).await?;
    }
    if !leftovers.is_empty() {
        say!("deleted {} leftover test vhosts", leftovers.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_the_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 11 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        t.add("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s");
        t.add("test something ... ok");
        assert_eq!((t.passed, t.failed, t.ignored), (14, 1, 2));
    }
}
