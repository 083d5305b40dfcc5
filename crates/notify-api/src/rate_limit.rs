//! Per-tenant intake rate: a token bucket per tenant, in this process. With several API
//! replicas each enforces the rate on its own share of the traffic, so the tenant's rate
//! across the fleet is at most replicas x the configured rate (ARCHITECTURE.md). The same
//! buckets, one per subscriber, bound the inbox's requests (`admission.inbox_rate`).

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;
use uuid::Uuid;

use crate::{auth::Authenticated, error::ApiError};

/// Notifications per second, and how many may come at once after a quiet spell.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for Rate {
    fn default() -> Self {
        Self { per_second: 1_000, burst: 2_000 }
    }
}

/// What a request learns about its tenant's bucket; sent as `RateLimit-*` headers.
#[derive(Clone, Copy, Debug)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

#[derive(Debug)]
pub enum Decision {
    Allowed(Quota),
    Limited { quota: Quota, retry_after: u64 },
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by tenant (the intake), or by anything else that has a rate of its own.
pub struct RateLimiter<K = Uuid> {
    buckets: Mutex<Buckets<K>>,
}

struct Buckets<K> {
    by_key: HashMap<K, Bucket>,
    /// How many buckets there may be before the full ones are dropped (a full bucket is
    /// the same as none): twice what was left after the last drop, so it costs little per
    /// take however many keys come and go (subscribers).
    prune_at: usize,
}

const PRUNE_AT_LEAST: usize = 1_024;

impl<K> Default for RateLimiter<K> {
    fn default() -> Self {
        Self { buckets: Mutex::new(Buckets { by_key: HashMap::new(), prune_at: PRUNE_AT_LEAST }) }
    }
}

impl RateLimiter {
    /// Takes `count` notifications from the caller's tenant's bucket, at the tenant's own
    /// rate or else `default`; a refusal is the API's `429`.
    pub fn take_for(&self, caller: &Authenticated, default: Rate, count: u32) -> Result<Quota, ApiError> {
        let rate = caller.0.rate_limit.map(|(per_second, burst)| Rate { per_second, burst }).unwrap_or(default);
        match self.take(caller.0.tenant_id, rate, count) {
            Decision::Allowed(quota) => Ok(quota),
            Decision::Limited { quota, retry_after } => Err(ApiError::RateLimited { quota, retry_after }),
        }
    }
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// Takes `cost` tokens (notifications) from the key's bucket. A cost above the burst
    /// (a large batch) is allowed once the bucket holds a full burst, leaving it in debt, so
    /// a batch is never refused for its size alone.
    pub fn take(&self, key: K, rate: Rate, cost: u32) -> Decision {
        self.take_at(key, rate, cost, Instant::now())
    }

    fn take_at(&self, key: K, rate: Rate, cost: u32, now: Instant) -> Decision {
        let per_second = f64::from(rate.per_second.max(1));
        let burst = f64::from(rate.burst.max(1));
        let mut buckets = self.buckets.lock().expect("the rate limiter lock is never poisoned");
        if buckets.by_key.len() >= buckets.prune_at {
            // Full by now: refilled for longer than a whole burst takes.
            let refill = Duration::from_secs_f64(burst / per_second);
            buckets.by_key.retain(|_, b| now.saturating_duration_since(b.at) < refill);
            buckets.prune_at = (2 * buckets.by_key.len()).max(PRUNE_AT_LEAST);
        }
        let bucket = buckets.by_key.entry(key).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = now;
        let needed = f64::from(cost).min(burst);
        let quota = |tokens: f64| Quota {
            limit: rate.burst,
            remaining: tokens.max(0.0).floor() as u32,
            reset: ((burst - tokens) / per_second).ceil().max(0.0) as u64,
        };
        if bucket.tokens >= needed {
            bucket.tokens -= f64::from(cost);
            Decision::Allowed(quota(bucket.tokens))
        } else {
            let wait = Duration::from_secs_f64((needed - bucket.tokens) / per_second);
            Decision::Limited { quota: quota(bucket.tokens), retry_after: wait.as_secs_f64().ceil().max(1.0) as u64 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_burst_and_refills_at_the_rate() {
        let limiter = RateLimiter::default();
        let (tenant, rate, t0) = (Uuid::now_v7(), Rate { per_second: 2, burst: 2 }, Instant::now());
        assert!(matches!(limiter.take_at(tenant, rate, 1, t0), Decision::Allowed(q) if q.remaining == 1));
        assert!(matches!(limiter.take_at(tenant, rate, 1, t0), Decision::Allowed(q) if q.remaining == 0));
        assert!(matches!(limiter.take_at(tenant, rate, 1, t0), Decision::Limited { retry_after: 1, .. }));
        let later = t0 + Duration::from_millis(500);
        assert!(matches!(limiter.take_at(tenant, rate, 1, later), Decision::Allowed(_)));
        // Another tenant has its own bucket.
        assert!(matches!(limiter.take_at(Uuid::now_v7(), rate, 1, t0), Decision::Allowed(_)));
    }

    #[test]
    fn buckets_of_keys_gone_quiet_are_dropped() {
        let limiter = RateLimiter::<u32>::default();
        let (rate, t0) = (Rate { per_second: 1, burst: 1 }, Instant::now());
        for key in 0..PRUNE_AT_LEAST as u32 {
            limiter.take_at(key, rate, 1, t0);
        }
        let later = t0 + Duration::from_secs(2);
        assert!(matches!(limiter.take_at(0, rate, 1, later), Decision::Allowed(_)));
        assert_eq!(limiter.buckets.lock().unwrap().by_key.len(), 1, "only the bucket just taken from is left");
        assert!(matches!(limiter.take_at(0, rate, 1, later), Decision::Limited { .. }), "and it remembers");
    }

    #[test]
    fn a_batch_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_debt() {
        let limiter = RateLimiter::default();
        let (tenant, rate, t0) = (Uuid::now_v7(), Rate { per_second: 10, burst: 10 }, Instant::now());
        assert!(matches!(limiter.take_at(tenant, rate, 30, t0), Decision::Allowed(q) if q.remaining == 0));
        assert!(matches!(limiter.take_at(tenant, rate, 1, t0 + Duration::from_secs(1)), Decision::Limited { .. }));
        assert!(matches!(limiter.take_at(tenant, rate, 1, t0 + Duration::from_secs(3)), Decision::Allowed(_)));
    }
}
