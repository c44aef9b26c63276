//! Bound-keypair joins: binding a key to a join token once, and the join
//! sequence that tells the key's holder from a copy of the key.
//!
//! The first join registers a public key (spending the token's one-time
//! registration secret, unless the operator configured the key). Each later
//! join signs the sequence it last saw; the broker answers with the next one.
//! Two holders of one key cannot both follow the sequence.
//!
//! Mistakes this module exists to prevent:
//! - a registration secret spent twice (two keys bound by one secret);
//! - a copied key joining beside the original: a stale sequence locks the
//!   binding for good (until the operator binds a new key);
//! - an agent whose join answer was lost locked as a copy: the same attempt
//!   presenting the previous sequence gets the same answer again;
//! - a join counted past the token's `max_uses` or after its expiry
//!   ([`super::token_uses::spend`]).
//!
//! The store writes what is decided here only if the binding (and the token's
//! limits) still are as read (compare-and-set); otherwise the caller reads
//! again and decides again.

use super::join_method::Method;
use super::token_uses::{self, TokenRecord, TokenState, TokenUseError};

/// A public key bound to a `bound_keypair` join token and its join sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeypairBinding {
    /// Join token name.
    pub token: String,
    /// Bound public key (base64 SPKI DER).
    pub public_key: String,
    /// Joins done with the key; the agent presents the value it last saw.
    pub sequence: i64,
    /// Locked after a stale sequence was presented (a copied key).
    pub locked: bool,
    /// Attempt id of the join that set `sequence` (empty: none or an old
    /// agent). The same attempt presenting `sequence - 1` again is a retry of
    /// a join whose answer was lost, not a copy.
    pub last_attempt: String,
}

/// Why a bound-keypair registration or join is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeypairError {
    /// The binding was locked earlier.
    #[error("the key bound to join token {token:?} is locked after a copy was detected; set a new config.public_key on the join token (or delete and recreate it) to bind a new key")]
    Locked {
        /// Join token name.
        token: String,
    },
    /// Another key is bound.
    #[error("the key is not the one bound to join token {token:?}")]
    NotBoundKey {
        /// Join token name.
        token: String,
    },
    /// A stale sequence: two agents hold the key. The binding is locked by this join.
    #[error("join sequence {presented} presented but join token {token:?} is at {at}: another agent holds a copy of this key; the binding is now locked (set a new config.public_key on the join token, or delete and recreate it, to bind a new key)")]
    Copied {
        /// Join token name.
        token: String,
        /// Sequence presented.
        presented: i64,
        /// Sequence of the binding.
        at: i64,
    },
    /// The registration secret does not match, was spent, or the token
    /// expired or is not a `bound_keypair` token.
    #[error("registration secret refused (unknown, or already used to bind a key)")]
    RegistrationSpent,
    /// The join cannot count against the token.
    #[error(transparent)]
    Token(#[from] TokenUseError),
}

/// The decision over a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// A key is bound already (a concurrent registration won): nothing
    /// changes; the key check of the join that follows decides.
    AlreadyBound,
    /// Insert `binding`; with `spend_secret`, replace the token's secret hash
    /// by this marker in the same write (only if it still is the one read).
    Bind {
        /// The new binding, at sequence 0.
        binding: KeypairBinding,
        /// Marker that replaces the spent registration secret's hash.
        spend_secret: Option<String>,
    },
}

/// Decides the registration of `public_key` with `token`, as read with the
/// current binding `bound`. `secret_hash`: the hash of the registration secret
/// presented (`None`: the key is the operator-configured one, no secret).
pub fn register(bound: Option<&KeypairBinding>, token: &TokenRecord, public_key: &str, secret_hash: Option<&str>, now: i64) -> Result<Registration, KeypairError> {
    if bound.is_some() {
        return Ok(Registration::AlreadyBound);
    }
    let spend_secret = match secret_hash {
        None => None,
        Some(presented) => {
            let t = &token.state;
            let usable = t.method == Method::BoundKeypair.name() && t.expires_at > now && token.secret_hash == presented;
            if !usable {
                return Err(KeypairError::RegistrationSpent);
            }
            Some(token_uses::spent_secret_hash(&t.name))
        }
    };
    let binding = KeypairBinding {
        token: token.state.name.clone(),
        public_key: public_key.to_string(),
        sequence: 0,
        locked: false,
        last_attempt: String::new(),
    };
    Ok(Registration::Bind { binding, spend_secret })
}

/// A join presented with a key, its last-seen sequence and its attempt id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinAttempt<'a> {
    /// Public key (base64 SPKI DER) that signed the challenge.
    pub public_key: &'a str,
    /// Sequence the agent last saw.
    pub sequence: i64,
    /// Random id of this join attempt (kept across retries; may be empty).
    pub attempt: &'a str,
}

/// The decision over one join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Store `next` and count one use of the token (both or neither), then
    /// answer `sequence`.
    Join {
        /// Binding to store.
        next: KeypairBinding,
        /// Sequence to answer.
        sequence: i64,
    },
    /// A retry of the last join whose answer was lost: answer `sequence`
    /// again; nothing changes, no use is counted.
    Repeat {
        /// Sequence to answer.
        sequence: i64,
    },
    /// Store `next` (locked), then refuse.
    Lock {
        /// Binding to store.
        next: KeypairBinding,
        /// The refusal.
        error: KeypairError,
    },
    /// Refuse; nothing changes.
    Refuse(KeypairError),
}

/// Decides one join with binding `b` of token `token` (its state as read) at `now`.
pub fn advance(b: &KeypairBinding, token: &TokenState, join: JoinAttempt<'_>, now: i64) -> Advance {
    if b.locked {
        return Advance::Refuse(KeypairError::Locked { token: b.token.clone() });
    }
    if b.public_key != join.public_key {
        return Advance::Refuse(KeypairError::NotBoundKey { token: b.token.clone() });
    }
    if !join.attempt.is_empty() && join.attempt == b.last_attempt && join.sequence == b.sequence - 1 {
        return Advance::Repeat { sequence: b.sequence };
    }
    if join.sequence != b.sequence {
        return Advance::Lock {
            next: KeypairBinding { locked: true, ..b.clone() },
            error: KeypairError::Copied { token: b.token.clone(), presented: join.sequence, at: b.sequence },
        };
    }
    if let Err(e) = token_uses::spend(token, now) {
        return Advance::Refuse(e.into());
    }
    let next = KeypairBinding { sequence: b.sequence + 1, last_attempt: join.attempt.to_string(), ..b.clone() };
    Advance::Join { sequence: next.sequence, next }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn binding(sequence: i64, last_attempt: &str) -> KeypairBinding {
        KeypairBinding { token: "t".into(), public_key: "K".into(), sequence, locked: false, last_attempt: last_attempt.into() }
    }

    fn token(uses: i64, max_uses: i64) -> TokenState {
        TokenState { name: "t".into(), bot: "b".into(), method: "bound_keypair".into(), uses, max_uses, expires_at: 100 }
    }

    fn record(secret_hash: &str, expires_at: i64) -> TokenRecord {
        TokenRecord { state: TokenState { expires_at, ..token(0, 5) }, secret_hash: secret_hash.into() }
    }

    fn join<'a>(sequence: i64, attempt: &'a str) -> JoinAttempt<'a> {
        JoinAttempt { public_key: "K", sequence, attempt }
    }

    #[test]
    fn a_join_at_the_current_sequence_advances_it_and_counts_a_use() {
        let a = advance(&binding(3, "a2"), &token(3, 5), join(3, "a3"), 1);
        assert_eq!(a, Advance::Join { next: binding(4, "a3"), sequence: 4 });
    }

    #[test]
    fn a_stale_sequence_is_a_copied_key_and_locks_the_binding() {
        for (presented, attempt) in [(2, "copy"), (2, ""), (4, "a3"), (0, "a0")] {
            let a = advance(&binding(3, "a3"), &token(3, 5), join(presented, attempt), 1);
            let Advance::Lock { next, error } = a else { panic!("sequence {presented} {attempt:?}: {a:?}") };
            assert_eq!(next, KeypairBinding { locked: true, ..binding(3, "a3") });
            assert_eq!(error, KeypairError::Copied { token: "t".into(), presented, at: 3 });
            assert!(error.to_string().contains("another agent holds a copy of this key"));
        }
    }

    #[test]
    fn the_same_attempt_at_the_previous_sequence_is_a_retry_not_a_copy() {
        assert_eq!(advance(&binding(3, "a3"), &token(3, 3), join(2, "a3"), 1), Advance::Repeat { sequence: 3 });
        // No attempt id (an old agent): a stale sequence is a copy.
        assert!(matches!(advance(&binding(3, ""), &token(3, 5), join(2, ""), 1), Advance::Lock { .. }));
    }

    #[test]
    fn a_locked_binding_or_another_key_is_refused_without_a_write() {
        let locked = KeypairBinding { locked: true, ..binding(1, "") };
        assert_eq!(advance(&locked, &token(1, 5), join(1, "x"), 1), Advance::Refuse(KeypairError::Locked { token: "t".into() }));
        let other = JoinAttempt { public_key: "OTHER", ..join(1, "x") };
        assert_eq!(advance(&binding(1, ""), &token(1, 5), other, 1), Advance::Refuse(KeypairError::NotBoundKey { token: "t".into() }));
    }

    #[test]
    fn a_used_up_or_expired_token_refuses_the_join_and_advances_nothing() {
        let cases = [(token(2, 2), 1, TokenUseError::UsedUp), (token(0, 2), 100, TokenUseError::Expired)];
        for (t, now, want) in cases {
            assert_eq!(advance(&binding(2, "a1"), &t, join(2, "a2"), now), Advance::Refuse(KeypairError::Token(want)));
        }
    }

    #[test]
    fn a_registration_secret_binds_one_key_and_is_spent() {
        let r = register(None, &record("reg", 100), "K", Some("reg"), 1).unwrap();
        assert_eq!(r, Registration::Bind { binding: binding(0, ""), spend_secret: Some(token_uses::spent_secret_hash("t")) });
        // Operator-configured key: no secret to spend.
        assert_eq!(register(None, &record("none:t", 100), "K", None, 1).unwrap(), Registration::Bind { binding: binding(0, ""), spend_secret: None });
    }

    #[test]
    fn a_wrong_spent_or_expired_registration_secret_binds_nothing() {
        let cases = [
            (record("reg", 100), "wrong", 1),
            (record(&token_uses::spent_secret_hash("t"), 100), "reg", 1),
            (record("reg", 100), "reg", 100),
            (TokenRecord { state: TokenState { method: "token".into(), ..token(0, 5) }, secret_hash: "reg".into() }, "reg", 1),
        ];
        for (rec, presented, now) in cases {
            assert_eq!(register(None, &rec, "K", Some(presented), now), Err(KeypairError::RegistrationSpent), "{rec:?} {presented} {now}");
        }
    }

    #[test]
    fn a_key_bound_already_leaves_the_binding_as_it_is() {
        let b = binding(4, "a");
        assert_eq!(register(Some(&b), &record("reg", 100), "OTHER", Some("wrong"), 1000).unwrap(), Registration::AlreadyBound);
    }
}
