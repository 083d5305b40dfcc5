//! When a call is tried again: `429` and `503` (the API's rate limit, its admission
//! limits, a database it cannot reach) and connection errors, after `Retry-After` when the
//! API gives one, else after a jittered exponential backoff; at most `attempts` tries.

use std::time::Duration;

use rand::Rng;
use reqwest::{StatusCode, header::HeaderMap};

/// How often and how long to try a call again.
#[derive(Clone, Copy, Debug)]
pub struct Retries {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first backoff; each next one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Self { attempts: 5, first_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10) }
    }
}

impl Retries {
    pub(crate) fn backoff(self) -> Backoff {
        Backoff { retries: self, tried: 1 }
    }
}

/// The longest `Retry-After` waited for: the API's own are seconds (its rate limits and
/// admission); a longer one is not waited out inside a call.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

pub(crate) struct Backoff {
    retries: Retries,
    tried: u32,
}

impl Backoff {
    /// How long to wait before the next try (`after`, the API's `Retry-After`, up to
    /// [`MAX_RETRY_AFTER`]), or `None` when the tries are spent.
    pub(crate) fn next(&mut self, after: Option<Duration>) -> Option<Duration> {
        if self.tried >= self.retries.attempts {
            return None;
        }
        let exponential = self.retries.first_delay.saturating_mul(1 << (self.tried - 1).min(16));
        self.tried += 1;
        Some(match after {
            Some(after) => after.min(MAX_RETRY_AFTER),
            None => {
                // Equal jitter (half fixed, half random), so clients refused together come back apart.
                let ceiling = exponential.min(self.retries.max_delay);
                ceiling / 2 + ceiling.mul_f64(rand::rng().random_range(0.0..0.5))
            }
        })
    }
}

pub(crate) fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// `Retry-After` in seconds (the form the API sends).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_is_capped_honours_retry_after_and_ends() {
        let retries =
            Retries { attempts: 4, first_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        let mut backoff = retries.backoff();
        let first = backoff.next(None).unwrap();
        assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first), "{first:?}");
        assert_eq!(
            backoff.next(Some(Duration::from_secs(30))),
            Some(Duration::from_secs(30)),
            "Retry-After is honoured"
        );
        let third = backoff.next(None).unwrap();
        assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third), "{third:?}");
        assert_eq!(backoff.next(None), None, "four tries in all");
        let mut backoff = retries.backoff();
        assert_eq!(backoff.next(Some(Duration::from_secs(3600))), Some(MAX_RETRY_AFTER), "up to a minute");

        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        assert!(is_retryable(StatusCode::TOO_MANY_REQUESTS) && !is_retryable(StatusCode::UNPROCESSABLE_ENTITY));
    }
}
