//! Rate limit for audit events that unauthenticated callers cause (refused
//! `Join` and `BeginJoin`). Without it anyone reaching the port writes one row
//! per request, as fast as the broker answers.
//!
//! Each peer ([`PeerKey`]) has a token bucket: `burst` events are recorded as
//! they come, then one per `refill_secs`. All peers together share a second
//! bucket (`global_burst`, `global_per_sec`), so many addresses do not multiply
//! the rate. Events beyond either are counted, not dropped silently: once a
//! peer has suppressed events and `summary_secs` have passed since the first,
//! [`Throttle::due`] hands back one summary per peer ("N refusals from X between
//! T0 and T1, by kind"), which the audit log records as one row. Memory: at
//! most `max_peers` peers are tracked; beyond that, new peers share one
//! [`PeerKey::Local`]-free overflow entry.
//!
//! Pure: time comes in as an argument.

use sigil_core::peer::PeerKey;
use std::collections::{BTreeMap, HashMap};

/// Limits of the throttle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Events one peer may cause at once.
    pub burst: f64,
    /// Seconds for one peer to earn one more event.
    pub refill_secs: f64,
    /// Events all peers together may cause at once.
    pub global_burst: f64,
    /// Events per second all peers together may cause, sustained.
    pub global_per_sec: f64,
    /// Seconds between summaries of a peer's suppressed events.
    pub summary_secs: i64,
    /// Peers tracked at once.
    pub max_peers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { burst: 10.0, refill_secs: 60.0, global_burst: 100.0, global_per_sec: 5.0, summary_secs: 60, max_peers: 10_000 }
    }
}

/// One peer's suppressed events, to be recorded as one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The peer (`None`: the overflow entry, peers beyond `max_peers`).
    pub peer: Option<PeerKey>,
    /// How many events were suppressed.
    pub count: u64,
    /// First suppressed event.
    pub from: i64,
    /// Last suppressed event.
    pub to: i64,
    /// Count per event kind.
    pub kinds: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: i64,
}

impl Bucket {
    fn full(capacity: f64, now: i64) -> Self {
        Self { tokens: capacity, at: now }
    }

    fn take(&mut self, now: i64, capacity: f64, per_sec: f64) -> bool {
        let elapsed = (now - self.at).max(0) as f64;
        self.tokens = (self.tokens + elapsed * per_sec).min(capacity);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct Suppressed {
    count: u64,
    from: i64,
    to: i64,
    kinds: BTreeMap<String, u64>,
}

/// The throttle state.
#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    global: Bucket,
    peers: HashMap<Option<PeerKey>, (Bucket, Suppressed)>,
}

impl Throttle {
    /// A throttle with full buckets at `now`.
    pub fn new(limits: Limits, now: i64) -> Self {
        Self { limits, global: Bucket::full(limits.global_burst, now), peers: HashMap::new() }
    }

    /// Whether to record an event of `kind` caused by `peer` now; if not, it
    /// is counted toward the peer's next summary.
    pub fn admit(&mut self, peer: PeerKey, kind: &str, now: i64) -> bool {
        let l = self.limits;
        let key = if self.peers.contains_key(&Some(peer)) || self.peers.len() < l.max_peers { Some(peer) } else { None };
        let (bucket, suppressed) = self.peers.entry(key).or_insert_with(|| (Bucket::full(l.burst, now), Suppressed::default()));
        let per_peer = bucket.take(now, l.burst, 1.0 / l.refill_secs.max(0.001));
        if per_peer && self.global.take(now, l.global_burst, l.global_per_sec) {
            return true;
        }
        if suppressed.count == 0 {
            suppressed.from = now;
        }
        suppressed.count += 1;
        suppressed.to = now;
        *suppressed.kinds.entry(kind.to_string()).or_default() += 1;
        false
    }

    /// Summaries of peers whose first suppressed event is `summary_secs` old;
    /// also forgets peers with nothing pending and a full bucket again.
    pub fn due(&mut self, now: i64) -> Vec<Summary> {
        let l = self.limits;
        let mut out = Vec::new();
        self.peers.retain(|peer, (bucket, s)| {
            if s.count > 0 && now - s.from >= l.summary_secs {
                let s = std::mem::take(s);
                out.push(Summary { peer: *peer, count: s.count, from: s.from, to: s.to, kinds: s.kinds });
            }
            let refilled = bucket.tokens + (now - bucket.at).max(0) as f64 / l.refill_secs.max(0.001) >= l.burst;
            s.count > 0 || !refilled
        });
        out.sort_by_key(|s| (s.from, s.peer));
        out
    }

    /// Summaries of every peer with suppressed events, due or not (shutdown).
    pub fn drain(&mut self) -> Vec<Summary> {
        let far = self.peers.values().map(|(_, s)| s.from).max().unwrap_or(0) + self.limits.summary_secs;
        self.due(far)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerKey {
        PeerKey::V4([10, 0, 0, n])
    }

    fn limits() -> Limits {
        Limits { burst: 3.0, refill_secs: 10.0, global_burst: 5.0, global_per_sec: 1.0, summary_secs: 60, max_peers: 4 }
    }

    #[test]
    fn a_flooding_peer_gets_its_burst_then_one_summary() {
        let mut t = Throttle::new(limits(), 0);
        let recorded = (0..1000).filter(|_| t.admit(peer(1), "join", 1)).count();
        assert_eq!(recorded, 3);
        assert!(t.due(30).is_empty(), "not yet due");
        let s = t.due(61);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].peer, s[0].count, s[0].kinds["join"]), (Some(peer(1)), 997, 997));
        assert!(t.due(200).is_empty(), "counted once");
    }

    #[test]
    fn a_quiet_peer_keeps_its_burst_while_another_floods() {
        let mut t = Throttle::new(limits(), 0);
        for _ in 0..100 {
            t.admit(peer(1), "join", 0);
        }
        // The global bucket (5) had 3 taken by peer 1: two left for peer 2.
        assert!(t.admit(peer(2), "join.begin", 0));
        assert!(t.admit(peer(2), "join.begin", 0));
        assert!(!t.admit(peer(2), "join.begin", 0), "the global bucket bounds all peers together");
        assert!(t.admit(peer(3), "join.begin", 2), "refilled at global_per_sec");
    }

    #[test]
    fn peers_beyond_the_tracked_number_share_one_entry() {
        let mut t = Throttle::new(Limits { global_burst: 1e9, global_per_sec: 1e9, ..limits() }, 0);
        for n in 0..50u8 {
            for _ in 0..5 {
                t.admit(peer(n), "join", 0);
            }
        }
        let s = t.drain();
        assert_eq!(s.len(), 5, "4 tracked peers + the overflow entry");
        assert!(s.iter().any(|s| s.peer.is_none()));
    }
}
