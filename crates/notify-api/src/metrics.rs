//! The API's metrics: requests by route (the route's pattern, never the raw path with its
//! ids), method and status, their duration, and notifications accepted. Every label comes
//! from a fixed set, so no request, however made up, adds a series of its own.

use std::{sync::LazyLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    method: &'static str,
    route: String,
    status: u16,
}

pub struct ApiMetrics {
    requests: Family<StatusLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub accepted: Counter,
}

fn duration_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
}

pub static METRICS: LazyLock<ApiMetrics> = LazyLock::new(|| {
    let metrics = ApiMetrics {
        requests: Family::default(),
        duration: Family::new_with_constructor(duration_buckets),
        accepted: Counter::default(),
    };
    bootstrap::metrics::register(|r| {
        r.register("http_requests", "HTTP requests answered, by route and status", metrics.requests.clone());
        r.register("http_request_duration_seconds", "Time to answer HTTP requests", metrics.duration.clone());
        r.register("notifications_accepted", "Notifications accepted (replays not counted)", metrics.accepted.clone());
    });
    metrics
});

/// Middleware counting and timing every request by its matched route (a route's pattern is
/// one of the router's; anything else is `unmatched`) and method.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = RouteLabels { method, route };
    METRICS.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    let status = response.status().as_u16();
    METRICS.requests.get_or_create(&StatusLabels { method: labels.method, route: labels.route, status }).inc();
    response
}

/// The standard methods by name; any other (a method is any token a client makes up) is `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN.iter().find(|m| *m == method).map_or("other", Method::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_are_labels() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"FOO-1234").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), "other");
    }
}
