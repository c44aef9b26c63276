//! Bot-identity generations: telling a renewing agent from a copy of its
//! identity, decided over the instance's stored generation state.
//!
//! Every bot certificate carries the generation it was issued at and the hash
//! of its key. A renewal presents both. The broker issues generation `n + 1`
//! as *pending* and commits it only when a certificate of `n + 1` with the
//! pending key comes back, so an agent that lost its renewed certificate
//! (crash before writing it) can renew again with the committed one.
//!
//! Mistakes this module exists to prevent:
//! - two holders of one identity both renewing for ever (a stolen copy would
//!   live as long as the original): any other generation, or the pending one
//!   with another key, is a copy and locks the instance for good;
//! - a locked instance renewing again;
//! - locking a legitimate agent that lost an answer (the committed generation
//!   re-issues, replacing the pending key).
//!
//! The store writes the state decided here only if the instance still holds
//! the state it was decided on (compare-and-set); otherwise the caller reads
//! again and decides again.

/// One bot instance's generation state, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationState {
    /// Instance id.
    pub id: String,
    /// Committed generation.
    pub generation: i64,
    /// Issued but not yet presented generation (== `generation` when none pending).
    pub pending: i64,
    /// Hash of the key the pending generation was issued to.
    pub pending_key: String,
    /// Locked after a copy was detected.
    pub locked: bool,
}

/// What the caller's certificate presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented<'a> {
    /// Generation in the certificate.
    pub generation: i64,
    /// Hash of the certificate's key.
    pub key: &'a str,
}

/// Why a renewal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenerationError {
    /// The instance was locked earlier.
    #[error("bot instance {id} is locked; join again with a new token")]
    Locked {
        /// Instance id.
        id: String,
    },
    /// A generation other than the committed one, or the pending one with
    /// another key: a second holder. The instance is locked by this renewal.
    #[error("generation {presented} presented but generation {issued} was issued to another key: this identity was copied; instance {id} locked")]
    Copied {
        /// Instance id.
        id: String,
        /// Generation presented.
        presented: i64,
        /// Latest generation issued.
        issued: i64,
    },
}

/// The decision over one renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Store `next`, then issue a certificate of `generation` to the new key.
    Issue {
        /// State to store.
        next: GenerationState,
        /// Generation to issue.
        generation: i64,
    },
    /// Store `next` (locked), then refuse with `error`.
    Lock {
        /// State to store.
        next: GenerationState,
        /// The refusal.
        error: GenerationError,
    },
    /// Refuse; nothing changes.
    Refuse(GenerationError),
}

/// Decides a renewal of `state` by a certificate presenting `presented`,
/// about to be replaced by one with key hash `new_key`.
pub fn renew(state: &GenerationState, presented: Presented<'_>, new_key: &str) -> Renewal {
    if state.locked {
        return Renewal::Refuse(GenerationError::Locked { id: state.id.clone() });
    }
    // Either the holder proves it stored the last issued certificate (pending
    // generation, same key): commit it. Or it still holds the committed
    // generation (the last issued certificate was never stored): issue again,
    // replacing the pending key. Anything else means a second holder.
    let proves_pending = state.pending > state.generation && presented.generation == state.pending && presented.key == state.pending_key;
    let committed = if proves_pending {
        state.pending
    } else if presented.generation == state.generation {
        state.generation
    } else {
        return Renewal::Lock {
            next: GenerationState { locked: true, ..state.clone() },
            error: GenerationError::Copied { id: state.id.clone(), presented: presented.generation, issued: state.pending },
        };
    };
    let next = committed + 1;
    Renewal::Issue {
        next: GenerationState { id: state.id.clone(), generation: committed, pending: next, pending_key: new_key.to_string(), locked: false },
        generation: next,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn state(generation: i64, pending: i64, pending_key: &str) -> GenerationState {
        GenerationState { id: "i".into(), generation, pending, pending_key: pending_key.into(), locked: false }
    }

    fn issued(r: &Renewal) -> Option<(i64, i64, i64, &str)> {
        match r {
            Renewal::Issue { next, generation } => Some((next.generation, next.pending, *generation, next.pending_key.as_str())),
            _ => None,
        }
    }

    #[test]
    fn a_stale_generation_is_a_copy_and_locks_the_instance() {
        let r = renew(&state(4, 5, "E"), Presented { generation: 3, key: "C" }, "X");
        let Renewal::Lock { next, error } = r else { panic!("{r:?}") };
        assert!(next.locked);
        assert_eq!((next.generation, next.pending, next.pending_key.as_str()), (4, 5, "E"), "only the lock changes");
        assert_eq!(error, GenerationError::Copied { id: "i".into(), presented: 3, issued: 5 });
        assert!(error.to_string().contains("this identity was copied; instance i locked"));
    }

    #[test]
    fn the_pending_generation_presented_with_its_key_is_committed() {
        let r = renew(&state(1, 2, "A"), Presented { generation: 2, key: "A" }, "B");
        assert_eq!(issued(&r), Some((2, 3, 3, "B")));
    }

    #[test]
    fn the_committed_generation_re_issues_after_a_lost_certificate() {
        // The agent never stored generation 2: it renews with 1 again and
        // gets 2 again, for its new key.
        let r = renew(&state(1, 2, "A"), Presented { generation: 1, key: "k1" }, "B");
        assert_eq!(issued(&r), Some((1, 2, 2, "B")));
        // A fresh instance (nothing pending) renews from its generation.
        assert_eq!(issued(&renew(&state(1, 1, ""), Presented { generation: 1, key: "k" }, "A")), Some((1, 2, 2, "A")));
    }

    #[test]
    fn the_pending_generation_with_another_key_is_a_copy() {
        // Two holders of generation 1 renewed; the thief's key is pending. The
        // legitimate holder presents generation 2 with its own key: a copy.
        let r = renew(&state(1, 2, "THIEF"), Presented { generation: 2, key: "LEGIT" }, "n");
        assert!(matches!(r, Renewal::Lock { error: GenerationError::Copied { presented: 2, issued: 2, .. }, .. }), "{r:?}");
    }

    #[test]
    fn a_generation_ahead_of_the_pending_one_is_a_copy() {
        for presented in [3, 100, -1, 0] {
            let r = renew(&state(1, 2, "A"), Presented { generation: presented, key: "A" }, "n");
            assert!(matches!(r, Renewal::Lock { .. }), "generation {presented}: {r:?}");
        }
    }

    #[test]
    fn a_locked_instance_is_refused_without_a_write() {
        let locked = GenerationState { locked: true, ..state(1, 2, "A") };
        for presented in [Presented { generation: 1, key: "k" }, Presented { generation: 2, key: "A" }] {
            assert_eq!(renew(&locked, presented, "n"), Renewal::Refuse(GenerationError::Locked { id: "i".into() }));
        }
    }
}
