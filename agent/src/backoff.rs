//! Bounded exponential backoff with jitter, so a fleet of agents does not retry
//! in lockstep and no agent retries in a tight loop.

use std::time::Duration;

/// Backoff state for one credential.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial`, never exceeding `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), attempt: 0 }
    }

    /// The next delay. `jitter` in [0, 1) picks a point in the upper half of the
    /// current window ("equal jitter"): at least half the base delay, at most all of it.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let base = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = jitter.clamp(0.0, 1.0);
        base / 2 + base.mul_f64(jitter) / 2
    }

    /// Failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Called after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniformly random number in [0, 1) from the system RNG (0.5 if it fails).
pub fn random_jitter() -> f64 {
    let mut b = [0u8; 4];
    match aws_lc_rs::rand::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_until_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let d: Vec<u64> = (0..6).map(|_| b.next_delay(0.999_999).as_millis() as u64).collect();
        assert_eq!(d.iter().map(|ms| (ms + 500) / 1000).collect::<Vec<_>>(), vec![1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn jitter_keeps_delay_within_half_and_full_window() {
        let mut lo = Backoff::new(Duration::from_secs(4), Duration::from_secs(60));
        let mut hi = lo.clone();
        assert_eq!(lo.next_delay(0.0), Duration::from_secs(2));
        assert!(hi.next_delay(0.99) <= Duration::from_secs(4));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..5 {
            b.next_delay(0.0);
        }
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(0.0), Duration::from_millis(500));
    }

    #[test]
    fn many_failures_never_overflow_or_exceed_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..10_000 {
            assert!(b.next_delay(0.7) <= Duration::from_secs(30));
        }
    }

    #[test]
    fn random_jitter_is_in_unit_interval() {
        for _ in 0..100 {
            let j = random_jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
