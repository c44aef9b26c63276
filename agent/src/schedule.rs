//! When to renew: at half of the remaining lifetime measured from when the
//! credential arrived (NotBefore is backdated, so it would renew too early).

use std::time::Duration;

/// Shortest pause between two renewals of one credential, so a broker that hands
/// out tiny lifetimes cannot drive the agent into a busy loop.
pub const MIN_INTERVAL_SECS: i64 = 1;

/// The Unix time to renew a credential received at `received_at` that expires at `expires_at`.
pub fn renew_at(received_at: i64, expires_at: i64) -> i64 {
    let half = (expires_at - received_at) / 2;
    received_at + half.max(MIN_INTERVAL_SECS)
}

/// How long to wait from `now` until `at` (zero if past).
pub fn wait(now: i64, at: i64) -> Duration {
    Duration::from_secs(u64::try_from(at - now).unwrap_or(0))
}

/// A credential's lifetime facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// When it arrived.
    pub received_at: i64,
    /// NotAfter / exp.
    pub expires_at: i64,
}

impl Lifetime {
    /// When to renew it.
    pub fn renew_at(&self) -> i64 {
        renew_at(self.received_at, self.expires_at)
    }

    /// Whether it is still usable at `now`.
    pub fn valid_at(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_half_of_the_lifetime() {
        assert_eq!(renew_at(1000, 4600), 2800);
    }

    #[test]
    fn tiny_lifetimes_still_wait_a_minimum_interval() {
        assert_eq!(renew_at(1000, 1001), 1001);
        assert_eq!(renew_at(1000, 999), 1001);
    }

    #[test]
    fn waiting_for_the_past_is_immediate() {
        assert_eq!(wait(100, 50), Duration::ZERO);
        assert_eq!(wait(100, 160), Duration::from_secs(60));
    }

    #[test]
    fn lifetime_is_invalid_from_expiry_on() {
        let l = Lifetime { received_at: 0, expires_at: 10 };
        assert!(l.valid_at(9) && !l.valid_at(10));
        assert_eq!(l.renew_at(), 5);
    }
}
