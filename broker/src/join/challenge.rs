//! Pending join challenges (AWS IAM, Azure, TPM credential activation,
//! bound-keypair signatures): single use, short-lived, bounded in number.
//!
//! `BeginJoin` needs no credential, so anyone who can reach the broker can fill
//! this table. The mistake it prevents: one global cap that refuses new
//! challenges once full, so a single flooding caller blocks every legitimate
//! challenge join for the challenge lifetime. Instead the table never refuses:
//!
//! - a peer (IPv4 address or IPv6 /64, see [`PeerKey`]) holds at most
//!   [`Limits::per_peer`] challenges; its next one replaces its own oldest;
//! - a join token has at most [`Limits::per_token`] pending; the next one
//!   replaces the token's oldest, so a flood naming one token spares the others;
//! - when the whole table is full, the oldest challenge of the peer holding the
//!   most is dropped, never one of a peer with fewer.
//!
//! A flooder therefore evicts its own challenges first; a legitimate caller's
//! challenge survives unless the flood comes from more peers than the table has
//! room for. Memory is bounded by `max_pending` entries.
//!
//! Kept in memory: a challenge must be answered on the replica that issued it.
//! With several replicas, BeginJoin and Join must reach the same one (docs/reference/server.md,
//! "Several replicas").

use sigil_core::peer::PeerKey;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// Most challenges pending at once (default).
pub const MAX_PENDING: usize = 10_000;
/// Most challenges one peer may have pending (default).
pub const MAX_PER_PEER: usize = 32;
/// Most challenges pending for one join token (default).
pub const MAX_PER_TOKEN: usize = 1_000;
/// Challenge lifetime, seconds.
pub const TTL_SECS: i64 = 60;

/// Bounds of the challenge table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most challenges pending at once.
    pub max_pending: usize,
    /// Most challenges pending per peer.
    pub per_peer: usize,
    /// Most challenges pending per join token.
    pub per_token: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_pending: MAX_PENDING, per_peer: MAX_PER_PEER, per_token: MAX_PER_TOKEN }
    }
}

/// A challenge handed to the agent.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Id the agent sends back.
    pub id: String,
    /// Method-specific challenge bytes.
    pub payload: Vec<u8>,
    /// Expiry.
    pub expires_at: i64,
}

/// What the broker remembers about a pending challenge.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Method.
    pub method: String,
    /// Join token name.
    pub token_name: String,
    /// Method-private state (expected answer, nonce ...). Never sent.
    pub state: Vec<u8>,
    /// Expiry.
    pub expires_at: i64,
}

/// The pending challenges.
#[derive(Debug, Default)]
pub struct Challenges {
    limits: Limits,
    inner: Mutex<Table>,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    peer: PeerKey,
    pending: Pending,
}

/// The table and its indexes; every entry is in all four.
#[derive(Debug, Default)]
struct Table {
    next_seq: u64,
    by_id: HashMap<String, Entry>,
    /// Insertion order (oldest first), hence also expiry order.
    order: BTreeMap<u64, String>,
    by_peer: HashMap<PeerKey, BTreeSet<u64>>,
    by_token: HashMap<String, BTreeSet<u64>>,
}

impl Table {
    fn remove(&mut self, id: &str) -> Option<Pending> {
        let e = self.by_id.remove(id)?;
        self.order.remove(&e.seq);
        drop_from(&mut self.by_peer, &e.peer, e.seq);
        drop_from(&mut self.by_token, &e.pending.token_name, e.seq);
        Some(e.pending)
    }

    fn remove_seq(&mut self, seq: u64) {
        if let Some(id) = self.order.get(&seq).cloned() {
            self.remove(&id);
        }
    }

    fn expire(&mut self, now: i64) {
        while let Some((_, id)) = self.order.first_key_value() {
            match self.by_id.get(id) {
                Some(e) if e.pending.expires_at > now => break,
                _ => {
                    let id = id.clone();
                    self.remove(&id);
                }
            }
        }
    }

    /// The challenge to drop when the table is full and `peer` inserts: its
    /// own oldest if it holds as many as anyone, else the oldest challenge of
    /// the peer holding the most (ties: the peer with the oldest challenge).
    fn victim_for(&self, peer: &PeerKey) -> Option<u64> {
        let largest = self.by_peer.values().map(BTreeSet::len).max()?;
        if let Some(own) = self.by_peer.get(peer).filter(|s| s.len() >= largest) {
            return own.first().copied();
        }
        self.by_peer
            .values()
            .filter(|s| s.len() == largest)
            .filter_map(|s| s.first().copied())
            .min()
    }
}

fn drop_from<K: std::hash::Hash + Eq + ?Sized, Q>(index: &mut HashMap<Q, BTreeSet<u64>>, key: &K, seq: u64)
where
    Q: std::borrow::Borrow<K> + std::hash::Hash + Eq,
{
    if let Some(s) = index.get_mut(key) {
        s.remove(&seq);
        if s.is_empty() {
            index.remove(key);
        }
    }
}

impl Challenges {
    /// A table with these bounds.
    pub fn new(limits: Limits) -> Self {
        Self { limits, inner: Mutex::default() }
    }

    /// Stores a challenge for `peer`, evicting as the module doc says. Fails
    /// only if the table's lock is poisoned.
    pub fn insert(&self, id: String, p: Pending, peer: PeerKey, now: i64) -> Result<(), String> {
        let mut t = self.inner.lock().map_err(|_| "challenge table poisoned".to_string())?;
        t.expire(now);
        let l = self.limits;
        if let Some(oldest) = t.by_peer.get(&peer).filter(|s| s.len() >= l.per_peer.max(1)).and_then(|s| s.first().copied()) {
            t.remove_seq(oldest);
        }
        if let Some(oldest) = t.by_token.get(&p.token_name).filter(|s| s.len() >= l.per_token.max(1)).and_then(|s| s.first().copied()) {
            t.remove_seq(oldest);
        }
        while t.by_id.len() >= l.max_pending.max(1) {
            match t.victim_for(&peer) {
                Some(seq) => t.remove_seq(seq),
                None => break,
            }
        }
        t.remove(&id);
        let seq = t.next_seq;
        t.next_seq += 1;
        t.order.insert(seq, id.clone());
        t.by_peer.entry(peer).or_default().insert(seq);
        t.by_token.entry(p.token_name.clone()).or_default().insert(seq);
        t.by_id.insert(id, Entry { seq, peer, pending: p });
        Ok(())
    }

    /// Takes a challenge out (single use). Expired ones are not returned.
    pub fn take(&self, id: &str, now: i64) -> Option<Pending> {
        let mut t = self.inner.lock().ok()?;
        t.remove(id).filter(|p| p.expires_at > now)
    }

    /// Number of pending challenges (expired ones included until the next insert).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|t| t.by_id.len()).unwrap_or(0)
    }

    /// Whether no challenge is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(token: &str, exp: i64) -> Pending {
        Pending { method: "m".into(), token_name: token.into(), state: vec![1], expires_at: exp }
    }

    fn peer(n: u8) -> PeerKey {
        PeerKey::V4([10, 0, 0, n])
    }

    fn small() -> Challenges {
        Challenges::new(Limits { max_pending: 10, per_peer: 4, per_token: 6 })
    }

    #[test]
    fn a_challenge_can_be_answered_once() {
        let c = Challenges::default();
        c.insert("a".into(), pending("t", 100), peer(1), 0).unwrap();
        assert!(c.take("a", 10).is_some());
        assert!(c.take("a", 10).is_none());
    }

    #[test]
    fn expired_challenges_are_not_returned() {
        let c = Challenges::default();
        c.insert("a".into(), pending("t", 100), peer(1), 0).unwrap();
        assert!(c.take("a", 100).is_none());
    }

    #[test]
    fn a_flooding_peer_evicts_only_its_own_oldest_challenges() {
        let c = small();
        c.insert("legit".into(), pending("t", 100), peer(9), 0).unwrap();
        for i in 0..1000 {
            c.insert(format!("f{i}"), pending("t", 100), peer(1), 0).unwrap();
        }
        assert_eq!(c.len(), 5, "the flooder keeps per_peer = 4");
        assert!(c.take("f999", 1).is_some() && c.take("f995", 1).is_none());
        assert!(c.take("legit", 1).is_some());
    }

    #[test]
    fn a_new_peer_is_never_refused_when_others_filled_the_table() {
        let c = small();
        for p in 1..=5u8 {
            for i in 0..2 {
                c.insert(format!("p{p}-{i}"), pending(&format!("t{p}"), 100), peer(p), 0).unwrap();
            }
        }
        // Peer 1 gets a third: full table, it evicts from itself (the largest).
        c.insert("p1-2".into(), pending("t1", 100), peer(1), 0).unwrap();
        assert_eq!(c.len(), 10);
        c.insert("newcomer".into(), pending("tx", 100), peer(42), 0).unwrap();
        assert!(c.take("newcomer", 1).is_some());
        assert_eq!(c.len(), 9, "one of peer 1's was evicted for the newcomer");
        assert!(c.take("p1-0", 1).is_none() && c.take("p1-1", 1).is_none());
        for p in 2..=5u8 {
            assert!(c.take(&format!("p{p}-0"), 1).is_some(), "peer {p} kept its challenges");
        }
    }

    #[test]
    fn a_flood_naming_one_token_spares_the_other_tokens() {
        let c = small();
        c.insert("other".into(), pending("b", 100), peer(9), 0).unwrap();
        for p in 1..=8u8 {
            c.insert(format!("f{p}"), pending("a", 100), peer(p), 0).unwrap();
        }
        assert!(c.take("other", 1).is_some());
        assert!(c.take("f1", 1).is_none() && c.take("f8", 1).is_some(), "token a keeps its newest 6");
    }

    #[test]
    fn expired_challenges_free_their_room() {
        let c = small();
        for i in 0..4 {
            c.insert(format!("a{i}"), pending("t", 10), peer(1), 0).unwrap();
        }
        c.insert("b".into(), pending("t", 100), peer(2), 20).unwrap();
        assert_eq!(c.len(), 1);
    }
}
