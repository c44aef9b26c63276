//! The flood policy of pending join challenges (AWS IAM, Azure, TPM credential
//! activation, bound-keypair signatures): what an insert evicts.
//!
//! `BeginJoin` needs no credential, so anyone who can reach the broker can add
//! challenges. The mistake this prevents: one global cap that refuses new
//! challenges once full, so a single flooding caller blocks every legitimate
//! challenge join for the challenge lifetime. Instead an insert is never
//! refused:
//!
//! - a peer (IPv4 address or IPv6 /64, `sigil_core::peer::PeerKey`) holds at
//!   most [`Limits::per_peer`] challenges; its next one replaces its own oldest;
//! - a join token has at most [`Limits::per_token`] pending; the next one
//!   replaces the token's oldest, so a flood naming one token spares the others;
//! - when the whole table is full, the oldest challenge of the peer holding the
//!   most is dropped, never one of a peer with fewer.
//!
//! A flooder therefore evicts its own challenges first; a legitimate caller's
//! challenge survives unless the flood comes from more peers than the table has
//! room for.
//!
//! Plain decisions only: the store (`broker/src/store/*_challenges.rs`) inserts
//! the new challenge, reads the counts, asks [`next_step`] (and [`victim`])
//! what to evict, evicts, and repeats, all in one transaction that replicas
//! sharing the store run one at a time.

/// Most challenges pending at once (default).
pub const MAX_PENDING: usize = 10_000;
/// Most challenges one peer may have pending (default).
pub const MAX_PER_PEER: usize = 32;
/// Most challenges pending for one join token (default).
pub const MAX_PER_TOKEN: usize = 1_000;
/// Challenge lifetime, seconds.
pub const TTL_SECS: i64 = 60;
/// Most challenges one insert evicts from the largest peer: the table can only
/// be over [`Limits::max_pending`] by more than one after the limit was
/// lowered, and expiry empties it within [`TTL_SECS`] anyway.
pub const MAX_EVICTIONS_FROM_LARGEST: usize = 16;

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

/// Pending challenges counted right after an insert, the new one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Of the inserting peer.
    pub peer: u64,
    /// Of the join token the new challenge names.
    pub token: u64,
    /// In the whole table.
    pub total: u64,
}

/// The next eviction an insert needs. The new challenge itself is never
/// evicted (a cap of 0 counts as 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Within every limit.
    Done,
    /// Evict this many of the inserting peer's oldest challenges.
    PeerOldest(u64),
    /// Evict this many of the join token's oldest challenges.
    TokenOldest(u64),
    /// Evict one challenge chosen by [`victim`].
    FromLargestPeer,
}

fn cap(limit: usize) -> u64 {
    limit.max(1) as u64
}

/// What to evict next, given the counts after the insert (and after the
/// evictions so far): the peer's excess first, then the token's, then one of
/// the largest peer's while the table is over its total.
pub fn next_step(l: &Limits, c: Counts) -> Step {
    if c.peer > cap(l.per_peer) {
        Step::PeerOldest(c.peer - cap(l.per_peer))
    } else if c.token > cap(l.per_token) {
        Step::TokenOldest(c.token - cap(l.per_token))
    } else if c.total > cap(l.max_pending) {
        Step::FromLargestPeer
    } else {
        Step::Done
    }
}

/// A peer and how many challenges it holds, not counting the one being inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLoad<P> {
    /// The peer.
    pub peer: P,
    /// Its pending challenges.
    pub count: u64,
}

/// Whose oldest challenge goes when the table is full and `own` inserts: its
/// own if it holds as many as the largest peer (`largest`: the peer holding
/// the most, ties broken by the oldest challenge), else the largest's. `None`:
/// nothing but the new challenge to evict.
pub fn victim<P>(own: PeerLoad<P>, largest: Option<PeerLoad<P>>) -> Option<P> {
    match largest {
        Some(l) if l.count > own.count => Some(l.peer),
        _ if own.count > 0 => Some(own.peer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits { max_pending: 10, per_peer: 4, per_token: 6 }
    }

    fn counts(peer: u64, token: u64, total: u64) -> Counts {
        Counts { peer, token, total }
    }

    #[test]
    fn the_peers_excess_goes_first_then_the_tokens_then_the_largest_peers() {
        let l = small();
        assert_eq!(next_step(&l, counts(5, 7, 11)), Step::PeerOldest(1));
        assert_eq!(next_step(&l, counts(4, 7, 11)), Step::TokenOldest(1));
        assert_eq!(next_step(&l, counts(4, 6, 11)), Step::FromLargestPeer);
        assert_eq!(next_step(&l, counts(4, 6, 10)), Step::Done);
    }

    #[test]
    fn a_lowered_limit_trims_the_whole_excess_at_once() {
        assert_eq!(next_step(&small(), counts(32, 32, 32)), Step::PeerOldest(28));
    }

    #[test]
    fn a_limit_of_zero_still_keeps_the_new_challenge() {
        let l = Limits { max_pending: 0, per_peer: 0, per_token: 0 };
        assert_eq!(next_step(&l, counts(1, 1, 1)), Step::Done);
        assert_eq!(next_step(&l, counts(2, 1, 2)), Step::PeerOldest(1));
    }

    #[test]
    fn the_inserting_peer_loses_its_own_when_it_holds_as_many_as_anyone() {
        let own = |count| PeerLoad { peer: "own", count };
        let largest = |count| Some(PeerLoad { peer: "big", count });
        assert_eq!(victim(own(3), largest(3)), Some("own"));
        assert_eq!(victim(own(2), largest(3)), Some("big"));
        assert_eq!(victim(own(0), largest(1)), Some("big"), "a newcomer is never refused: the largest makes room");
        assert_eq!(victim(own(0), None), None);
    }
}
