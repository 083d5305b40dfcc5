//! One trace runs from the API request through the relay's publish to the worker's
//! provider call, across the outbox and the broker.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData},
};
use tracing_subscriber::prelude::*;

use crate::harness::{TestApp, email, eventually};

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn one_trace_runs_from_the_request_to_the_provider_call() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Global, not per thread: tests running beside this one would otherwise leave span
    // call sites marked as uninteresting. Their spans are recorded too, in traces of
    // their own, which the checks below tell apart by this notification's id.
    tracing::subscriber::set_global_default(subscriber).expect("only this test installs a subscriber");

    let (app, _services) = TestApp::spawn().await;
    let id = app.accept(&email("a@example.com")).await;
    app.wait_for_status(id, "sent").await;
    // The worker's `delivery` span ends after the outcome is recorded (with the ack):
    // the notification can read `sent` a moment before it is exported.
    let spans = eventually("the delivery span exported", || async {
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let done = spans.iter().any(|s| {
            s.name == "delivery" && attribute(s, "notification_id").as_deref() == Some(id.to_string().as_str())
        });
        done.then_some(spans)
    })
    .await;
    let ours = |name: &str, key: &str, value: &str| {
        spans
            .iter()
            .find(|s| s.name == name && attribute(s, key).as_deref() == Some(value))
            .unwrap_or_else(|| panic!("a `{name}` span with {key} = {value}"))
    };
    let delivery = ours("delivery", "notification_id", &id.to_string());
    let trace = delivery.span_context.trace_id();
    let delivery_id = attribute(delivery, "delivery_id").unwrap();
    assert_eq!(ours("publish", "delivery_id", &delivery_id).span_context.trace_id(), trace);
    let in_trace = |name: &str| spans.iter().filter(|s| s.name == name && s.span_context.trace_id() == trace).count();
    assert_eq!(in_trace("provider"), 1, "the provider call is in the trace");
    let request = spans
        .iter()
        .find(|s| s.name == "request" && s.span_context.trace_id() == trace)
        .expect("the trace starts at the API request");
    assert_eq!(attribute(request, "route").as_deref(), Some("/v1/notifications"));
    assert_eq!(attribute(request, "method").as_deref(), Some("POST"));
}
