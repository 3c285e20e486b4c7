//! How long to wait before trying again: exponential backoff with full jitter.
//!
//! One policy serves both the per-event retries of a failing key and the
//! relay-wide pause while a broker is unreachable.

use std::time::Duration;

/// Exponential backoff: the n-th retry waits a random time between half and all
/// of `initial * multiplier^(n-1)`, capped at `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The base delay before the first retry.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The growth factor between attempts.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1 for the first retry).
    ///
    /// The jitter keeps many keys that failed together from retrying in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        ceiling.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// The delay before retry `attempt` without jitter: the upper bound.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(2), Duration::from_millis(200));
        assert_eq!(policy.ceiling(4), Duration::from_millis(800));
        assert_eq!(policy.ceiling(30), Duration::from_secs(30));
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_half_and_all_of_the_ceiling() {
        let policy = RetryPolicy::default();
        for attempt in 1..12 {
            let ceiling = policy.ceiling(attempt);
            for _ in 0..100 {
                let d = policy.delay(attempt);
                assert!(d <= ceiling && d >= ceiling / 2, "{attempt}: {d:?}");
            }
        }
    }
}
