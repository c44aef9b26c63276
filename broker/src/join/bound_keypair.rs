//! Bound-keypair join: the agent holds a private key; the join token binds its
//! public key, either pre-registered by the operator (`config.public_key`) or
//! registered on first join with the token's one-time secret. Every join
//! signs a fresh broker challenge, and carries the join sequence number the
//! agent last saw: the broker advances it by one per join, so when a copy of
//! the key joins, one of the two agents presents a stale number, the binding is
//! locked and the join refused.
//!
//! The broker half. The wire format and the signed message live in
//! `sigil_core::join_wire::bound_keypair`, the agent half in the agent crate.
//!
//! Wire format (JSON in the `payload` fields):
//! - `BeginJoin.payload`: `{"public_key": B64(SPKI DER)}` -> `{"nonce": B64}`
//! - `Join.payload`: `{"sequence": N, "signature": B64}`, `Join.challenge_id`,
//!   and for a first join without a pre-registered key, `Join.token` = the
//!   join token's secret.
//!
//! The signature covers [`signed_message`]: a domain separator, the token name,
//! the challenge id, the nonce, the sequence and the attempt id. The current
//! sequence is never sent to the agent, so a copy cannot learn it.
//!
//! Retry safety: the answer to a `Join` can be lost after the broker advanced
//! the sequence (a dropped packet, a crash). The agent would then present the
//! old number and be taken for a copy. So before each join the agent saves a
//! random attempt id with its sequence ([`JoinState`]) and sends it, and the
//! broker remembers the attempt that set the current sequence: the same
//! attempt presenting the previous number is the same join asked again, and
//! gets the same sequence. A copy made at rest holds no attempt id, makes its
//! own, and is caught as before. (A copy taken in the instant between saving
//! the attempt and saving the answer can join once more, and is caught at the
//! next join of either holder.)

use super::challenge::{Issued, Pending, TTL_SECS};
use super::nonce::random_b64;
use super::{JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken, TokenSecret};
use crate::store::StoreError;
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

pub use sigil_core::join_wire::bound_keypair::{signed_message, AnswerPayload, BeginPayload, ChallengePayload, MAX_ATTEMPT_LEN, METHOD};

fn check_attempt(a: &str) -> Result<(), JoinError> {
    if !sigil_core::join_wire::bound_keypair::attempt_is_valid(a) {
        return Err(JoinError::invalid("payload.attempt", format!("must be at most {MAX_ATTEMPT_LEN} base64url characters")));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct State {
    public_key: String,
    nonce: String,
}

/// A public key the broker accepts: Ed25519 or ECDSA P-256 (SPKI DER).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Ed25519(Vec<u8>),
    P256(Vec<u8>),
}

fn parse_public_key(b64: &str) -> Result<PublicKey, String> {
    let der = STANDARD.decode(b64.trim()).map_err(|_| "public_key is not base64".to_string())?;
    use x509_parser::prelude::FromDer;
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).map_err(|_| "public_key is not an SPKI DER".to_string())?;
    if !rest.is_empty() {
        return Err("trailing bytes after the public key".into());
    }
    let oid = spki.algorithm.algorithm.to_id_string();
    let key = spki.subject_public_key.data.to_vec();
    match oid.as_str() {
        "1.3.101.112" if key.len() == 32 => Ok(PublicKey::Ed25519(key)),
        "1.2.840.10045.2.1" if key.len() == 65 && key[0] == 4 => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            if curve.as_deref() == Some("1.2.840.10045.3.1.7") {
                Ok(PublicKey::P256(key))
            } else {
                Err("only the P-256 curve is accepted for EC keys".into())
            }
        }
        other => Err(format!("key algorithm {other} is not accepted (Ed25519 or ECDSA P-256)")),
    }
}

impl PublicKey {
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(k) => UnparsedPublicKey::new(&signature::ED25519, k).verify(msg, sig).is_ok(),
            PublicKey::P256(k) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, k).verify(msg, sig).is_ok(),
        }
    }
}

fn same_key(a: &str, b: &str) -> bool {
    matches!((STANDARD.decode(a.trim()), STANDARD.decode(b.trim())), (Ok(x), Ok(y)) if x == y)
}

/// The pre-registered key of the token, normalised to base64 SPKI DER (PEM accepted).
fn configured_key(t: &JoinToken) -> Result<Option<String>, JoinError> {
    let Some(v) = t.config.get("public_key").map(|s| s.trim()).filter(|s| !s.is_empty()) else { return Ok(None) };
    let b64: String = if sigil_core::pem::looks_like_pem(v.as_bytes()) {
        STANDARD.encode(sigil_core::pem::public_key(v, "the value").map_err(|e| JoinError::invalid("config.public_key", e.to_string()))?)
    } else {
        v.to_string()
    };
    parse_public_key(&b64).map_err(|e| JoinError::invalid("config.public_key", e))?;
    Ok(Some(b64))
}

/// Checks a bound-keypair token's settings when it is created or updated
/// ([`super::check_token`]), so a bad `config.public_key` is refused then,
/// not at the agent's join.
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    check_config(t).map(|_| ())
}

/// Whether an update changes the pre-registered key (set, replaced or
/// removed): the broker then drops the binding, so the new key binds at its
/// next join and the old key is refused.
pub fn key_changed(old: &JoinToken, new: &JoinToken) -> bool {
    if new.method != METHOD {
        return false;
    }
    let key = |t: &JoinToken| configured_key(t).ok().flatten();
    match (key(old), key(new)) {
        (Some(a), Some(b)) => !same_key(&a, &b),
        (a, b) => a.is_some() != b.is_some(),
    }
}

/// The settings the registry does not check (known keys and no allow rules
/// are [`JoinToken::check_settings`]): a usable `config.public_key`.
fn check_config(t: &JoinToken) -> Result<Option<String>, JoinError> {
    configured_key(t)
}

fn store_err(e: StoreError) -> JoinError {
    match e {
        StoreError::IdentityRejected(m) => JoinError::Rejected(m),
        other => other.into(),
    }
}

/// `BeginJoin`: checks the key may join with this token, issues a nonce.
pub async fn begin(env: &JoinEnv<'_>, t: &JoinToken, payload: &[u8]) -> Result<Issued, JoinError> {
    let configured = check_config(t)?;
    let p: BeginPayload = serde_json::from_slice(payload).map_err(|e| JoinError::invalid("payload", format!("expected {{\"public_key\": BASE64_SPKI}}: {e}")))?;
    parse_public_key(&p.public_key).map_err(|e| JoinError::invalid("payload.public_key", e))?;
    let name = t.name.as_str();
    match env.store.keypair_binding(name).await? {
        Some(b) if b.locked => {
            return Err(JoinError::Rejected(format!("the key bound to join token {name:?} is locked after a copy was detected; delete and recreate the join token")))
        }
        Some(b) if !same_key(&b.public_key, &p.public_key) => {
            return Err(JoinError::Rejected(format!("this public key is not the one bound to join token {name:?}")))
        }
        None if configured.as_deref().is_some_and(|c| !same_key(c, &p.public_key)) => {
            return Err(JoinError::Rejected(format!("this public key is not config.public_key of join token {name:?}")))
        }
        _ => {}
    }
    let (id, nonce) = (random_b64(24)?, random_b64(32)?);
    let state = serde_json::to_vec(&State { public_key: p.public_key, nonce: nonce.clone() }).map_err(|e| JoinError::Internal(e.to_string()))?;
    let expires_at = env.now + TTL_SECS;
    env.store_challenge(&id, Pending { method: METHOD.into(), token_name: name.into(), state, expires_at }).await?;
    let payload = serde_json::to_vec(&ChallengePayload { nonce }).map_err(|e| JoinError::Internal(e.to_string()))?;
    Ok(Issued { id, payload, expires_at })
}

/// `Join`: verifies the signed challenge, registers the key on first join,
/// advances the join sequence (detecting copies).
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    let configured = check_config(t)?;
    let name = t.name.as_str();
    let pending = env.take_challenge(&input.challenge_id, METHOD, name).await?;
    let state: State = serde_json::from_slice(&pending.state).map_err(|e| JoinError::Internal(e.to_string()))?;
    let answer: AnswerPayload = serde_json::from_slice(&input.payload)
        .map_err(|e| JoinError::invalid("payload", format!("expected {{\"sequence\": N, \"signature\": BASE64}}: {e}")))?;
    check_attempt(&answer.attempt)?;
    let key = parse_public_key(&state.public_key).map_err(JoinError::Internal)?;
    let sig = STANDARD.decode(&answer.signature).map_err(|_| JoinError::invalid("payload.signature", "not base64"))?;
    if !key.verify(&signed_message(name, &input.challenge_id, &state.nonce, answer.sequence, &answer.attempt), &sig) {
        return Err(JoinError::Rejected("the challenge signature does not verify with the presented key".into()));
    }
    if env.store.keypair_binding(name).await?.is_none() {
        register(t, input, env, configured.as_deref(), &state.public_key).await?;
    }
    // Counts the join against max_uses in the same transaction.
    let sequence = env.store.advance_keypair(name, &state.public_key, answer.sequence, &answer.attempt, env.now).await.map_err(store_err)?;
    let der = STANDARD.decode(&state.public_key).unwrap_or_default();
    let mut a = Attributes::new();
    a.insert("public_key_sha256".into(), hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)));
    a.insert("sequence".into(), sequence.to_string());
    Ok(a)
}

async fn register(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>, configured: Option<&str>, key: &str) -> Result<(), JoinError> {
    let name = t.name.as_str();
    let secret_hash = match configured {
        Some(c) if same_key(c, key) => None,
        Some(_) => return Err(JoinError::Rejected(format!("this public key is not config.public_key of join token {name:?}"))),
        None if input.token.is_empty() => {
            return Err(JoinError::Rejected(format!(
                "join token {name:?} has no bound key yet: the first join needs the token's registration secret in `token` (or set config.public_key)"
            )))
        }
        None if input.token.len() > 512 => return Err(JoinError::invalid("token", "too long to be a registration secret")),
        // One-time: spent atomically with the binding.
        None => Some(TokenSecret::new(input.token.clone()).hash()),
    };
    env.store.bind_keypair(name, key, secret_hash.as_deref(), env.now).await.map_err(|e| match e {
        StoreError::TokenRejected(r) => JoinError::Rejected(format!("join token {name:?}: {r}")),
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_public_key_pem_is_read_by_label_not_decoded_as_one_blob() {
        // The old reader kept only a value starting with BEGIN PUBLIC KEY and
        // decoded every non-`-----` line as one key, so a comment line or a second
        // block broke it. Now the first PUBLIC KEY block is the key.
        let spki = [&sigil_core::join_wire::bound_keypair::ED25519_SPKI_PREFIX[..], &[7u8; 32]].concat();
        let b64 = STANDARD.encode(&spki);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        let t = JoinToken::for_test("bound_keypair", &[("public_key", &format!("agent key of edge-1\n{pem}{pem}"))], &[]);
        assert_eq!(configured_key(&t).unwrap(), Some(b64));
        let t = JoinToken::for_test("bound_keypair", &[("public_key", "-----BEGIN PUBLIC KEY-----\nAAAA\n")], &[]);
        let e = configured_key(&t).unwrap_err().to_string();
        assert!(e.contains("config.public_key") && e.contains("no END line"), "{e}");
    }

    #[test]
    fn only_ed25519_and_p256_keys_are_accepted() {
        assert!(parse_public_key("AAAA").is_err());
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair as _;
        let der = rsa.public_key().as_der().unwrap();
        assert!(parse_public_key(&STANDARD.encode(der.as_ref())).unwrap_err().contains("not accepted"));
    }
}
