//! The load generator: closed loop (a fixed number of requests in flight, each sent as
//! soon as the previous one answered) and open loop (requests started at a target rate,
//! whatever the answers do), over our own HTTP/1.1 client (`client.rs`), on a thread of
//! its own with a current-thread runtime (`threads.rs`), which reports its CPU apart from
//! the platform's. Latencies go into HDR histograms in microseconds; the open loop
//! measures from each request's intended start, so a stalled server is not hidden by a
//! generator that waits for it.

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
    rc::Rc,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use super::{client::Conn, threads};

const SINGLE_PATH: &str = "/v1/notifications";
const BATCH_PATH: &str = "/v1/notifications/batch";

/// Microseconds on the bench's one clock, which the load generator and the Novu stand-in
/// share (they live in this process): end-to-end latency is an arrival minus a send.
pub fn clock_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The API under load.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    authorization: String,
}

impl Target {
    /// `api` is `http://<ip>:<port>`.
    pub fn new(api: &str, api_key: &str) -> anyhow::Result<Self> {
        let addr = api.strip_prefix("http://").unwrap_or(api).trim_end_matches('/');
        let addr = addr.parse().with_context(|| format!("the load generator needs http://<ip>:<port>, not {api}"))?;
        Ok(Self { addr, authorization: format!("Bearer {api_key}") })
    }

    /// One request; `Ok(accepted notifications)` or the reason it failed.
    async fn post(&self, conn: &mut Conn, path: &str, body: &str) -> Result<u64, String> {
        let (status, answer) =
            conn.post(path, &self.authorization, body.as_bytes()).await.map_err(|e| e.to_string())?;
        match (path, status) {
            // One `"status":202` per accepted item (the nested notification's status is a string).
            (BATCH_PATH, 200) => Ok(count(answer, br#""status":202"#)),
            (SINGLE_PATH, 202) => Ok(1),
            _ => Err(format!("{status}: {}", String::from_utf8_lossy(&answer[..answer.len().min(300)]))),
        }
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

/// The stored subscribers the push share of the load goes to (`push-1` ...), each with one
/// device when the phases start (the bench writes them first).
pub const PUSH_AUDIENCE: u64 = 1_000;

/// One notification to one recipient on one channel; the channel turns with `i`, so the
/// six workers share the load. The push share goes to a stored subscriber with one device.
pub fn notification(kind: &str, i: u64, send_at: Option<&str>) -> String {
    let n = i % 10_000_000;
    let to = match i % 6 {
        0 => format!(r#"{{"email":"user{n}@example.com"}}"#),
        1 => format!(r#"{{"phone":"+1555{n:07}"}}"#),
        2 => format!(r#"{{"whatsapp":"+1556{n:07}"}}"#),
        3 => format!(r#"{{"subscriber_id":"subscriber-{n}"}}"#),
        4 => format!(r#"{{"slack_channel":"C{n:08}"}}"#),
        _ => format!(r#"{{"subscriber_id":"push-{}"}}"#, 1 + n % PUSH_AUDIENCE),
    };
    // A stored subscriber has a Novu address too (its id): the push share names its channel.
    let channels = if i % 6 == 5 { r#""channels":["push"],"# } else { "" };
    let send_at = send_at.map(|at| format!(r#","send_at":"{at}""#)).unwrap_or_default();
    format!(
        r#"{{"type":"{kind}","to":[{to}],{channels}"content":{{"subject":"Your order shipped","text":"It is on its way: order {i}.","title":"Your order shipped","body":"Order {i} is on its way."}},"data":{{"order":"{i}"}}{send_at}}}"#
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
    /// From the first request to the last answer (connections are opened before).
    pub elapsed: Duration,
    /// Per request, microseconds.
    pub latency: Histogram<u64>,
    /// Closed loop only: each request's number and when it was sent ([`clock_us`]).
    pub sent: Vec<(u64, u64)>,
    /// CPU seconds of the generator's thread over the phase.
    pub cpu_secs: f64,
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
            sent: Vec::new(),
            cpu_secs: 0.0,
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
        self.sent.extend(other.sent);
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

    /// The generator's CPU per request, in milliseconds.
    pub fn cpu_ms_per_request(&self) -> f64 {
        1000.0 * self.cpu_secs / (self.requests as f64).max(1.0)
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
    /// This JSON, as it is, to the single intake path.
    Fixed(&'static str),
}

/// Runs a load phase on a thread of its own; its CPU goes into the result.
async fn on_own_thread<F>(job: impl FnOnce() -> F + Send + 'static) -> anyhow::Result<LoadResult>
where
    F: Future<Output = LoadResult>,
{
    let (mut result, cpu) = threads::spawn("load-generator", job).await?.join().await;
    result.cpu_secs = cpu;
    Ok(result)
}

/// `concurrency` connections, each sending its next request as soon as the previous
/// answered.
pub async fn closed_loop(
    target: &Target,
    kind: &str,
    concurrency: usize,
    body: Body,
    stop: Stop,
    send_at: Option<String>,
) -> anyhow::Result<LoadResult> {
    let (target, kind) = (target.clone(), kind.to_owned());
    on_own_thread(move || async move {
        let mut conns: Vec<Conn> = (0..concurrency).map(|_| Conn::new(target.addr)).collect();
        for conn in &mut conns {
            // A connection that fails now is tried again by its first request, which reports it.
            let _ = conn.open().await;
        }
        let started = Instant::now();
        let next = Cell::new(0u64);
        let slots = conns.into_iter().map(|mut conn| {
            let (target, kind, next, send_at) = (&target, &kind, &next, send_at.as_deref());
            async move {
                let mut result = LoadResult::new();
                loop {
                    let i = next.replace(next.get() + 1);
                    match stop {
                        Stop::After(d) if started.elapsed() >= d => break,
                        Stop::Requests(n) if i >= n => break,
                        _ => {}
                    }
                    let (path, body) = match body {
                        Body::Single => (SINGLE_PATH, notification(kind, i, send_at)),
                        Body::Batch(size) => (BATCH_PATH, batch(kind, i * size, size, send_at)),
                        Body::Peer => (SINGLE_PATH, peer_notification(kind, i)),
                        Body::Fixed(json) => (SINGLE_PATH, json.to_owned()),
                    };
                    let sent = clock_us();
                    result.sent.push((i, sent));
                    let outcome = target.post(&mut conn, path, &body).await;
                    result.record(outcome, clock_us() - sent);
                }
                result
            }
        });
        let mut total = LoadResult::new();
        for result in join_all(slots).await {
            total.merge(result);
        }
        total.elapsed = started.elapsed();
        total
    })
    .await
}

/// Notifications started at `rate` per second for `duration`, `per_request` per request
/// (1: single requests, more: batches of that many), at most `max_in_flight` requests
/// outstanding (a request that would exceed it is counted as dropped), each on an idle
/// connection or a new one.
pub async fn open_loop(
    target: &Target,
    kind: &str,
    rate: f64,
    per_request: u64,
    duration: Duration,
    max_in_flight: usize,
) -> anyhow::Result<LoadResult> {
    let (target, kind) = (target.clone(), kind.to_owned());
    on_own_thread(move || async move {
        let target = Rc::new(target);
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let started = Instant::now();
                let shared = Rc::new(RefCell::new(LoadResult::new()));
                let idle: Rc<RefCell<Vec<Conn>>> = Rc::default();
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
                    let (path, body) = if per_request == 1 {
                        (SINGLE_PATH, notification(&kind, i, None))
                    } else {
                        (BATCH_PATH, batch(&kind, i * per_request, per_request, None))
                    };
                    let mut conn = idle.borrow_mut().pop().unwrap_or_else(|| Conn::new(target.addr));
                    let (target, shared, idle) = (target.clone(), shared.clone(), idle.clone());
                    tokio::task::spawn_local(async move {
                        let outcome = target.post(&mut conn, path, &body).await;
                        shared.borrow_mut().record(outcome, intended.elapsed().as_micros() as u64);
                        idle.borrow_mut().push(conn);
                        drop(permit);
                    });
                }
                let _all = permits.acquire_many(max_in_flight as u32).await.expect("never closed");
                let mut result = shared.replace(LoadResult::new());
                result.dropped = dropped;
                result.elapsed = started.elapsed();
                result
            })
            .await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_and_turn_channels() {
        let b: serde_json::Value = serde_json::from_str(&batch("bench.x", 0, 5, Some("2030-01-01T00:00:00Z"))).unwrap();
        let items = b["notifications"].as_array().unwrap();
        assert_eq!(items.len(), 5);
        let push: serde_json::Value = serde_json::from_str(&notification("bench.x", 1_001, None)).unwrap();
        assert_eq!(push["to"][0]["subscriber_id"], "push-2");
        assert_eq!(push["channels"], serde_json::json!(["push"]));
        assert_eq!(items[1]["to"][0]["phone"], "+15550000001");
        assert_eq!(items[3]["to"][0]["subscriber_id"], "subscriber-3");
        assert_eq!(items[4]["to"][0]["slack_channel"], "C00000004");
        assert_eq!(items[0]["send_at"], "2030-01-01T00:00:00Z");
        assert_eq!(count(br#"{"status":202,"x":{"status":"pending"}},{"status":202}"#, br#""status":202"#), 2);
    }

    #[tokio::test]
    async fn the_loops_send_what_they_are_asked() {
        use axum::{Router, http::StatusCode, routing::post};
        let app = Router::new().route(SINGLE_PATH, post(|| async { (StatusCode::ACCEPTED, "{}") }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::new(&format!("http://{}", listener.local_addr().unwrap()), "key").unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let closed = closed_loop(&target, "bench.x", 4, Body::Peer, Stop::Requests(100), None).await.unwrap();
        assert_eq!((closed.requests, closed.accepted, closed.errors), (100, 100, 0), "{:?}", closed.first_error);
        let mut numbers: Vec<u64> = closed.sent.iter().map(|(i, _)| *i).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (0..100).collect::<Vec<_>>());

        let open = open_loop(&target, "bench.x", 400.0, 1, Duration::from_millis(100), 8).await.unwrap();
        assert_eq!((open.requests, open.accepted + open.dropped), (open.accepted, 40));
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
