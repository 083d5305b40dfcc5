//! `cargo xtask test`: the services the tests need, a clean slate, then `cargo test`.

use std::process::ExitCode;

use anyhow::Context;

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

    let mut command = tokio::process::Command::new(cargo());
    command.args(["test", "--workspace"]).args(&args).current_dir(workspace_root());
    say!("running: cargo test --workspace {}", args.join(" "));
    let mut child = command.spawn().context("running cargo test")?;
    // A Ctrl-C reaches cargo test too (same process group): let it end, report its status.
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for cargo test")?,
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    if status.success() {
        return Ok(ExitCode::SUCCESS);
    }
    say!("cargo test failed ({})", describe(&status));
    let code = status.code().and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0).unwrap_or(1);
    Ok(ExitCode::from(code))
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
