//! SVIDs issued for workloads, keyed by the caller's attributes (and audiences
//! for JWTs), so concurrent calls and streams of one workload share one issuance.
//! Bounded: when full, entries nobody is waiting on are dropped.

use crate::schedule::Lifetime;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest number of cached keys.
pub const CAPACITY: usize = 1024;

/// One cached value.
#[derive(Debug)]
pub struct Entry<V> {
    /// The SVIDs.
    pub value: Arc<V>,
    /// Lifetime of the earliest-expiring SVID in `value`.
    pub life: Lifetime,
    /// Rotation epoch it was issued in (a newer epoch forces re-issue).
    pub epoch: u64,
    /// After a failed re-issue: no new attempt before this time.
    pub next_try: i64,
    /// Consecutive failed re-issues.
    pub failures: u32,
}

/// A slot: one async lock per key so one issuance runs at a time per workload.
pub type Slot<V> = Arc<tokio::sync::Mutex<Option<Entry<V>>>>;

/// The cache.
#[derive(Debug)]
pub struct Cache<V> {
    slots: std::sync::Mutex<HashMap<String, Slot<V>>>,
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Self { slots: std::sync::Mutex::new(HashMap::new()) }
    }
}

impl<V> Cache<V> {
    /// The slot of `key`, created if needed.
    pub fn slot(&self, key: &str) -> Slot<V> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(key) {
            return s.clone();
        }
        if slots.len() >= CAPACITY {
            // Only the map holds these: nobody is using them right now.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let s: Slot<V> = Arc::default();
        slots.insert(key.to_string(), s.clone());
        s
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_shares_a_slot() {
        let c: Cache<u8> = Cache::default();
        assert!(Arc::ptr_eq(&c.slot("a"), &c.slot("a")));
    }

    #[test]
    fn cache_stays_bounded_and_keeps_slots_in_use() {
        let c: Cache<u8> = Cache::default();
        let held = c.slot("held");
        for i in 0..(CAPACITY * 3) {
            c.slot(&format!("k{i}"));
        }
        assert!(c.len() <= CAPACITY);
        assert!(Arc::ptr_eq(&held, &c.slot("held")));
    }
}
