//! Bound-keypair join wire format, shared by the broker (verifier) and the
//! agent (signer), so the signed message is defined once.
//!
//! - `BeginJoin.payload`: `{"public_key": B64(SPKI DER)}` -> `{"nonce": B64}`
//! - `Join.payload`: `{"sequence": N, "attempt": ID, "signature": B64}`

use serde::{Deserialize, Serialize};

/// The method name.
pub const METHOD: &str = crate::domain::Method::BoundKeypair.name();
const DOMAIN: &str = "sigil-bound-keypair-v1";
const DOMAIN_V2: &str = "sigil-bound-keypair-v2";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (the 32 key bytes follow).
pub const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// `BeginJoin` payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginPayload {
    /// Base64 SPKI DER of the agent's public key.
    pub public_key: String,
}

/// `BeginJoin` answer payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChallengePayload {
    /// Base64 random nonce.
    pub nonce: String,
}

/// `Join` payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerPayload {
    /// Join sequence the agent last saw (0 before the first join).
    pub sequence: i64,
    /// Attempt id the agent saved before this join (empty: an agent that
    /// predates retry-safe joins; its retries are taken for copies).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attempt: String,
    /// Base64 signature over [`signed_message`].
    pub signature: String,
}

/// Longest attempt id accepted (base64url).
pub const MAX_ATTEMPT_LEN: usize = 64;

/// Whether `a` is a well-formed attempt id: at most [`MAX_ATTEMPT_LEN`] base64url characters.
pub fn attempt_is_valid(a: &str) -> bool {
    a.len() <= MAX_ATTEMPT_LEN && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The bytes the agent signs. With an attempt id, the message is of
/// version 2 (its own domain separator), so an answer cannot be replayed with
/// the attempt added or removed.
pub fn signed_message(token_name: &str, challenge_id: &str, nonce: &str, sequence: i64, attempt: &str) -> Vec<u8> {
    if attempt.is_empty() {
        format!("{DOMAIN}\n{token_name}\n{challenge_id}\n{nonce}\n{sequence}").into_bytes()
    } else {
        format!("{DOMAIN_V2}\n{token_name}\n{challenge_id}\n{nonce}\n{sequence}\n{attempt}").into_bytes()
    }
}

