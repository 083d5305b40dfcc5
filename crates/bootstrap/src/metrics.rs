//! The process's Prometheus metrics: one registry that each component registers its
//! families into once, served as text at `/metrics`. Label values are always from small
//! fixed sets (channels, providers, outcomes, routes), never ids or addresses.

use std::sync::{LazyLock, Mutex};

use prometheus_client::{encoding::text::encode, registry::Registry};

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::with_prefix("notify")));

/// Registers metric families; call once per family (from a `LazyLock`).
pub fn register(register: impl FnOnce(&mut Registry)) {
    register(&mut REGISTRY.lock().expect("the metrics registry lock is never poisoned"));
}

/// The OpenMetrics text of every registered family.
pub fn render() -> String {
    let mut text = String::new();
    encode(&mut text, &REGISTRY.lock().expect("the metrics registry lock is never poisoned"))
        .expect("writing to a String cannot fail");
    text
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
