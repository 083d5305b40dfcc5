//! The workers' metrics, labelled by channel (and provider, outcome): small fixed sets.

use std::sync::LazyLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub channel: &'static str,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub channel: &'static str,
    pub provider: String,
    /// `sent`, `retrying` or `failed`: what the attempt did to the delivery.
    pub outcome: &'static str,
}

pub struct WorkerMetrics {
    pub attempts: Family<OutcomeLabels, Counter>,
    pub dead_lettered: Family<ChannelLabel, Counter>,
    pub dropped: Family<ChannelLabel, Counter>,
    pub panics: Family<ChannelLabel, Counter>,
    pub in_flight: Family<ChannelLabel, Gauge>,
    pub provider_latency: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    pub accept_to_sent: Family<ChannelLabel, Histogram, fn() -> Histogram>,
}

fn provider_call_buckets() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

fn accept_to_sent_buckets() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0])
}

pub static METRICS: LazyLock<WorkerMetrics> = LazyLock::new(|| {
    let metrics = WorkerMetrics {
        attempts: Family::default(),
        dead_lettered: Family::default(),
        dropped: Family::default(),
        panics: Family::default(),
        in_flight: Family::default(),
        provider_latency: Family::new_with_constructor(provider_call_buckets),
        accept_to_sent: Family::new_with_constructor(accept_to_sent_buckets),
    };
    bootstrap::metrics::register(|r| {
        r.register(
            "delivery_attempts",
            "Provider attempts, by what they did to the delivery",
            metrics.attempts.clone(),
        );
        r.register("messages_dead_lettered", "Messages sent to the dead-letter queue", metrics.dead_lettered.clone());
        r.register("messages_dropped", "Stale or duplicate messages dropped", metrics.dropped.clone());
        r.register(
            "message_handler_panics",
            "Messages whose handling panicked (each dead-lettered)",
            metrics.panics.clone(),
        );
        r.register("consumer_in_flight", "Messages being handled", metrics.in_flight.clone());
        r.register("provider_call_seconds", "Duration of provider calls", metrics.provider_latency.clone());
        r.register(
            "accept_to_sent_seconds",
            "From acceptance to the provider's acceptance",
            metrics.accept_to_sent.clone(),
        );
    });
    metrics
});

/// Creates every series of a worker of `channel` (`email`, `webhooks`) calling
/// `providers`, at zero, so an idle worker's `/metrics` has them before its first message
/// (a series missing until then reads as "no data" rather than "nothing happened").
pub fn publish(channel: &'static str, providers: &[&str]) {
    let label = ChannelLabel { channel };
    for family in [&METRICS.dead_lettered, &METRICS.dropped, &METRICS.panics] {
        let _ = family.get_or_create(&label);
    }
    let _ = METRICS.in_flight.get_or_create(&label);
    let _ = METRICS.accept_to_sent.get_or_create(&label);
    for provider in providers {
        for outcome in ["sent", "retrying", "failed"] {
            let labels = OutcomeLabels { channel: label.channel, provider: (*provider).to_owned(), outcome };
            let _ = METRICS.attempts.get_or_create(&labels);
        }
        let _ = METRICS
            .provider_latency
            .get_or_create(&ProviderLabels { channel: label.channel, provider: (*provider).to_owned() });
    }
}
