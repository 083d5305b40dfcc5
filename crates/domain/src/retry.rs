use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// The longest delay a policy may set between two attempts: a type's override cannot park
/// a delivery for longer, and no computed instant can overflow.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most attempts a policy may allow, the first included.
pub const MAX_ATTEMPTS: u32 = 25;

/// When to try a delivery again. Defaults are docs/contract.md §6.5: three retries after the first
/// attempt, 60 s initial delay, x2, 30 min cap, +/-20 % jitter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    pub multiplier: f64,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Fraction of the delay added or removed at random, so retries of a burst spread out.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_delay: Duration::from_secs(60),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30 * 60),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The first problem, naming the field within the policy (`max_delay`).
    pub fn validate(&self) -> Result<(), FieldError> {
        let days = MAX_RETRY_DELAY.as_secs() / 86_400;
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(FieldError::new("max_attempts", format!("must be 1 to {MAX_ATTEMPTS}")));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(FieldError::new("multiplier", "must be a number >= 1"));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(FieldError::new("jitter", "must be in [0, 1)"));
        }
        if self.max_delay > MAX_RETRY_DELAY {
            return Err(FieldError::new("max_delay", format!("must be at most {days} days")));
        }
        if self.initial_delay > self.max_delay {
            return Err(FieldError::new("initial_delay", "must not exceed max_delay"));
        }
        Ok(())
    }

    /// Whether a retryable failure of attempt `attempt` (1-based) is tried again.
    pub fn allows_retry_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay before the attempt after `attempt`. `unit` is a uniform random number in
    /// [0, 1) that places the jitter. A provider's `Retry-After` is a floor, clamped to
    /// `max_delay` so a provider cannot park a delivery for days. Never more than
    /// [`MAX_RETRY_DELAY`], whatever the policy: one stored before the bound existed (a
    /// notification keeps its type's policy) must not panic the worker.
    pub fn delay_after(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let max_delay = self.max_delay.min(MAX_RETRY_DELAY);
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(max_delay.as_secs_f64());
        let jittered = capped * (1.0 + self.jitter * (2.0 * unit - 1.0));
        // NaN (a policy that never passed `validate`) and out-of-range values fall to the bounds.
        let delay = Duration::try_from_secs_f64(jittered.max(0.0)).unwrap_or(max_delay).min(MAX_RETRY_DELAY);
        match retry_after {
            Some(floor) => delay.max(floor.min(max_delay)),
            None => delay,
        }
    }

    pub fn delay_with_random_jitter(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_after(attempt, retry_after, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_within_the_jitter_band_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_after(1, None, 0.5), Duration::from_secs(60));
        assert_eq!(p.delay_after(2, None, 0.5), Duration::from_secs(120));
        assert_eq!(p.delay_after(3, None, 0.0), Duration::from_secs_f64(240.0 * 0.8));
        assert_eq!(p.delay_after(20, None, 0.5), Duration::from_secs(1800));
        let high = p.delay_after(1, None, 0.999_999);
        assert!(high > Duration::from_secs(71) && high <= Duration::from_secs(72));
    }

    #[test]
    fn retry_after_is_a_floor_clamped_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_after(1, Some(Duration::from_secs(300)), 0.5), Duration::from_secs(300));
        assert_eq!(p.delay_after(1, Some(Duration::from_secs(5)), 0.5), Duration::from_secs(60));
        assert_eq!(p.delay_after(1, Some(Duration::from_secs(86_400)), 0.5), Duration::from_secs(1800));
    }

    #[test]
    fn a_huge_delay_is_clamped_and_never_panics() {
        // As a policy stored before the bound could hold it: never validated.
        let huge = RetryPolicy {
            initial_delay: Duration::MAX,
            max_delay: Duration::MAX,
            multiplier: f64::MAX,
            ..RetryPolicy::default()
        };
        assert!(huge.validate().is_err());
        for attempt in [1, 2, 64, u32::MAX] {
            assert_eq!(huge.delay_after(attempt, None, 0.999), MAX_RETRY_DELAY);
            assert_eq!(huge.delay_after(attempt, Some(Duration::MAX), 0.0), MAX_RETRY_DELAY);
        }
        let nan = RetryPolicy { multiplier: f64::NAN, jitter: f64::NAN, ..RetryPolicy::default() };
        assert!(nan.delay_with_random_jitter(2, None) <= MAX_RETRY_DELAY);
    }

    #[test]
    fn validate_names_the_field_and_bounds_delays_and_attempts() {
        let field = |p: RetryPolicy| p.validate().unwrap_err().field;
        let days = |d: u64| Duration::from_secs(d * 86_400);
        assert_eq!(field(RetryPolicy { max_delay: days(8), ..Default::default() }), "max_delay");
        assert_eq!(
            field(RetryPolicy { initial_delay: days(2), max_delay: days(1), ..Default::default() }),
            "initial_delay"
        );
        assert_eq!(field(RetryPolicy { max_attempts: 26, ..Default::default() }), "max_attempts");
        assert_eq!(field(RetryPolicy { max_attempts: 0, ..Default::default() }), "max_attempts");
        assert!(RetryPolicy { max_delay: days(7), max_attempts: 25, ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn counts_attempts_including_the_first() {
        let p = RetryPolicy::default();
        assert!(p.allows_retry_after(3));
        assert!(!p.allows_retry_after(4));
    }
}
