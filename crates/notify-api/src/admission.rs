//! Admission control: what one client may take of a replica (ARCHITECTURE.md, "the
//! admission limits"). Requests in flight are bounded (past the bound a `503` at once, not
//! a queue), each has a deadline, a connection has a deadline to send its headers
//! ([`crate::serve`]), API keys only the database knows are looked up a few at a time
//! with a short queue ([`crate::auth`]), and each subscriber has a request rate on the
//! inbox, taken before any database read ([`crate::inbox::token::authorize`]).

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::{error::ApiError, rate_limit::Rate};

/// `admission` in the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionSettings {
    /// How long a request may take before it is answered `503` (`timeout`). The upgraded
    /// inbox WebSockets are not requests: they are not bounded by it.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a connection may take to send a request's headers before it is closed.
    /// hyper's timer also runs while a keep-alive connection waits for its next request,
    /// so it is the idle keep-alive timeout too: behind a load balancer keep it above the
    /// balancer's idle timeout (60 s on AWS's ALB), or the balancer reuses connections the
    /// API is closing.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Requests this replica serves at once; past it, `503` (`overloaded`) with
    /// `Retry-After` at once. `/healthz` and `/readyz` are not counted.
    pub max_concurrent_requests: usize,
    /// API keys looked up in the database at once (keys neither cached nor known to be
    /// unknown); up to 4 requests per lookup wait up to a second for their turn, then
    /// `503` (`overloaded`), and past those a request is refused at once: a flood of
    /// made-up keys takes no more of the database's connections than this, and no more than
    /// 5 times this of `max_concurrent_requests`.
    pub key_lookups: usize,
    /// Each subscriber's rate of requests on `/v1/inbox` (its socket's connects included),
    /// on this replica; past it, `429` with `Retry-After`.
    pub inbox_rate: Rate,
    /// Each tenant's rate of `POST /v1/integrations/{channel}/{provider}/check` (each one
    /// calls the provider), on this replica; past it, `429` with `Retry-After`.
    pub check_rate: Rate,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            max_concurrent_requests: 512,
            key_lookups: 4,
            inbox_rate: Rate { per_second: 10, burst: 50 },
            check_rate: Rate { per_second: 1, burst: 10 },
        }
    }
}

impl AdmissionSettings {
    pub fn validate(&self) -> Result<(), bootstrap::ConfigError> {
        let invalid =
            |key: &str, message: &str| bootstrap::ConfigError::Invalid { key: key.into(), message: message.into() };
        if self.request_timeout < Duration::from_millis(10) {
            return Err(invalid("admission.request_timeout", "must be at least 10ms"));
        }
        if self.header_read_timeout < Duration::from_millis(10) {
            return Err(invalid("admission.header_read_timeout", "must be at least 10ms"));
        }
        if self.max_concurrent_requests == 0 {
            return Err(invalid("admission.max_concurrent_requests", "must be at least 1"));
        }
        if self.key_lookups == 0 {
            return Err(invalid("admission.key_lookups", "must be at least 1"));
        }
        if self.inbox_rate.per_second == 0 || self.inbox_rate.burst == 0 {
            return Err(invalid("admission.inbox_rate", "per_second and burst must be at least 1"));
        }
        if self.check_rate.per_second == 0 || self.check_rate.burst == 0 {
            return Err(invalid("admission.check_rate", "per_second and burst must be at least 1"));
        }
        Ok(())
    }
}

/// The middleware's share of the settings.
#[derive(Clone)]
pub struct Admission {
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
}

impl Admission {
    pub fn new(settings: &AdmissionSettings) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            request_timeout: settings.request_timeout,
        }
    }
}

/// The probes answer whatever the load: an orchestrator must not restart a replica for
/// being busy.
fn exempt(request: &Request) -> bool {
    matches!(request.uri().path(), "/healthz" | "/readyz")
}

/// Middleware: refuses a request past `max_concurrent_requests`, and answers one that
/// outlives `request_timeout` (dropping its work: a transaction not committed rolls back,
/// an accept that committed is found again by its `Idempotency-Key`).
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    if exempt(&request) {
        return next.run(request).await;
    }
    let Ok(_permit) = admission.in_flight.try_acquire() else {
        return ApiError::Overloaded("this replica is serving as many requests as it takes").into_response();
    };
    match tokio::time::timeout(admission.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::TimedOut(admission.request_timeout).into_response(),
    }
}
