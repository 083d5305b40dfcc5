use clap::{Parser, Subcommand};
use notify_api::Config;
use store::Store;

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
}

fn main() -> std::process::ExitCode {
    bootstrap::exit_code(tokio::runtime::Runtime::new().map_err(Into::into).and_then(|rt| rt.block_on(run())))
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            bootstrap::telemetry::init("notify-api");
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
        Command::Admin(Admin::CreateTenant { name }) => {
            let store = connect(&config)?;
            let tenant = store.create_tenant(&name).await?;
            store.close().await;
            println!("tenant_id={}", tenant.tenant_id);
            println!("api_key={}", tenant.api_key);
            Ok(())
        }
    }
}

fn connect(config: &Config) -> anyhow::Result<Store> {
    let url = bootstrap::require(&config.database_url, "database_url")?;
    Ok(Store::connect_lazy(bootstrap::ExposeSecret::expose_secret(url), 2)?)
}
