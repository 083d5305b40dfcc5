//! The load generator: closed loop (a fixed number of requests in flight, each sent as
//! soon as the previous one answered) and open loop (requests started at a target rate,
//! whatever the answers do), over one pooled reqwest client. Latencies go into HDR
//! histograms in microseconds; the open loop measures from each request's intended start,
//! so a stalled server is not hidden by a generator that waits for it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

/// The API under load and the client that drives it.
#[derive(Clone)]
pub struct Target {
    client: reqwest::Client,
    single_url: String,
    batch_url: String,
    authorization: String,
}

impl Target {
    pub fn new(api: &str, api_key: &str, connections: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(connections)
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the load generator's HTTP client")?;
        Ok(Self {
            client,
            single_url: format!("{api}/v1/notifications"),
            batch_url: format!("{api}/v1/notifications/batch"),
            authorization: format!("Bearer {api_key}"),
        })
    }

    /// One request; `Ok(accepted notifications)` or the reason it failed.
    async fn post(&self, url: &str, body: String, batch: bool) -> Result<u64, String> {
        let response = self
            .client
            .post(url)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| format!("{e}"))?;
        if batch && status == reqwest::StatusCode::OK {
            // One `"status":202` per accepted item (the nested notification's status is a string).
            Ok(count(&bytes, br#""status":202"#))
        } else if !batch && status == reqwest::StatusCode::ACCEPTED {
            Ok(1)
        } else {
            Err(format!("{status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)])))
        }
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

/// One notification to one recipient on one channel; the channel turns with `i`, so the
/// four workers share the load.
pub fn notification(kind: &str, i: u64, send_at: Option<&str>) -> String {
    let n = i % 10_000_000;
    let to = match i % 4 {
        0 => format!(r#"{{"email":"user{n}@example.com"}}"#),
        1 => format!(r#"{{"phone":"+1555{n:07}"}}"#),
        2 => format!(r#"{{"whatsapp":"+1556{n:07}"}}"#),
        _ => format!(r#"{{"subscriber_id":"subscriber-{n}"}}"#),
    };
    let send_at = send_at.map(|at| format!(r#","send_at":"{at}""#)).unwrap_or_default();
    format!(
        r#"{{"type":"{kind}","to":[{to}],"content":{{"subject":"Your order shipped","text":"It is on its way: order {i}."}},"data":{{"order":"{i}"}}{send_at}}}"#
    )
}

/// One notification of the peer shape: about 300 bytes, to one subscriber on the novu
/// channel, which the bench's novu-worker delivers over HTTP to its Novu stand-in.
pub fn peer_notification(kind: &str, i: u64) -> String {
    let n = i % 10_000_000;
    format!(
        r#"{{"type":"{kind}","to":[{{"subscriber_id":"subscriber-{n}"}}],"channels":["novu"],"data":{{"order":"order-{i:08}","customer":"Ada Lovelace","total":"129.90 EUR","carrier":"DHL Express","tracking":"JD01460000{n:07}","message":"Your order is on its way and should arrive within two days."}}}}"#
    )
}

pub fn batch(kind: &str, first: u64, size: u64, send_at: Option<&str>) -> String {
    let items: Vec<String> = (first..first + size).map(|i| notification(kind, i, send_at)).collect();
    format!(r#"{{"notifications":[{}]}}"#, items.join(","))
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// What a load phase did.
pub struct LoadResult {
    pub requests: u64,
    pub accepted: u64,
    pub errors: u64,
    /// Open loop only: requests not started because `max_in_flight` were outstanding.
    pub dropped: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Per request, microseconds.
    pub latency: Histogram<u64>,
}

impl LoadResult {
    fn new() -> Self {
        Self {
            requests: 0,
            accepted: 0,
            errors: 0,
            dropped: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: histogram(),
        }
    }

    fn merge(&mut self, other: LoadResult) {
        self.requests += other.requests;
        self.accepted += other.accepted;
        self.errors += other.errors;
        self.dropped += other.dropped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.add(&other.latency).expect("same bounds");
    }

    fn record(&mut self, outcome: Result<u64, String>, micros: u64) {
        self.requests += 1;
        self.latency.saturating_record(micros.max(1));
        match outcome {
            Ok(n) => self.accepted += n,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Accepted notifications per second.
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q`, in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// When a closed loop stops.
#[derive(Clone, Copy)]
pub enum Stop {
    After(Duration),
    /// After this many requests in all.
    Requests(u64),
}

/// What each request of a closed loop carries.
#[derive(Clone, Copy)]
pub enum Body {
    /// One notification, its channel turning with its number ([`notification`]).
    Single,
    /// A batch of this many of those.
    Batch(u64),
    /// One notification of the peer shape ([`peer_notification`]).
    Peer,
}

/// `concurrency` tasks, each sending its next request as soon as the previous answered.
pub async fn closed_loop(
    target: &Target,
    kind: &str,
    concurrency: usize,
    body: Body,
    stop: Stop,
    send_at: Option<String>,
) -> LoadResult {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (target, kind, next, send_at) = (target.clone(), kind.to_owned(), next.clone(), send_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut result = LoadResult::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match stop {
                    Stop::After(d) if started.elapsed() >= d => break,
                    Stop::Requests(n) if i >= n => break,
                    _ => {}
                }
                let t0 = Instant::now();
                let outcome = match body {
                    Body::Single => {
                        target.post(&target.single_url, notification(&kind, i, send_at.as_deref()), false).await
                    }
                    Body::Batch(size) => {
                        let body = batch(&kind, i * size, size, send_at.as_deref());
                        target.post(&target.batch_url, body, true).await
                    }
                    Body::Peer => target.post(&target.single_url, peer_notification(&kind, i), false).await,
                };
                result.record(outcome, t0.elapsed().as_micros() as u64);
            }
            result
        }));
    }
    let mut total = LoadResult::new();
    for task in tasks {
        total.merge(task.await.expect("a load task does not panic"));
    }
    total.elapsed = started.elapsed();
    total
}

/// Notifications started at `rate` per second for `duration`, `per_request` per request
/// (1: single requests, more: batches of that many), at most `max_in_flight` requests
/// outstanding (a request that would exceed it is counted as dropped).
pub async fn open_loop(
    target: &Target,
    kind: &str,
    rate: f64,
    per_request: u64,
    duration: Duration,
    max_in_flight: usize,
) -> LoadResult {
    let started = Instant::now();
    let shared = Arc::new(Mutex::new(LoadResult::new()));
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let interval = Duration::from_secs_f64(per_request as f64 / rate.max(1.0));
    let mut dropped = 0;
    for i in 0u64.. {
        let intended = started + interval.mul_f64(i as f64);
        if intended.duration_since(started) >= duration {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let (target, shared) = (target.clone(), shared.clone());
        let body = if per_request == 1 {
            notification(kind, i, None)
        } else {
            batch(kind, i * per_request, per_request, None)
        };
        tokio::spawn(async move {
            let outcome = if per_request == 1 {
                target.post(&target.single_url, body, false).await
            } else {
                target.post(&target.batch_url, body, true).await
            };
            let micros = intended.elapsed().as_micros() as u64;
            shared.lock().expect("not poisoned").record(outcome, micros);
            drop(permit);
        });
    }
    let _all = permits.acquire_many(max_in_flight as u32).await.expect("never closed");
    let mut result = std::mem::replace(&mut *shared.lock().expect("not poisoned"), LoadResult::new());
    result.dropped = dropped;
    result.elapsed = started.elapsed();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_and_turn_channels() {
        let b: serde_json::Value = serde_json::from_str(&batch("bench.x", 0, 4, Some("2030-01-01T00:00:00Z"))).unwrap();
        let items = b["notifications"].as_array().unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[1]["to"][0]["phone"], "+15550000001");
        assert_eq!(items[3]["to"][0]["subscriber_id"], "subscriber-3");
        assert_eq!(items[0]["send_at"], "2030-01-01T00:00:00Z");
        assert_eq!(count(br#"{"status":202,"x":{"status":"pending"}},{"status":202}"#, br#""status":202"#), 2);
    }

    #[test]
    fn the_peer_shape_is_about_300_bytes_for_novu() {
        for i in [0, 12_345_678] {
            let body = peer_notification("bench.peer.c64", i);
            assert!((280..=320).contains(&body.len()), "{} bytes: {body}", body.len());
            let b: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(b["channels"], serde_json::json!(["novu"]));
            assert!(b["to"][0]["subscriber_id"].as_str().unwrap().starts_with("subscriber-"));
        }
    }
}
