//! The open connections of the broker port, counted for admission.
//!
//! A connection is admitted at accept if the total and its peer's count allow
//! it. It is *anonymous* until its TLS handshake shows a client certificate
//! (then *identified*). Anonymous connections may take only `Effective::anonymous`
//! slots, keeping headroom for admins and bots. When that share is full, a new
//! anonymous connection evicts an idle anonymous one of the peer holding the
//! most (if that peer holds more than the newcomer), so a flood from a few peers
//! cannot lock out a new peer's join or health check. Plain data and a mutex:
//! no I/O here; the accept loop acts on the answers.

use super::limits::Effective;
use crate::peer::PeerKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The port holds its most connections.
    #[error("connection limit reached")]
    Total,
    /// This peer holds its most connections.
    #[error("per-peer connection limit reached")]
    Peer,
    /// The share of connections without a client certificate is full and no
    /// idle one could be evicted.
    #[error("limit of connections without a client certificate reached")]
    Anonymous,
}

/// What a connection's task watches: requests in flight, when the last one
/// ended, and a request to close.
#[derive(Debug)]
pub struct Activity {
    /// Requests being served.
    pub in_flight: AtomicUsize,
    /// Notified when the connection should close (evicted).
    pub close: Notify,
    opened: Instant,
    /// Milliseconds after `opened` when a request last ended.
    last_done_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self { in_flight: AtomicUsize::new(0), close: Notify::new(), opened: Instant::now(), last_done_ms: AtomicU64::new(0) }
    }
}

impl Activity {
    /// Records that a request ended now.
    pub fn mark_done(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_done_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// Since when the connection has had nothing to do (if nothing is in flight).
    pub fn quiet_since(&self) -> Instant {
        self.opened + std::time::Duration::from_millis(self.last_done_ms.load(Ordering::SeqCst))
    }
}

#[derive(Debug)]
struct Conn {
    peer: PeerKey,
    anonymous: bool,
    activity: Arc<Activity>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    per_peer: HashMap<PeerKey, usize>,
    anonymous: usize,
    anonymous_per_peer: HashMap<PeerKey, usize>,
}

/// The registry of open connections.
#[derive(Debug)]
pub struct Connections {
    limits: Effective,
    state: Mutex<State>,
}

/// An admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    peer: PeerKey,
    registry: Arc<Connections>,
    /// The connection's activity.
    pub activity: Arc<Activity>,
}

fn dec(map: &mut HashMap<PeerKey, usize>, peer: &PeerKey) {
    if let Some(n) = map.get_mut(peer) {
        *n -= 1;
        if *n == 0 {
            map.remove(peer);
        }
    }
}

impl Connections {
    /// A registry enforcing `limits`.
    pub fn new(limits: Effective) -> Arc<Self> {
        Arc::new(Self { limits, state: Mutex::default() })
    }

    /// The limits in force.
    pub fn limits(&self) -> Effective {
        self.limits
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.state.lock().map(|s| s.conns.len()).unwrap_or(0)
    }

    /// Admits a new connection from `peer` (at accept, before TLS). It counts
    /// as anonymous until [`Slot::identified`]: a connection stalled in its
    /// handshake is as evictable as an idle anonymous one. When the anonymous
    /// share is full, an idle anonymous connection is closed to make room (see
    /// the module doc); if none can be, the newcomer is refused.
    pub fn admit(self: &Arc<Self>, peer: PeerKey) -> Result<Slot, Refused> {
        let mut s = self.state.lock().map_err(|_| Refused::Total)?;
        if s.conns.len() >= self.limits.total {
            return Err(Refused::Total);
        }
        if s.per_peer.get(&peer).copied().unwrap_or(0) >= self.limits.per_peer {
            return Err(Refused::Peer);
        }
        if s.anonymous >= self.limits.anonymous {
            let mine = s.anonymous_per_peer.get(&peer).copied().unwrap_or(0);
            let victim = evictable(&s, peer, mine).ok_or(Refused::Anonymous)?;
            let c = s.conns.get_mut(&victim).ok_or(Refused::Anonymous)?;
            // The victim stops counting as anonymous now; its task closes it.
            c.anonymous = false;
            let (victim_peer, activity) = (c.peer, c.activity.clone());
            s.anonymous -= 1;
            dec(&mut s.anonymous_per_peer, &victim_peer);
            activity.close.notify_one();
        }
        let id = s.next_id;
        s.next_id += 1;
        let activity = Arc::new(Activity::default());
        s.conns.insert(id, Conn { peer, anonymous: true, activity: activity.clone() });
        *s.per_peer.entry(peer).or_default() += 1;
        s.anonymous += 1;
        *s.anonymous_per_peer.entry(peer).or_default() += 1;
        Ok(Slot { id, peer, registry: self.clone(), activity })
    }

    fn identified(&self, slot: &Slot) {
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(c) = s.conns.get_mut(&slot.id).filter(|c| c.anonymous) {
            c.anonymous = false;
            s.anonymous -= 1;
            dec(&mut s.anonymous_per_peer, &slot.peer);
        }
    }

    fn release(&self, slot: &Slot) {
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(c) = s.conns.remove(&slot.id) {
            dec(&mut s.per_peer, &c.peer);
            if c.anonymous {
                s.anonymous -= 1;
                dec(&mut s.anonymous_per_peer, &c.peer);
            }
        }
    }
}

/// The idle anonymous connection to close for a newcomer from `mine_peer`
/// holding `mine` anonymous connections: the oldest of the peer holding the
/// most if that peer holds more than the newcomer's; else the newcomer's
/// peer's own oldest (a flooder makes room with its own connections).
fn evictable(s: &State, mine_peer: PeerKey, mine: usize) -> Option<u64> {
    let (largest, n) = s.anonymous_per_peer.iter().max_by_key(|(_, n)| **n)?;
    let from = if *n > mine { *largest } else { mine_peer };
    s.conns
        .iter()
        .filter(|(_, c)| c.anonymous && c.peer == from && c.activity.in_flight.load(Ordering::SeqCst) == 0)
        .map(|(id, _)| *id)
        .min()
}

impl Slot {
    /// After a TLS handshake with a client certificate: the connection leaves
    /// the anonymous share (it uses the headroom kept for identities).
    pub fn identified(&self) {
        self.registry.identified(self)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.release(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerKey {
        PeerKey::V4([10, 0, 0, n])
    }

    fn registry() -> Arc<Connections> {
        Connections::new(Effective { total: 10, per_peer: 5, anonymous: 8 })
    }

    #[test]
    fn one_peer_cannot_take_more_than_its_share() {
        let r = registry();
        let held: Vec<Slot> = (0..5).map(|_| r.admit(peer(1)).unwrap()).collect();
        assert_eq!(r.admit(peer(1)).unwrap_err(), Refused::Peer);
        assert!(r.admit(peer(2)).is_ok());
        drop(held);
        assert_eq!(r.open(), 0, "dropping slots frees them");
    }

    #[test]
    fn a_flooder_makes_room_with_its_own_connections_and_busy_ones_are_never_closed() {
        let r = Connections::new(Effective { total: 12, per_peer: 5, anonymous: 8 });
        // An admin connected before: identified, it is outside the anonymous share.
        let admin = r.admit(peer(6)).unwrap();
        admin.identified();
        let mut held = vec![];
        for p in 1..=4u8 {
            for _ in 0..2 {
                held.push(r.admit(peer(p)).unwrap());
            }
        }
        // The anonymous share (8) is full and every peer holds 2: one more from
        // peer 1 closes peer 1's own oldest idle one, nobody else's.
        let more = r.admit(peer(1)).unwrap();
        let closed: Vec<usize> = (0..8).filter(|i| held[*i].activity.close.notified().now_or_never_is_set()).collect();
        assert_eq!(closed, vec![0]);
        assert!(!admin.activity.close.notified().now_or_never_is_set(), "identified connections are never evicted");
        // When every anonymous connection is busy, the newcomer is refused.
        for s in &held {
            s.activity.in_flight.store(1, Ordering::SeqCst);
        }
        more.activity.in_flight.store(1, Ordering::SeqCst);
        assert_eq!(r.admit(peer(7)).unwrap_err(), Refused::Anonymous);
    }

    #[test]
    fn a_new_peer_evicts_an_idle_connection_of_the_largest_anonymous_peer() {
        let r = Connections::new(Effective { total: 20, per_peer: 10, anonymous: 6 });
        let flood: Vec<Slot> = (0..6).map(|_| r.admit(peer(1)).unwrap()).collect();
        flood[0].activity.in_flight.store(1, Ordering::SeqCst);
        let _join = r.admit(peer(2)).unwrap();
        let evicted: Vec<usize> = (0..6).filter(|i| flood[*i].activity.close.notified().now_or_never_is_set()).collect();
        assert_eq!(evicted, vec![1], "the oldest idle connection of the flooder is closed, not the busy one");
    }

    trait NowOrNever {
        fn now_or_never_is_set(self) -> bool;
    }

    impl<F: std::future::Future<Output = ()>> NowOrNever for F {
        fn now_or_never_is_set(self) -> bool {
            futures::FutureExt::now_or_never(self).is_some()
        }
    }
}
