use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When to try a delivery again. Defaults are DESIGN.md §7: three retries after the first
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
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err("multiplier must be a number >= 1".into());
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err("jitter must be in [0, 1)".into());
        }
        if self.initial_delay > self.max_delay {
            return Err("initial_delay must not exceed max_delay".into());
        }
        Ok(())
    }

    /// Whether a retryable failure of attempt `attempt` (1-based) is tried again.
    pub fn allows_retry_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay before the attempt after `attempt`. `unit` is a uniform random number in
    /// [0, 1) that places the jitter. A provider's `Retry-After` is a floor, clamped to
    /// `max_delay` so a provider cannot park a delivery for days.
    pub fn delay_after(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let jittered = capped * (1.0 + self.jitter * (2.0 * unit - 1.0));
        let delay = Duration::from_secs_f64(jittered.max(0.0));
        match retry_after {
            Some(floor) => delay.max(floor.min(self.max_delay)),
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
    fn counts_attempts_including_the_first() {
        let p = RetryPolicy::default();
        assert!(p.allows_retry_after(3));
        assert!(!p.allows_retry_after(4));
    }
}
