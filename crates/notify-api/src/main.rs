use anyhow::{anyhow, bail};
use clap::{Parser, Subcommand};
use notify_api::Config;
use store::Store;
use uuid::Uuid;

/// Notify's producer API, and its operator commands.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: bootstrap::ConfigArg,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the database migrations, then exit.
    Migrate,
    /// Administration.
    #[command(subcommand)]
    Admin(Admin),
}

#[derive(Subcommand)]
enum Admin {
    /// Create a tenant and print its id and a new API key (shown only this once).
    CreateTenant { name: String },
    /// Create another API key for a tenant and print it (shown only this once).
    CreateKey { tenant_id: Uuid },
    /// List a tenant's API keys (ids and prefixes, never the keys).
    ListKeys { tenant_id: Uuid },
    /// Revoke an API key: the next request with it gets 401.
    RevokeKey { key_id: Uuid },
    /// Set a tenant's intake rate, or return it to the configured default.
    SetRateLimit {
        tenant_id: Uuid,
        /// Notifications per second.
        #[arg(long, required_unless_present = "default", requires = "burst")]
        per_second: Option<u32>,
        /// Notifications accepted at once after a quiet spell.
        #[arg(long)]
        burst: Option<u32>,
        /// Use the API's `rate_limit` setting.
        #[arg(long, conflicts_with_all = ["per_second", "burst"])]
        default: bool,
    },
    /// Set a tenant's fallback template locale and whether notifications may name types it
    /// has not defined (they then need inline content).
    SetTenant {
        tenant_id: Uuid,
        /// BCP 47 tag: `en`, `de`, `pt-BR`.
        #[arg(long, required_unless_present = "adhoc_types")]
        default_locale: Option<String>,
        /// `false`: every notification must name a type the tenant defined.
        #[arg(long)]
        adhoc_types: Option<bool>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Outside the runtime: the trace exporter's blocking HTTP client must not be made or
    // dropped on an async thread.
    let _telemetry =
        matches!(cli.command, None | Some(Command::Serve)).then(|| bootstrap::telemetry::init("notify-api"));
    bootstrap::exit_code(tokio::runtime::Runtime::new().map_err(Into::into).and_then(|rt| rt.block_on(run(cli))))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            notify_api::run(config, listener, bootstrap::shutdown_on_signal()).await
        }
        Command::Migrate => {
            let store = connect(&config)?;
            store.migrate().await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin(admin) => {
            let store = connect(&config)?;
            let done = administer(&store, admin).await;
            store.close().await;
            done
        }
    }
}

async fn administer(store: &Store, admin: Admin) -> anyhow::Result<()> {
    match admin {
        Admin::CreateTenant { name } => {
            let tenant = store.create_tenant(&name).await?;
            println!("tenant_id={}", tenant.tenant_id);
            println!("key_id={}", tenant.key_id);
            println!("api_key={}", tenant.api_key);
        }
        Admin::CreateKey { tenant_id } => {
            let (key_id, key) =
                store.create_api_key(tenant_id).await?.ok_or_else(|| anyhow!("no tenant {tenant_id}"))?;
            println!("key_id={key_id}");
            println!("api_key={key}");
        }
        Admin::ListKeys { tenant_id } => {
            for k in store.list_api_keys(tenant_id).await? {
                let state = match k.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "active".into(),
                };
                let used = k.last_used_at.map_or("never used".into(), |at| format!("last used {at}"));
                println!("{} {}... created {} {used} {state}", k.id, k.display_prefix, k.created_at);
            }
        }
        Admin::RevokeKey { key_id } => {
            if !store.revoke_api_key(key_id).await? {
                bail!("no active key {key_id}");
            }
            println!("revoked {key_id}");
        }
        Admin::SetRateLimit { tenant_id, per_second, burst, default: _ } => {
            let limit = per_second.zip(burst);
            if !store.set_rate_limit(tenant_id, limit).await? {
                bail!("no tenant {tenant_id}");
            }
            match limit {
                Some((p, b)) => println!("tenant {tenant_id}: {p} per second, burst {b}"),
                None => println!("tenant {tenant_id}: the configured default rate"),
            }
        }
        Admin::SetTenant { tenant_id, default_locale, adhoc_types } => {
            let locale = match default_locale {
                Some(tag) => Some(domain::locale::normalize(&tag).ok_or_else(|| anyhow!("`{tag}` is not a locale"))?),
                None => None,
            };
            if !store.set_tenant_settings(tenant_id, locale.as_deref(), adhoc_types).await? {
                bail!("no tenant {tenant_id}");
            }
            println!("tenant {tenant_id}: updated");
        }
    }
    Ok(())
}

fn connect(config: &Config) -> anyhow::Result<Store> {
    let url = bootstrap::require(&config.database_url, "database_url")?;
    Ok(Store::connect_lazy(bootstrap::ExposeSecret::expose_secret(url), 2)?)
}
