//! Posting one signed event to a tenant's webhook endpoint (docs/webhooks.md), and what
//! its answer means: 2xx sent, 410 gone (the endpoint is disabled), anything else (another
//! status, a redirect, no answer in time, a refused address) a failed attempt to retry,
//! after `Retry-After` when the receiver gave one.
//!
//! The URL is the tenant's, so the request must not reach our own networks: the host is
//! resolved when the request is made, by the resolver the client dials with
//! ([`crate::http::PublicResolver`], as for tenants' integrations), and refused when any of
//! its addresses is loopback, private, link-local (cloud metadata at 169.254.169.254
//! included), multicast or otherwise internal, IPv4-mapped IPv6 forms included; a literal
//! IP, which no resolver sees, is checked before. The operator may allow subnets
//! (`webhooks.allowed_subnets`) for tests and private deployments. Redirects are not
//! followed, and at most [`BODY_READ_MAX`] bytes of an answer are read.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use domain::webhook::{WebhookSecret, signature_header};
use ipnet::IpNet;
use reqwest::{Client, StatusCode, header::CONTENT_TYPE};

use crate::http::{PublicResolver, causes, private_host, reachable};

/// Bytes of an answer read at most; the rest is left unread.
pub const BODY_READ_MAX: usize = 64 * 1024;
/// Characters of an answer kept in the attempts log.
const EXCERPT_CHARS: usize = 1000;

/// One event to one endpoint, as it goes out.
pub struct Post<'a> {
    pub url: &'a str,
    /// `webhook-id`: the event's id, the same on every attempt.
    pub id: &'a str,
    /// The exact bytes sent and signed.
    pub body: &'a [u8],
    /// Every secret that signs (the current one, and the previous one during a rotation).
    pub secrets: &'a [&'a WebhookSecret],
}

/// What the endpoint did with one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The answer's status; `None` when none came.
    pub status: Option<u16>,
    pub verdict: Verdict,
    /// The start of the answer's body (lossy UTF-8), or what went wrong when none came.
    pub excerpt: Option<String>,
    pub latency: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx.
    Sent,
    /// 410: the receiver says the endpoint is gone for good.
    Gone,
    /// The host is ours to protect: refused before anything was sent.
    Refused,
    /// Anything else: try again, not before `retry_after` if the receiver said so.
    Retry { retry_after: Option<Duration> },
}

/// The client every webhook goes out through.
#[derive(Clone)]
pub struct EndpointClient {
    client: Client,
    allowed: Arc<[IpNet]>,
}

impl EndpointClient {
    /// `timeout` bounds each attempt, from connect to the end of the answer's head;
    /// `allowed` lists the internal subnets the operator lets endpoints reach.
    pub fn new(timeout: Duration, allowed: Vec<IpNet>) -> reqwest::Result<Self> {
        let client = Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(PublicResolver::allowing(allowed.clone()))
            .user_agent(concat!("notify-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, allowed: allowed.into() })
    }

    /// Signs `post` for this moment and sends it.
    pub async fn send(&self, post: &Post<'_>) -> Attempt {
        let started = Instant::now();
        let done = |status, verdict, excerpt| Attempt { status, verdict, excerpt, latency: started.elapsed() };
        let literal = reqwest::Url::parse(post.url).ok().and_then(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        if let Some(ip) = literal
            && !reachable(ip, &self.allowed)
        {
            return done(None, Verdict::Refused, Some(format!("{ip} is an internal address")));
        }
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let request = self
            .client
            .post(post.url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", post.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature_header(post.secrets, post.id, timestamp, post.body))
            .body(post.body.to_vec());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) if private_host(&e).is_some() => return done(None, Verdict::Refused, Some(causes(&e))),
            Err(e) => return done(None, Verdict::Retry { retry_after: None }, Some(causes(&e))),
        };
        let status = response.status();
        let retry_after = crate::http::retry_after(response.headers());
        let mut body = Vec::new();
        // A receiver that streams forever, or slowly, holds the attempt no longer than
        // the timeout, and no more than the cap is kept.
        while body.len() < BODY_READ_MAX {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(BODY_READ_MAX - body.len())]),
                Ok(None) | Err(_) => break,
            }
        }
        let excerpt = (!body.is_empty()).then(|| excerpt(&body));
        let verdict = match status {
            s if s.is_success() => Verdict::Sent,
            StatusCode::GONE => Verdict::Gone,
            _ => Verdict::Retry { retry_after },
        };
        done(Some(status.as_u16()), verdict, excerpt)
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.into_owned(),
    }
}

/// The `[webhooks]` settings, read by the API (which URLs it accepts) and the
/// webhook-worker (how it sends).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Accept `http://` endpoint URLs besides `https://`: for local receivers and private
    /// deployments.
    pub allow_http: bool,
    /// Internal subnets endpoints may reach (`["10.0.0.0/8"]`): none by default.
    pub allowed_subnets: Vec<IpNet>,
    /// An attempt without an answer in this time failed (and is retried).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The delays before the second attempt, the third, ... (the first goes at once).
    pub retry_schedule: Vec<humantime_serde::Serde<Duration>>,
    /// Each delay moves at random by up to this fraction of it.
    pub retry_jitter: f64,
    /// An endpoint whose every attempt failed for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// Messages of one endpoint a worker sends at once; as many again wait in the worker
    /// for a slot, and more in the outbox.
    pub endpoint_concurrency: u32,
    /// Messages per second a worker sends to one endpoint; none: no limit.
    pub endpoint_rate: Option<f64>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        let schedule = domain::webhook::RetrySchedule::default();
        Self {
            allow_http: false,
            allowed_subnets: Vec::new(),
            timeout: Duration::from_secs(15),
            retry_schedule: schedule.delays.into_iter().map(Into::into).collect(),
            retry_jitter: schedule.jitter,
            disable_after: Duration::from_secs(5 * 24 * 3600),
            endpoint_concurrency: 16,
            endpoint_rate: None,
        }
    }
}

impl WebhookSettings {
    pub fn url_rules(&self) -> domain::webhook::UrlRules {
        domain::webhook::UrlRules { allow_http: self.allow_http }
    }

    pub fn schedule(&self) -> domain::webhook::RetrySchedule {
        domain::webhook::RetrySchedule {
            delays: self.retry_schedule.iter().map(|d| **d).collect(),
            jitter: self.retry_jitter,
        }
    }

    /// The first problem, naming the setting (`webhooks.timeout`).
    pub fn validate(&self) -> Result<(), domain::FieldError> {
        let named = |e: domain::FieldError| domain::FieldError::new(format!("webhooks.{}", e.field), e.message);
        self.schedule().validate().map_err(named)?;
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(120) {
            return Err(domain::FieldError::new("webhooks.timeout", "must be above 0 and at most 2 minutes"));
        }
        if self.disable_after < Duration::from_secs(60) {
            return Err(domain::FieldError::new("webhooks.disable_after", "must be at least a minute"));
        }
        if self.endpoint_concurrency == 0 {
            return Err(domain::FieldError::new("webhooks.endpoint_concurrency", "must be at least 1"));
        }
        if self.endpoint_rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(domain::FieldError::new(
                "webhooks.endpoint_rate",
                "must be a number of messages per second above 0",
            ));
        }
        Ok(())
    }
}
