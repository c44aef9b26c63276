//! Pending join challenges (TPM credential activation, bound-keypair
//! signatures): single use, short-lived, bounded in number.
//!
//! Kept in memory: a challenge must be answered on the replica that issued it.
//! With several replicas, put them in the store (see docs/reference/replicas.md).

use std::collections::HashMap;
use std::sync::Mutex;

/// Most challenges pending at once; more are refused rather than growing memory.
pub const MAX_PENDING: usize = 10_000;
/// Challenge lifetime, seconds.
pub const TTL_SECS: i64 = 60;

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
    inner: Mutex<HashMap<String, Pending>>,
}

impl Challenges {
    /// Stores a challenge; fails when too many are pending.
    pub fn insert(&self, id: String, p: Pending, now: i64) -> Result<(), String> {
        let mut m = self.inner.lock().map_err(|_| "challenge table poisoned".to_string())?;
        m.retain(|_, v| v.expires_at > now);
        if m.len() >= MAX_PENDING {
            return Err("too many pending join challenges; retry later".into());
        }
        m.insert(id, p);
        Ok(())
    }

    /// Takes a challenge out (single use). Expired ones are not returned.
    pub fn take(&self, id: &str, now: i64) -> Option<Pending> {
        let mut m = self.inner.lock().ok()?;
        m.remove(id).filter(|p| p.expires_at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(exp: i64) -> Pending {
        Pending { method: "m".into(), token_name: "t".into(), state: vec![1], expires_at: exp }
    }

    #[test]
    fn a_challenge_can_be_answered_once() {
        let c = Challenges::default();
        c.insert("a".into(), pending(100), 0).unwrap();
        assert!(c.take("a", 10).is_some());
        assert!(c.take("a", 10).is_none());
    }

    #[test]
    fn expired_challenges_are_not_returned() {
        let c = Challenges::default();
        c.insert("a".into(), pending(100), 0).unwrap();
        assert!(c.take("a", 100).is_none());
    }
}
