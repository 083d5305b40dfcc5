use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Logs to stderr: human-readable by default, JSON lines when `NOTIFY_LOG_FORMAT=json`
/// (production). The level comes from `RUST_LOG`, default `info`. At `info`, no binary
/// logs message bodies or addresses; they appear at `debug` only.
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("NOTIFY_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(fmt::layer().json().with_current_span(true).with_writer(std::io::stderr)).init();
    } else {
        registry.with(fmt::layer().with_writer(std::io::stderr)).init();
    }
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
}
