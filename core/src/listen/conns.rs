//! The open connections of the broker port, counted for admission.
//!
//! A connection is admitted at accept if the total and its peer's count allow
//! it. It is *anonymous* until its TLS handshake shows a client certificate
//! (then *identified*). Anonymous connections may take only `Effective::anonymous`
//! slots, keeping headroom for admins and bots. When that share is full, a new
//! anonymous connection evicts an idle anonymous one of the peer holding the
//! most (if that peer holds more than the newcomer), so a flood from a few peers
//! cannot lock out a new peer's join or health check.
//!
//! One peer may have at most `Effective::anonymous_per_peer` anonymous
//! connections *active* (handshaking, or served without a certificate); more
//! are admitted *waiting*: they hold only their socket, do no TLS work, and get
//! their turn in arrival order when one of the peer's active ones is identified
//! or closes. A fleet behind one NAT address that reconnects at once is thus
//! queued, not reset, while one address still cannot occupy more than that
//! many handshakes (the CPU) at a time. The caller bounds the wait (the
//! handshake deadline counts from accept); waiting connections are anonymous
//! and idle, hence evictable. Plain data and a mutex: no I/O here; the accept
//! loop acts on the answers.

use super::limits::Effective;
use crate::peer::PeerKey;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
/// ended, a request to close, and its turn to start (when admitted waiting).
#[derive(Debug)]
pub struct Activity {
    /// Requests being served.
    pub in_flight: AtomicUsize,
    /// Notified when the connection should close (evicted).
    pub close: Notify,
    opened: Instant,
    /// Milliseconds after `opened` when a request last ended.
    last_done_ms: AtomicU64,
    /// Admitted waiting and not yet given its turn.
    waiting: AtomicBool,
    /// Notified when a waiting connection gets its turn.
    turn: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            close: Notify::new(),
            opened: Instant::now(),
            last_done_ms: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            turn: Notify::new(),
        }
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

    /// Whether the connection still waits for its turn.
    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Where a connection stands in the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Anonymous, queued behind its peer's active anonymous connections.
    Waiting,
    /// Anonymous and active: handshaking, or served without a certificate.
    Active,
    /// Out of the anonymous counts: identified, or evicted and closing.
    Settled,
}

#[derive(Debug)]
struct Conn {
    peer: PeerKey,
    phase: Phase,
    activity: Arc<Activity>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    per_peer: HashMap<PeerKey, usize>,
    /// Waiting + active.
    anonymous: usize,
    /// Waiting + active, per peer (who holds the most, for eviction).
    anonymous_per_peer: HashMap<PeerKey, usize>,
    /// Active only, per peer (the turn limit).
    active_per_peer: HashMap<PeerKey, usize>,
    /// Waiting connections of each peer, oldest first.
    queue: HashMap<PeerKey, VecDeque<u64>>,
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

impl State {
    /// Takes connection `id` out of the anonymous counts (identified, evicted
    /// or closed) and gives the next waiting connection of its peer its turn.
    fn leave_anonymous(&mut self, id: u64, cap: usize) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let (peer, was) = (c.peer, c.phase);
        if was == Phase::Settled {
            return;
        }
        c.phase = Phase::Settled;
        self.anonymous -= 1;
        dec(&mut self.anonymous_per_peer, &peer);
        match was {
            Phase::Active => {
                dec(&mut self.active_per_peer, &peer);
                self.promote(peer, cap);
            }
            Phase::Waiting => {
                if let Some(q) = self.queue.get_mut(&peer) {
                    q.retain(|w| *w != id);
                    if q.is_empty() {
                        self.queue.remove(&peer);
                    }
                }
            }
            Phase::Settled => {}
        }
    }

    /// Gives waiting connections of `peer` their turn while it has room.
    fn promote(&mut self, peer: PeerKey, cap: usize) {
        while self.active_per_peer.get(&peer).copied().unwrap_or(0) < cap {
            let Some(next) = self.queue.get_mut(&peer).and_then(VecDeque::pop_front) else {
                self.queue.remove(&peer);
                return;
            };
            if let Some(c) = self.conns.get_mut(&next).filter(|c| c.phase == Phase::Waiting) {
                c.phase = Phase::Active;
                c.activity.waiting.store(false, Ordering::SeqCst);
                c.activity.turn.notify_one();
                *self.active_per_peer.entry(peer).or_default() += 1;
            }
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

    /// Connections admitted waiting that have not had their turn yet.
    pub fn waiting(&self) -> usize {
        self.state.lock().map(|s| s.queue.values().map(VecDeque::len).sum()).unwrap_or(0)
    }

    /// Admits a new connection from `peer` (at accept, before TLS). It counts
    /// as anonymous until [`Slot::identified`]: a connection stalled in its
    /// handshake is as evictable as an idle anonymous one. When the anonymous
    /// share is full, an idle anonymous connection is closed to make room (see
    /// the module doc); if none can be, the newcomer is refused. When the peer
    /// already has its most active anonymous connections, the newcomer is
    /// admitted waiting: the caller awaits [`Slot::turn`] before any TLS work.
    pub fn admit(self: &Arc<Self>, peer: PeerKey) -> Result<Slot, Refused> {
        let cap = self.limits.anonymous_per_peer;
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
            let activity = s.conns.get(&victim).map(|c| c.activity.clone()).ok_or(Refused::Anonymous)?;
            // The victim leaves the counts now; its task closes it.
            s.leave_anonymous(victim, cap);
            activity.close.notify_one();
        }
        let id = s.next_id;
        s.next_id += 1;
        let activity = Arc::new(Activity::default());
        let phase = if s.active_per_peer.get(&peer).copied().unwrap_or(0) < cap {
            *s.active_per_peer.entry(peer).or_default() += 1;
            Phase::Active
        } else {
            activity.waiting.store(true, Ordering::SeqCst);
            s.queue.entry(peer).or_default().push_back(id);
            Phase::Waiting
        };
        s.conns.insert(id, Conn { peer, phase, activity: activity.clone() });
        *s.per_peer.entry(peer).or_default() += 1;
        s.anonymous += 1;
        *s.anonymous_per_peer.entry(peer).or_default() += 1;
        Ok(Slot { id, peer, registry: self.clone(), activity })
    }

    fn identified(&self, slot: &Slot) {
        let Ok(mut s) = self.state.lock() else { return };
        s.leave_anonymous(slot.id, self.limits.anonymous_per_peer);
    }

    fn release(&self, slot: &Slot) {
        let Ok(mut s) = self.state.lock() else { return };
        s.leave_anonymous(slot.id, self.limits.anonymous_per_peer);
        if s.conns.remove(&slot.id).is_some() {
            dec(&mut s.per_peer, &slot.peer);
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
        .filter(|(_, c)| c.phase != Phase::Settled && c.peer == from && c.activity.in_flight.load(Ordering::SeqCst) == 0)
        .map(|(id, _)| *id)
        .min()
}

impl Slot {
    /// After a TLS handshake with a client certificate: the connection leaves
    /// the anonymous share (it uses the headroom kept for identities), and
    /// the next waiting connection of its peer gets its turn.
    pub fn identified(&self) {
        self.registry.identified(self)
    }

    /// Resolves when the connection may start its TLS handshake: at once,
    /// unless it was admitted waiting (see the module doc). The caller bounds
    /// the wait and watches `activity.close` (a waiting connection can be
    /// evicted).
    pub async fn turn(&self) {
        while self.activity.is_waiting() {
            // A permit stored by `notify_one` before this point is not lost.
            self.activity.turn.notified().await;
        }
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
        Connections::new(Effective { total: 10, per_peer: 5, anonymous: 8, anonymous_per_peer: 5 })
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
        let r = Connections::new(Effective { total: 12, per_peer: 5, anonymous: 8, anonymous_per_peer: 5 });
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
        let r = Connections::new(Effective { total: 20, per_peer: 10, anonymous: 6, anonymous_per_peer: 10 });
        let flood: Vec<Slot> = (0..6).map(|_| r.admit(peer(1)).unwrap()).collect();
        flood[0].activity.in_flight.store(1, Ordering::SeqCst);
        let _join = r.admit(peer(2)).unwrap();
        let evicted: Vec<usize> = (0..6).filter(|i| flood[*i].activity.close.notified().now_or_never_is_set()).collect();
        assert_eq!(evicted, vec![1], "the oldest idle connection of the flooder is closed, not the busy one");
    }

    #[test]
    fn a_peer_beyond_its_anonymous_share_waits_its_turn_instead_of_being_refused() {
        let r = Connections::new(Effective { total: 20, per_peer: 10, anonymous: 18, anonymous_per_peer: 2 });
        let fleet: Vec<Slot> = (0..5).map(|_| r.admit(peer(1)).unwrap()).collect();
        let waiting: Vec<bool> = fleet.iter().map(|s| s.activity.is_waiting()).collect();
        assert_eq!(waiting, vec![false, false, true, true, true]);
        assert_eq!(r.waiting(), 3);
        // Another address is not queued behind this one.
        assert!(!r.admit(peer(2)).unwrap().activity.is_waiting());
        // An identified connection and a closed one each give the next waiter its turn, in order.
        fleet[0].identified();
        assert!(fleet[2].turn().now_or_never_is_set() && fleet[3].activity.is_waiting());
        let mut fleet = fleet;
        drop(fleet.remove(1));
        assert!(fleet[2].turn().now_or_never_is_set() && fleet[3].activity.is_waiting());
        // A waiter that leaves (deadline, eviction) frees its place in the queue.
        drop(fleet.remove(3));
        assert_eq!(r.waiting(), 0);
        assert_eq!(r.open(), 3);
    }

    #[test]
    fn a_waiting_connection_is_evictable_and_the_hard_per_peer_cap_still_refuses() {
        let r = Connections::new(Effective { total: 20, per_peer: 6, anonymous: 6, anonymous_per_peer: 2 });
        let flood: Vec<Slot> = (0..6).map(|_| r.admit(peer(1)).unwrap()).collect();
        assert_eq!(r.admit(peer(1)).unwrap_err(), Refused::Peer);
        flood[0].activity.in_flight.store(1, Ordering::SeqCst);
        flood[1].activity.in_flight.store(1, Ordering::SeqCst);
        // The anonymous share is full: a newcomer closes the flooder's oldest idle one, a waiter.
        let join = r.admit(peer(2)).unwrap();
        assert!(!join.activity.is_waiting());
        assert!(flood[2].activity.close.notified().now_or_never_is_set());
        assert_eq!(r.waiting(), 3);
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
