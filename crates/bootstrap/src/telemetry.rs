//! Logs, and traces when OpenTelemetry is configured.
//!
//! Logs go to stderr: human-readable by default, JSON lines when `NOTIFY_LOG_FORMAT=json`
//! (production); the level comes from `RUST_LOG`, default `info`. At `info`, no binary
//! logs message bodies or addresses; they appear at `debug` only.
//!
//! Traces are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the other standard `OTEL_*` variables
//! (sampler, headers, timeout) are read by the OpenTelemetry SDK. A notification's trace
//! crosses processes as a W3C `traceparent`: the API stores it with the outbox row, the
//! relay puts it in the AMQP headers, the worker continues it.
//!
//! A panic is logged at `error` with where it happened and on which thread, never with
//! its message, which may hold an address or a body ([`log_panics`]).

use std::collections::HashMap;

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, filter::LevelFilter, fmt, prelude::*};

/// Keeps the trace exporter; dropping it flushes the spans not yet exported.
#[must_use = "dropping it at once would flush and stop trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

pub fn init(service: &str) -> Telemetry {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("NOTIFY_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let logs = if json {
        fmt::layer().json().with_current_span(true).with_writer(std::io::stderr).with_filter(filter).boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).with_filter(filter).boxed()
    };
    let (provider, export_error) = match exporter(service) {
        Ok(provider) => (provider, None),
        Err(e) => (None, Some(e)),
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())).with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry().with(logs).with(traces).init();
    log_panics();
    if let Some(e) = export_error {
        tracing::warn!(error = %e, "trace export is configured but could not start; continuing without traces");
    }
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), traces = provider.is_some(), "starting");
    Telemetry { provider }
}

/// Replaces the default panic hook, which prints the panic's message to stderr: that
/// message may hold personal data (an address, a rendered body, a value a failed
/// assertion printed). The panic is logged at `error` with its location and thread only,
/// and the backtrace when `RUST_BACKTRACE` asks for one (function names, no data).
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map_or_else(|| "unknown".to_owned(), ToString::to_string);
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(%location, thread, %backtrace, "panicked (its message is not logged: it may hold personal data)");
        } else {
            tracing::error!(%location, thread, "panicked (its message is not logged: it may hold personal data)");
        }
    }));
}

fn exporter(service: &str) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty()));
    if !configured {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_owned()).build())
        .build();
    global::set_tracer_provider(provider.clone());
    Ok(Some(provider))
}

/// The span's W3C `traceparent`, when traces are being recorded.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// The span of publishing `message`: a child of the trace that asked for it (its
/// `traceparent`), which the message then carries on to the worker as this span's. Open
/// until the broker confirmed the message.
pub fn publish_span<M: domain::Publishable>(message: &mut M) -> tracing::Span {
    let (id, attempt) = (message.id(), message.attempt());
    let span = match message.route() {
        domain::Route::Channel(channel) => tracing::info_span!("publish", delivery_id = %id, %channel, attempt),
        domain::Route::Webhooks => tracing::info_span!("publish", webhook_message_id = %id, attempt),
    };
    set_parent(&span, message.traceparent());
    if let Some(traceparent) = traceparent(&span) {
        *message.traceparent_mut() = Some(traceparent);
    }
    span
}

/// Makes `span` a child of the remote span `traceparent` names (from another process).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(context);
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    const CHILD: &str = "NOTIFY_TEST_PANIC_HOOK_CHILD";
    const SECRET: &str = "ada.lovelace@example.org";

    /// Run in a process of its own (the hook is the process's): a panic's message does not
    /// reach stderr, its location does.
    #[test]
    fn a_panic_is_logged_without_its_message() {
        if std::env::var_os(CHILD).is_some() {
            tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
            super::log_panics();
            let caught = std::panic::catch_unwind(|| panic!("cannot send to {SECRET}"));
            assert!(caught.is_err());
            return;
        }
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "telemetry::tests::a_panic_is_logged_without_its_message", "--nocapture"])
            .env(CHILD, "1")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains(SECRET), "the panic's message was printed:\n{stderr}");
        assert!(stderr.contains("panicked"), "the panic was not logged:\n{stderr}");
        assert!(stderr.contains("telemetry.rs"), "the panic's location was not logged:\n{stderr}");
        assert!(stderr.contains("ERROR"), "not at error level:\n{stderr}");
    }
}
