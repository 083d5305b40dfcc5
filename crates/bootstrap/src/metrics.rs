//! The process's Prometheus metrics: one registry that each component registers its
//! families into once, served as text at `/metrics`. Label values are always from small
//! fixed sets (channels, providers, outcomes, routes), never ids or addresses.
//!
//! Components' families are named `notify_*`; beside them, from the first scrape, the
//! standard `process_*` metrics and `notify_build_info` (version and commit).

use std::sync::{LazyLock, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info},
    registry::Registry,
};

const PREFIX: &str = "notify";

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Process));
    let commit = option_env!("NOTIFY_COMMIT").unwrap_or("unknown");
    let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION")), ("commit", commit)]);
    registry.sub_registry_with_prefix(PREFIX).register(
        "build",
        "The running build (commit from NOTIFY_COMMIT at build time)",
        build,
    );
    Mutex::new(registry)
});

/// Registers metric families, named `notify_<name>`; call once per family (from a
/// `LazyLock`).
pub fn register(register: impl FnOnce(&mut Registry)) {
    let mut registry = REGISTRY.lock().expect("the metrics registry lock is never poisoned");
    register(registry.sub_registry_with_prefix(PREFIX));
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

/// The standard `process_*` metrics, read from `/proc/self` at each scrape (Linux; none
/// elsewhere).
#[derive(Debug)]
struct Process;

/// `/proc`'s clock tick (`USER_HZ`), 100 on every Linux architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stat) = ProcessStat::read() else { return Ok(()) };
        let cpu = ConstCounter::new(stat.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size", stat.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size", stat.virtual_bytes),
            ("process_open_fds", "Open file descriptors", stat.open_fds),
            ("process_threads", "OS threads", stat.threads),
            ("process_start_time_seconds", "Start time of the process since the Unix epoch", stat.start_time_seconds),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

struct ProcessStat {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    threads: f64,
    start_time_seconds: f64,
}

impl ProcessStat {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // Numbered as in proc(5) from field 3, the state.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let resident_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / TICKS_PER_SECOND,
            resident_bytes: resident_kib * 1024.0,
            virtual_bytes: field(23)?,
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as f64,
            threads: field(20)?,
            start_time_seconds: boot_time + field(22)? / TICKS_PER_SECOND,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_and_the_build_are_described_from_the_start() {
        let text = super::render();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing: {text}");
        }
        assert!(text.contains("notify_build_info{version=\""), "{text}");
    }
}
