//! `cargo xtask test`: what the tests need (PostgreSQL, RabbitMQ, the providers'
//! stand-ins, Chromium and chromedriver), a clean slate, then `cargo test` over every test
//! binary, with one closing total.

use std::{
    path::PathBuf,
    process::{ExitCode, Stdio},
};

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
    // First, as it may stop us: before the services are touched and the tests are built.
    let browser = ensure_browser().await?;
    let endpoints = Endpoints::from_test_env();
    services::ensure_services(&endpoints).await?;
    let rabbit = RabbitApi::new(&endpoints.rabbitmq_api)?;
    rabbit.ensure().await?;

    drop_test_databases(&endpoints.database_url).await?;
    delete_test_vhosts(&rabbit).await?;

    let python = ensure_stubs().await?;
    let schemathesis = ensure_schemathesis().await?;
    let typescript = ensure_typescript_client().await?;
    let mut command = tokio::process::Command::new(cargo());
    // --no-fail-fast: every test binary runs, not only those before the first failure.
    command
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(&args)
        .current_dir(workspace_root())
        .env("NOTIFY_TEST_PYTHON", &python)
        .env("NOTIFY_TEST_SCHEMATHESIS", &schemathesis)
        .env("NOTIFY_TEST_TS_CLIENT", &typescript)
        .envs(browser.iter().map(|(tool, path)| (tool.env, path)))
        .stdout(Stdio::piped());
    say!("running: cargo test --workspace --no-fail-fast {}", args.join(" "));
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
    println!("{}", totals.summary(status.success()));
    if status.success() {
        return Ok(ExitCode::SUCCESS);
    }
    say!("cargo test failed ({})", describe(&status));
    let code = status.code().and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0).unwrap_or(1);
    Ok(ExitCode::from(code))
}

/// A program the demo page's browser test runs (tests/it/inbox_live.rs): the variable
/// that tells the test where it is, and the Debian package that installs it.
#[derive(Debug)]
struct Tool {
    program: &'static str,
    env: &'static str,
    package: &'static str,
}

const BROWSER: [Tool; 2] = [
    Tool { program: "chromium", env: "NOTIFY_TEST_CHROMIUM", package: "chromium" },
    Tool { program: "chromedriver", env: "NOTIFY_TEST_CHROMEDRIVER", package: "chromium-driver" },
];

/// Chromium and chromedriver, installed with apt-get when missing and we are root.
/// Returns each tool's path, for the test (which otherwise looks only in /usr/bin).
async fn ensure_browser() -> anyhow::Result<Vec<(&'static Tool, PathBuf)>> {
    // A variable naming no file is not "missing": installing would not help; the loop
    // below reports it.
    let missing: Vec<&Tool> = BROWSER.iter().filter(|t| matches!(locate(t), Ok(None))).collect();
    let apt = services::find_program("apt-get");
    match browser_step(&missing, services::is_root(), apt.is_some()) {
        BrowserStep::Ready => {}
        BrowserStep::Stop(message) => bail!("{message}"),
        BrowserStep::Install(packages) => apt_install(&apt.expect("checked"), &packages).await?,
    }
    let mut found = Vec::new();
    for tool in &BROWSER {
        match locate(tool)? {
            Some(path) => found.push((tool, path)),
            None => bail!("{} is still missing after installing {}", tool.program, tool.package),
        }
    }
    say!("{} and {} are at {}", BROWSER[0].program, BROWSER[1].program, describe_paths(&found));
    Ok(found)
}

fn describe_paths(found: &[(&Tool, PathBuf)]) -> String {
    found.iter().map(|(_, path)| path.display().to_string()).collect::<Vec<_>>().join(" and ")
}

/// Where a tool is: the file its variable names (an error if there is none), else the
/// program on the PATH.
fn locate(tool: &Tool) -> anyhow::Result<Option<PathBuf>> {
    match std::env::var_os(tool.env).filter(|v| !v.is_empty()) {
        Some(path) if std::path::Path::new(&path).is_file() => Ok(Some(path.into())),
        Some(path) => bail!("{} names {}, which is not a file", tool.env, path.display()),
        None => Ok(services::find_program(tool.program)),
    }
}

/// What to do about the browser tools, given which are missing.
#[derive(Debug, PartialEq)]
enum BrowserStep {
    Ready,
    /// `apt-get install` these packages.
    Install(Vec<&'static str>),
    /// Stop with this message, before building anything.
    Stop(String),
}

fn browser_step(missing: &[&Tool], root: bool, apt: bool) -> BrowserStep {
    if missing.is_empty() {
        return BrowserStep::Ready;
    }
    let packages: Vec<&'static str> = missing.iter().map(|t| t.package).collect();
    if root && apt {
        return BrowserStep::Install(packages);
    }
    let programs = missing.iter().map(|t| t.program).collect::<Vec<_>>().join(" and ");
    let why = if apt { "we are not root" } else { "there is no apt-get here" };
    BrowserStep::Stop(format!(
        "{programs} missing: the demo page's browser test drives headless Chromium through chromedriver, and \
         xtask installs them only as root with apt-get ({why}). Install them (Debian: `sudo apt-get install {}`), \
         or set {} and {} to where they are, then run this again.",
        packages.join(" "),
        BROWSER[0].env,
        BROWSER[1].env,
    ))
}

/// `apt-get update` (a fresh machine's package lists are empty or stale), then the install.
async fn apt_install(apt: &std::path::Path, packages: &[&str]) -> anyhow::Result<()> {
    say!("installing {} for the browser test (apt-get update, then apt-get install)", packages.join(" "));
    let install: Vec<&str> =
        ["install", "-y", "--no-install-recommends"].into_iter().chain(packages.iter().copied()).collect();
    for args in [vec!["update"], install] {
        let status = tokio::process::Command::new(apt)
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .await
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({})", args.join(" "), describe(&status));
        }
    }
    Ok(())
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

/// The schemathesis version tests/it/schemathesis.rs runs: pinned, so its generated cases
/// (seeded) and checks do not change under the suite.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// The validator of the committed `openapi.json` (tests/it/openapi.rs), beside it.
const OPENAPI_SPEC_VALIDATOR: &str = "openapi-spec-validator==0.7.2";

/// schemathesis (PyPI), which fuzzes the served OpenAPI document (tests/it/schemathesis.rs),
/// and openapi-spec-validator, in a venv of their own, `.venv-schemathesis` (their
/// dependencies and moto's need not agree); returns its `st` program.
async fn ensure_schemathesis() -> anyhow::Result<std::path::PathBuf> {
    let venv = workspace_root().join(".venv-schemathesis");
    let st = venv.join("bin").join("st");
    // Both pins installed, read with one `pip show` (its records say `Name:` then `Version:`).
    let ready = || async {
        let shown = tokio::process::Command::new(venv.join("bin").join("pip"))
            .args(["show", "schemathesis", "openapi-spec-validator"])
            .output()
            .await;
        let Ok(shown) = shown.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()) else { return false };
        let installed: Vec<String> = shown
            .lines()
            .filter_map(|l| l.strip_prefix("Name: ").or_else(|| l.strip_prefix("Version: ")))
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|pair| pair.join("==").to_lowercase())
            .collect();
        [SCHEMATHESIS, OPENAPI_SPEC_VALIDATOR].iter().all(|pin| installed.iter().any(|i| i == pin))
    };
    if ready().await {
        return Ok(st);
    }
    say!("installing {SCHEMATHESIS} and {OPENAPI_SPEC_VALIDATOR} into {}", venv.display());
    let created = tokio::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status().await;
    if !created.is_ok_and(|s| s.success()) {
        bail!("could not create {} (Debian: apt-get install python3-venv)", venv.display());
    }
    let installed = tokio::process::Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", SCHEMATHESIS, OPENAPI_SPEC_VALIDATOR])
        .status()
        .await
        .context("running pip")?;
    if !installed.success() || !ready().await {
        bail!("installing {SCHEMATHESIS} and {OPENAPI_SPEC_VALIDATOR} into {} failed", venv.display());
    }
    Ok(st)
}

/// The TypeScript client (`clients/typescript`), installed from its lock file when its
/// `node_modules` is missing or older than the lock, and built (`tsc`): its tests run
/// against an API in tests/it/typescript_client.rs. Then the example service built on it
/// (`examples/vendor-import`, tests/it/example_service.rs), installed likewise. Needs
/// Node.js 20+ and npm.
async fn ensure_typescript_client() -> anyhow::Result<std::path::PathBuf> {
    let dir = workspace_root().join("clients").join("typescript");
    install_npm_package(&dir).await?;
    run_npm(&dir, &["run", "build"]).await?;
    install_npm_package(&workspace_root().join("examples").join("vendor-import")).await?;
    Ok(dir)
}

/// `npm ci` in `dir` when its `node_modules` is missing or older than its lock file.
async fn install_npm_package(dir: &std::path::Path) -> anyhow::Result<()> {
    let modified = |path: std::path::PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(dir.join("node_modules").join(".package-lock.json"));
    if installed.is_none() || installed < modified(dir.join("package-lock.json")) {
        say!("installing npm dependencies: npm ci in {}", dir.display());
        run_npm(dir, &["ci", "--no-audit", "--no-fund"]).await?;
    }
    Ok(())
}

async fn run_npm(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("npm")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .await
        .context("running npm (Node.js 20+ and npm are needed: Debian's nodejs and npm, or nodejs.org)")?;
    if !status.success() {
        bail!("npm {} in {} failed ({})", args.join(" "), dir.display(), describe(&status));
    }
    Ok(())
}

/// The sum of cargo test's `test result: ok. N passed; N failed; N ignored; ...` lines,
/// and how many test binaries started (`running N tests`) and reported (`test result:`):
/// one that crashed started without reporting, one that did not compile did neither.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    started: u64,
    reported: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        if is_binary_start(line) {
            self.started += 1;
            return;
        }
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        self.reported += 1;
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

    /// The closing line. Failed tests are in the counts; a failure of cargo test that no
    /// test explains (a binary that crashed or did not build) is named too.
    fn summary(&self, cargo_succeeded: bool) -> String {
        let mut line = format!("tests: {} passed, {} failed, {} skipped", self.passed, self.failed, self.ignored);
        let unfinished = self.started.saturating_sub(self.reported);
        if unfinished > 0 {
            let binaries = if unfinished == 1 { "test binary" } else { "test binaries" };
            line.push_str(&format!("; {unfinished} {binaries} stopped without a result (see above)"));
        }
        if !cargo_succeeded && self.failed == 0 && unfinished == 0 {
            line.push_str("; cargo test failed outside the tests (a build error? see above)");
        }
        line
    }
}

/// libtest's first line for a test binary: `running 3 tests`, `running 1 test`.
fn is_binary_start(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("running ") else { return false };
    let count = rest.strip_suffix(" tests").or_else(|| rest.strip_suffix(" test"));
    count.is_some_and(|n| n.parse::<u64>().is_ok())
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
    use super::*;

    #[test]
    fn sums_the_result_lines() {
        let mut t = Totals::default();
        t.add("running 13 tests");
        t.add("test result: ok. 11 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        t.add("running 4 tests");
        t.add("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s");
        t.add("test something ... ok");
        assert_eq!((t.passed, t.failed, t.ignored), (14, 1, 2));
        assert_eq!(t.summary(false), "tests: 14 passed, 1 failed, 2 skipped");
    }

    #[test]
    fn names_a_binary_that_crashed_or_did_not_build() {
        let mut crashed = Totals::default();
        crashed.add("running 1 test");
        crashed.add("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        crashed.add("running 5 tests");
        assert_eq!(
            crashed.summary(false),
            "tests: 1 passed, 0 failed, 0 skipped; 1 test binary stopped without a result (see above)"
        );

        let not_built = Totals::default();
        assert_eq!(
            not_built.summary(false),
            "tests: 0 passed, 0 failed, 0 skipped; cargo test failed outside the tests (a build error? see above)"
        );
        assert_eq!(not_built.summary(true), "tests: 0 passed, 0 failed, 0 skipped");
    }

    #[test]
    fn installs_the_browser_only_when_missing_and_root() {
        let [chromium, driver] = &BROWSER;
        assert_eq!(browser_step(&[], false, false), BrowserStep::Ready);
        assert_eq!(browser_step(&[driver], true, true), BrowserStep::Install(vec!["chromium-driver"]));
        assert_eq!(
            browser_step(&[chromium, driver], true, true),
            BrowserStep::Install(vec!["chromium", "chromium-driver"])
        );
        let BrowserStep::Stop(message) = browser_step(&[chromium, driver], false, true) else { panic!("not root") };
        assert!(message.contains("chromium and chromedriver missing"), "{message}");
        assert!(message.contains("`sudo apt-get install chromium chromium-driver`"), "{message}");
        assert!(message.contains("we are not root"), "{message}");
        let BrowserStep::Stop(message) = browser_step(&[chromium], true, false) else { panic!("no apt-get") };
        assert!(message.contains("no apt-get"), "{message}");
    }
}
