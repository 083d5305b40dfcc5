//! `notify-admin`: the operator's commands, apart from the services. Each reads the same
//! configuration as the API (`database_url`; `amqp_url` for the dead letters;
//! `secrets` for the rotation) and exits.

mod dead_letters;
mod tenants;

use anyhow::{anyhow, bail};
use clap::{Parser, Subcommand};
use domain::Route;
use notify_api::Config;
use store::Store;
use uuid::Uuid;

/// Notify's operator commands.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: bootstrap::ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations, then exit.
    Migrate,
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
    /// Set a tenant's fallback template locale, whether notifications may name types it
    /// has not defined (they then need inline content), and whether its in-app action URLs
    /// may be `http`.
    SetTenant {
        tenant_id: Uuid,
        /// BCP 47 tag: `en`, `de`, `pt-BR`.
        #[arg(long, required_unless_present_any = ["adhoc_types", "http_action_urls"])]
        default_locale: Option<String>,
        /// `false`: every notification must name a type the tenant defined.
        #[arg(long)]
        adhoc_types: Option<bool>,
        /// `true`: in-app action URLs may be `http` as well as `https` (or a path).
        #[arg(long)]
        http_action_urls: Option<bool>,
    },
    /// Re-seal every secret not sealed with `secrets.current` (opening it with any key of
    /// `secrets.keys`): integration secrets, subscribers' chat webhook addresses and those of
    /// chat deliveries that may still be sent; afterwards the old key can be removed. Safe to
    /// run again.
    RotateIntegrationKey {
        /// Rows read and re-sealed at a time.
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// A dead-letter queue (`notify.<channel>.dead`, `notify.webhooks.dead`); needs `amqp_url`.
    #[command(subcommand)]
    Dlq(Dlq),
}

#[derive(Subcommand)]
enum Dlq {
    /// Show the dead letters, oldest first, leaving them in the queue.
    List {
        /// A channel's name, or `webhooks`.
        queue: Route,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish the dead letters to the channel's queue again (each removed once the broker
    /// confirmed its copy); unreadable ones stay.
    Replay {
        /// A channel's name, or `webhooks`.
        queue: Route,
        #[command(flatten)]
        selection: Selection,
    },
    /// Delete dead letters for good, unreadable ones included.
    Discard {
        /// A channel's name, or `webhooks`.
        queue: Route,
        #[command(flatten)]
        selection: Selection,
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(clap::Args)]
struct Selection {
    /// Act on at most this many.
    #[arg(long)]
    limit: Option<usize>,
    /// Only the messages of this delivery (or webhook message).
    #[arg(long)]
    delivery: Option<Uuid>,
}

impl From<Selection> for notify_api::dlq::Selection {
    fn from(s: Selection) -> Self {
        Self { limit: s.limit, delivery: s.delivery }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    bootstrap::exit_code(tokio::runtime::Runtime::new().map_err(Into::into).and_then(|rt| rt.block_on(run(cli))))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.config.as_deref())?;
    match cli.command {
        Command::Migrate => {
            let store = connect(&config)?;
            store.migrate().await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Dlq(command) => {
            let url = bootstrap::require(&config.amqp_url, "amqp_url")?;
            dead_letters::run(bootstrap::ExposeSecret::expose_secret(url), command).await
        }
        Command::RotateIntegrationKey { batch } => rotate(&config, batch).await,
        command => {
            let store = connect(&config)?;
            let done = tenants::administer(&store, command).await;
            store.close().await;
            done
        }
    }
}

/// Re-seals every secret with `secrets.current`.
async fn rotate(config: &Config, batch: i64) -> anyhow::Result<()> {
    let keyring = config.secrets.keyring()?.ok_or_else(|| anyhow!("secrets.keys is not configured"))?;
    let store = connect(config)?;
    let done = notify_api::rotation::rotate(&store, &keyring, batch.max(1)).await;
    store.close().await;
    let done = done?;
    println!(
        "re-sealed with key {}: {} integrations, {} subscribers' chat addresses, {} deliveries' chat addresses, \
         {} webhook endpoints",
        keyring.current(),
        done.integrations.resealed,
        done.subscribers.resealed,
        done.deliveries.resealed,
        done.webhooks.resealed
    );
    if done.changed() > 0 {
        println!("{} rows changed meanwhile (sealed by their writer; run again to be sure)", done.changed());
    }
    if done.unreadable() > 0 {
        bail!(
            "secrets that do not open with the configured keys: {} integrations, {} subscribers, {} deliveries, \
             {} webhook endpoints",
            done.integrations.unreadable,
            done.subscribers.unreadable,
            done.deliveries.unreadable,
            done.webhooks.unreadable
        );
    }
    Ok(())
}

fn connect(config: &Config) -> anyhow::Result<Store> {
    let url = bootstrap::require(&config.database_url, "database_url")?;
    Ok(Store::connect_lazy(bootstrap::ExposeSecret::expose_secret(url), 2)?)
}
