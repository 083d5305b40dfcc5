use anyhow::{anyhow, bail};
use clap::{Parser, Subcommand};
use domain::{OutboxMessage, Route};
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
    /// Print the OpenAPI document the API serves at /openapi.json (as `openapi.json` at the
    /// repository's root holds it), then exit.
    Openapi,
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
    // Outside the runtime: the trace exporter's blocking HTTP client must not be made or
    // dropped on an async thread.
    let _telemetry =
        matches!(cli.command, None | Some(Command::Serve)).then(|| bootstrap::telemetry::init("notify-api"));
    bootstrap::exit_code(tokio::runtime::Runtime::new().map_err(Into::into).and_then(|rt| rt.block_on(run(cli))))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Openapi) = cli.command {
        // Needs no configuration: the document is the code's.
        print!("{}", notify_api::openapi_json());
        return Ok(());
    }
    let config = Config::load(cli.config.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            notify_api::run(config, listener, bootstrap::shutdown_on_signal()).await
        }
        Command::Openapi => unreachable!("answered before the configuration is read"),
        Command::Migrate => {
            let store = connect(&config)?;
            store.migrate().await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin(Admin::Dlq(command)) => {
            let url = bootstrap::require(&config.amqp_url, "amqp_url")?;
            dead_letters(bootstrap::ExposeSecret::expose_secret(url), command).await
        }
        Command::Admin(Admin::RotateIntegrationKey { batch }) => {
            let keyring = config.secrets.keyring()?.ok_or_else(|| anyhow!("secrets.keys is not configured"))?;
            let store = connect(&config)?;
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
        Admin::SetTenant { tenant_id, default_locale, adhoc_types, http_action_urls } => {
            let locale = match default_locale {
                Some(tag) => Some(domain::locale::normalize(&tag).ok_or_else(|| anyhow!("`{tag}` is not a locale"))?),
                None => None,
            };
            if !store.set_tenant_settings(tenant_id, locale.as_deref(), adhoc_types, http_action_urls).await? {
                bail!("no tenant {tenant_id}");
            }
            println!("tenant {tenant_id}: updated");
        }
        Admin::Dlq(_) | Admin::RotateIntegrationKey { .. } => unreachable!("run handles it"),
    }
    Ok(())
}

async fn dead_letters(amqp_url: &str, command: Dlq) -> anyhow::Result<()> {
    use notify_api::dlq;
    match command {
        Dlq::List { queue, limit } => {
            let letters = dlq::list(amqp_url, queue, dlq::Selection { limit: Some(limit), delivery: None }).await?;
            for letter in &letters {
                println!("{}", describe(letter));
            }
            println!("{} listed", letters.len());
        }
        Dlq::Replay { queue, selection } => {
            let done = dlq::replay(amqp_url, queue, selection.into()).await?;
            println!("{} replayed", done.replayed);
            if done.unreadable > 0 {
                println!("{} unreadable, left in the queue (remove them with discard)", done.unreadable);
            }
        }
        Dlq::Discard { queue, selection, yes } => {
            if !yes {
                bail!("discard deletes dead letters for good: add --yes");
            }
            println!("{} discarded", dlq::discard(amqp_url, queue, selection.into()).await?);
        }
    }
    Ok(())
}

/// One line per dead letter: its ids (never content), and the broker's latest `x-death`.
fn describe(letter: &queue::DeadLetter) -> String {
    let what = match &letter.message {
        Ok(OutboxMessage::Delivery(m)) => format!(
            "delivery={} notification={} tenant={} attempt={}",
            m.delivery_id, m.notification_id, m.tenant_id, m.attempt
        ),
        Ok(OutboxMessage::Webhook(m)) => {
            format!("webhook_message={} tenant={} attempt={}", m.message_id, m.tenant_id, m.attempt)
        }
        Err(e) => format!("unreadable ({} bytes): {e}", letter.body.len()),
    };
    let death = match letter.deaths.first() {
        Some(d) => {
            let time = d.time.and_then(|t| time::OffsetDateTime::from_unix_timestamp(i64::try_from(t).ok()?).ok());
            let time = time.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
            let time = time.unwrap_or_else(|| "?".into());
            format!(" reason={} count={} time={time} queue={}", d.reason, d.count, d.queue)
        }
        None => String::new(),
    };
    format!("{what}{death}")
}

fn connect(config: &Config) -> anyhow::Result<Store> {
    let url = bootstrap::require(&config.database_url, "database_url")?;
    Ok(Store::connect_lazy(bootstrap::ExposeSecret::expose_secret(url), 2)?)
}
