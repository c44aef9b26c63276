//! Refused callers of the Workload API: remembered for a short time, and a
//! budget per uid of refusals the broker is asked for.
//!
//! Threat model: a local user whose processes match no workload identity made
//! every call a broker round trip, a broker audit row and an agent log line (2000
//! calls in 1.3 s: 2000 of each). So:
//! - a refusal is remembered per caller, i.e. per (uid, gid, executable path,
//!   SHA-256) and request kind (not per pid: every new process would be a new
//!   key), for [`DENY_TTL`] seconds; repeats are refused locally, logged at debug;
//! - each uid may cause [`UID_BURST`] broker refusals, regained at one per
//!   [`UID_REFILL`] seconds; a uid out of budget (one that keeps varying its
//!   executable) is told to retry later without asking the broker, until it has
//!   budget again. Its allowed, already cached callers are not affected.
//!
//! A rule change that grants a refused caller applies after at most
//! [`DENY_TTL`] seconds. Time is the session clock, in seconds, passed in.

use std::collections::HashMap;
use std::sync::Mutex;

/// Seconds a refusal is remembered.
pub const DENY_TTL: i64 = 10;
/// Broker refusals one uid may cause in a burst.
pub const UID_BURST: u32 = 10;
/// Seconds for a uid to regain one refusal of budget.
pub const UID_REFILL: i64 = 6;
/// Largest number of remembered refusals and uid budgets.
pub const CAPACITY: usize = 4096;

/// What to do with a request not served from the SVID cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ask the broker.
    Ask,
    /// This caller was refused less than [`DENY_TTL`] ago.
    Refused,
    /// The uid is out of refusal budget: retry after this many seconds.
    Throttled(i64),
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    left: u32,
    since: i64,
}

impl Budget {
    fn full(now: i64) -> Self {
        Self { left: UID_BURST, since: now }
    }

    /// Adds what was regained since `since`.
    fn refill(&mut self, now: i64) {
        let gained = (now - self.since).max(0) / UID_REFILL;
        if gained > 0 {
            self.left = self.left.saturating_add(u32::try_from(gained).unwrap_or(u32::MAX)).min(UID_BURST);
            self.since += gained * UID_REFILL;
        }
        if self.left == UID_BURST {
            self.since = now;
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    refused: HashMap<String, i64>,
    budgets: HashMap<u32, Budget>,
}

/// Remembered refusals and per-uid budgets.
#[derive(Debug, Default)]
pub struct Denials {
    inner: Mutex<Inner>,
}

impl Denials {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether to ask the broker for caller `key` of `uid` at `now`.
    pub fn check(&self, key: &str, uid: u32, now: i64) -> Verdict {
        let mut g = self.lock();
        if g.refused.get(key).is_some_and(|until| now < *until) {
            return Verdict::Refused;
        }
        match g.budgets.get_mut(&uid) {
            Some(b) => {
                b.refill(now);
                if b.left == 0 {
                    Verdict::Throttled(b.since + UID_REFILL - now)
                } else {
                    Verdict::Ask
                }
            }
            None => Verdict::Ask,
        }
    }

    /// Records that the broker refused caller `key` of `uid`; true when this
    /// used up the uid's budget (worth one log line).
    pub fn refused(&self, key: String, uid: u32, now: i64) -> bool {
        let mut g = self.lock();
        if g.refused.len() >= CAPACITY {
            g.refused.retain(|_, until| now < *until);
            if g.refused.len() >= CAPACITY {
                g.refused.clear();
            }
        }
        g.refused.insert(key, now + DENY_TTL);
        if g.budgets.len() >= CAPACITY && !g.budgets.contains_key(&uid) {
            g.budgets.retain(|_, b| {
                b.refill(now);
                b.left < UID_BURST
            });
            if g.budgets.len() >= CAPACITY {
                g.budgets.clear();
            }
        }
        let b = g.budgets.entry(uid).or_insert_with(|| Budget::full(now));
        b.refill(now);
        b.left = b.left.saturating_sub(1);
        b.left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_caller_is_remembered_for_the_ttl_only() {
        let d = Denials::default();
        assert_eq!(d.check("k", 7, 100), Verdict::Ask);
        d.refused("k".into(), 7, 100);
        assert_eq!(d.check("k", 7, 100 + DENY_TTL - 1), Verdict::Refused);
        assert_eq!(d.check("other", 7, 101), Verdict::Ask, "another binary of the uid is still asked about");
        assert_eq!(d.check("k", 7, 100 + DENY_TTL), Verdict::Ask);
    }

    #[test]
    fn a_uid_varying_its_binary_runs_out_of_budget_and_regains_it() {
        let d = Denials::default();
        let mut exhausted_at = None;
        for i in 0..UID_BURST {
            assert_eq!(d.check(&format!("copy{i}"), 7, 0), Verdict::Ask);
            if d.refused(format!("copy{i}"), 7, 0) {
                exhausted_at = Some(i);
            }
        }
        assert_eq!(exhausted_at, Some(UID_BURST - 1), "one log line, when the budget runs out");
        assert_eq!(d.check("copy-next", 7, 1), Verdict::Throttled(UID_REFILL - 1));
        assert_eq!(d.check("anything", 8, 1), Verdict::Ask, "other uids keep their budget");
        assert_eq!(d.check("copy-next", 7, UID_REFILL), Verdict::Ask, "one refusal regained");
        d.refused("copy-next".into(), 7, UID_REFILL);
        assert!(matches!(d.check("copy-last", 7, UID_REFILL), Verdict::Throttled(_)));
    }

    #[test]
    fn memory_stays_bounded() {
        let d = Denials::default();
        for i in 0..(CAPACITY * 3) {
            d.refused(format!("k{i}"), i as u32, 0);
        }
        let g = d.lock();
        assert!(g.refused.len() <= CAPACITY && g.budgets.len() <= CAPACITY, "{} {}", g.refused.len(), g.budgets.len());
    }
}
