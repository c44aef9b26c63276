//! Pending join challenges (AWS IAM, Azure, TPM credential activation,
//! bound-keypair signatures): single use, short-lived, bounded in number, kept
//! in the store so that any replica answers a challenge any replica issued.
//!
//! `BeginJoin` needs no credential, so anyone who can reach the broker can add
//! challenges: the flood policy (per peer, per join token, in total; never
//! refusing a newcomer) is `sigil_core::domain::challenge`, carried out by the
//! store in one transaction (`store/sqlite_challenges.rs`,
//! `store/pg_challenges.rs`). With several replicas the limits are those of the
//! shared table, not per replica: each insert counts every replica's pending
//! challenges and applies the inserting replica's configured limits.
//!
//! What the store holds (`state`) must not let a reader of the database answer
//! a challenge: the methods store only what the caller is shown anyway (nonces,
//! public keys, claims about a public EK) and, for a secret the answer must
//! equal (the TPM credential's), its SHA-256 (`tpm.rs`).

use crate::store::{ChallengeRecord, Store, StoreError};
use sigil_core::peer::PeerKey;

pub use sigil_core::domain::challenge::{Limits, MAX_PENDING, MAX_PER_PEER, MAX_PER_TOKEN, TTL_SECS};

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
    /// Method-private state (nonce, hash of the expected secret ...). Never
    /// sent; stored as is, so never a secret the answer is compared with.
    pub state: Vec<u8>,
    /// Expiry.
    pub expires_at: i64,
}

/// Most challenge inserts one broker runs in the store at once. Inserts queue
/// for one lock shared by the replicas (`store/pg_challenges.rs`), each holding
/// a store connection while it waits: without this bound a `BeginJoin` flood
/// would hold every pooled connection and stall renewals and joins.
pub const INSERTS_AT_ONCE: usize = 4;

/// The pending challenges: the limits this broker applies to the store's table.
#[derive(Debug)]
pub struct Challenges {
    limits: Limits,
    inserts: tokio::sync::Semaphore,
}

impl Default for Challenges {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Challenges {
    /// Challenges bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, inserts: tokio::sync::Semaphore::new(INSERTS_AT_ONCE) }
    }

    /// Stores a challenge for `peer`, evicting as the flood policy says.
    pub async fn insert(&self, store: &dyn Store, id: String, p: Pending, peer: PeerKey, now: i64) -> Result<(), StoreError> {
        let record = ChallengeRecord {
            id,
            method: p.method,
            token: p.token_name,
            peer: peer.to_string(),
            state: p.state,
            expires_at: p.expires_at,
        };
        let _turn = self.inserts.acquire().await.map_err(|_| StoreError::Backend("challenge inserts closed".into()))?;
        store.insert_challenge(&record, &self.limits, now).await
    }

    /// Takes a challenge out (single use, across replicas). Expired ones are
    /// not returned.
    pub async fn take(&self, store: &dyn Store, id: &str, now: i64) -> Result<Option<Pending>, StoreError> {
        let r = store.take_challenge(id, now).await?;
        Ok(r.map(|r| Pending { method: r.method, token_name: r.token, state: r.state, expires_at: r.expires_at }))
    }
}
