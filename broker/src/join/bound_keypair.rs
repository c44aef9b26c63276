//! Bound-keypair join: the agent holds a private key; the join token binds its
//! public key, either pre-registered by the operator (`config.public_key`) or
//! registered on first join with the token's one-time secret. Every join
//! signs a fresh broker challenge, and carries the join sequence number the
//! agent last saw: the broker advances it by one per join, so when a copy of
//! the key joins, one of the two agents presents a stale number, the binding is
//! locked and the join refused.
//!
//! Both sides of the protocol live here (the agent half is [`AgentKey`] and
//! [`join`]) so the signed message is defined once.
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
use crate::domain::{Attributes, JoinToken, TokenSecret};
use crate::store::StoreError;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The method name.
pub const METHOD: &str = crate::domain::Method::BoundKeypair.name();
const DOMAIN: &str = "sigil-bound-keypair-v1";
const DOMAIN_V2: &str = "sigil-bound-keypair-v2";
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

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

fn check_attempt(a: &str) -> Result<(), JoinError> {
    if a.len() > MAX_ATTEMPT_LEN || !a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(JoinError::invalid("payload.attempt", format!("must be at most {MAX_ATTEMPT_LEN} base64url characters")));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct State {
    public_key: String,
    nonce: String,
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
    let b64: String = if crate::pem::looks_like_pem(v.as_bytes()) {
        STANDARD.encode(crate::pem::public_key(v, "the value").map_err(|e| JoinError::invalid("config.public_key", e.to_string()))?)
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
    env.challenges
        .insert(id.clone(), Pending { method: METHOD.into(), token_name: name.into(), state, expires_at }, env.peer, env.now)
        .map_err(JoinError::Rejected)?;
    let payload = serde_json::to_vec(&ChallengePayload { nonce }).map_err(|e| JoinError::Internal(e.to_string()))?;
    Ok(Issued { id, payload, expires_at })
}

/// `Join`: verifies the signed challenge, registers the key on first join,
/// advances the join sequence (detecting copies).
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    let configured = check_config(t)?;
    let name = t.name.as_str();
    let pending = env
        .challenges
        .take(&input.challenge_id, env.now)
        .filter(|p| p.method == METHOD && p.token_name == name)
        .ok_or_else(|| JoinError::Rejected("unknown, used or expired challenge_id; call BeginJoin again".into()))?;
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

// ------------------------------------------------------------------ agent side

/// The agent's bound key (Ed25519, PKCS#8). Debug never shows the key.
pub struct AgentKey {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey").field("public_key", &self.public_key_b64()).finish()
    }
}

/// Agent-side failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The key file is unusable.
    #[error("invalid bound key: {0}")]
    Key(String),
    /// The broker refused or failed (its message says why).
    #[error("broker answered {:?}: {}", .0.code(), .0.message())]
    Broker(tonic::Status),
    /// The broker's challenge is malformed.
    #[error("malformed challenge from broker: {0}")]
    Challenge(String),
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        Self::Broker(s)
    }
}

impl AgentKey {
    /// A new random key.
    pub fn generate() -> Result<Self, ClientError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).map_err(|_| ClientError::Key("RNG failed".into()))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// From PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, ClientError> {
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|e| ClientError::Key(e.to_string()))?;
        Ok(Self { pkcs8: der.to_vec(), pair })
    }

    /// From a `PRIVATE KEY` PEM.
    pub fn from_pem(pem: &str) -> Result<Self, ClientError> {
        match crate::pem::private_key(pem, "the bound key").map_err(|e| ClientError::Key(e.to_string()))? {
            rustls_pki_types::PrivateKeyDer::Pkcs8(k) => Self::from_pkcs8(k.secret_pkcs8_der()),
            _ => Err(ClientError::Key("the bound key is not a PKCS#8 PRIVATE KEY".into())),
        }
    }

    /// As `PRIVATE KEY` PEM (a secret: write it 0600).
    pub fn to_pem(&self) -> String {
        sigil_schemas::identity::to_pem("PRIVATE KEY", &self.pkcs8)
    }

    /// Base64 SPKI DER of the public key (what `config.public_key` takes).
    pub fn public_key_b64(&self) -> String {
        STANDARD.encode([&ED25519_SPKI_PREFIX[..], self.pair.public_key().as_ref()].concat())
    }

    /// The `BeginJoin` payload.
    pub fn begin_payload(&self) -> Vec<u8> {
        serde_json::to_vec(&BeginPayload { public_key: self.public_key_b64() }).unwrap_or_default()
    }

    /// The `Join` payload answering a challenge (`attempt`: see [`JoinState`];
    /// empty for the version-1 answer).
    pub fn answer(&self, token_name: &str, challenge_id: &str, challenge: &[u8], sequence: i64, attempt: &str) -> Result<Vec<u8>, ClientError> {
        let c: ChallengePayload = serde_json::from_slice(challenge).map_err(|e| ClientError::Challenge(e.to_string()))?;
        let sig = self.pair.sign(&signed_message(token_name, challenge_id, &c.nonce, sequence, attempt));
        serde_json::to_vec(&AnswerPayload { sequence, attempt: attempt.into(), signature: STANDARD.encode(sig.as_ref()) })
            .map_err(|e| ClientError::Challenge(e.to_string()))
    }
}

/// What the agent keeps between joins: the sequence the broker last gave and,
/// while a join is under way, its attempt id. Text form: `N` at rest,
/// `N ATTEMPT` from just before a join until its answer is saved.
///
/// Use: [`JoinState::parse`] the saved text (empty or absent: the default),
/// [`JoinState::start`] and save the result *before* joining, join with it,
/// save [`JoinState::after_join`] on success. After a lost answer, the next
/// join reuses the saved attempt and is recognised as a retry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinState {
    /// Join sequence the broker last gave (0 before the first join).
    pub sequence: i64,
    /// Attempt id of the join under way, if any.
    pub attempt: Option<String>,
}

impl JoinState {
    /// Parses the saved text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split_whitespace();
        let sequence = match parts.next() {
            None => return Ok(Self::default()),
            Some(n) => n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or("does not hold a join sequence number")?,
        };
        let attempt = parts.next().map(str::to_string);
        if attempt.as_deref().is_some_and(|a| check_attempt(a).is_err() || a.is_empty()) || parts.next().is_some() {
            return Err("does not hold a join sequence number and attempt id".into());
        }
        Ok(Self { sequence, attempt })
    }

    /// The text to save.
    pub fn render(&self) -> String {
        match &self.attempt {
            Some(a) => format!("{} {a}", self.sequence),
            None => self.sequence.to_string(),
        }
    }

    /// The state to save before a join: the pending attempt, or a new one.
    pub fn start(&self) -> Result<Self, ClientError> {
        if self.attempt.is_some() {
            return Ok(self.clone());
        }
        let attempt = random_b64(18).map_err(|e| ClientError::Key(e.to_string()))?;
        Ok(Self { sequence: self.sequence, attempt: Some(attempt) })
    }

    /// The state to save after a successful join (no attempt under way).
    pub fn after_join(&self) -> Self {
        Self { sequence: self.sequence + 1, attempt: None }
    }
}

/// Joins with a bound key: `BeginJoin`, sign, `Join`. `state` is what the
/// agent saved ([`JoinState::start`] of it, saved before this call); on
/// success the new sequence is `state.sequence + 1` and must be saved
/// ([`JoinState::after_join`]) before the next join. `registration_secret` is
/// the join token's secret for a first join without a pre-registered key.
pub async fn join(
    client: &mut sigil_schemas::sigil::v1::sigil_client::SigilClient<tonic::transport::Channel>,
    key: &AgentKey,
    token_name: &str,
    state: &JoinState,
    registration_secret: Option<&str>,
    csr: Vec<u8>,
    ttl_seconds: i64,
) -> Result<(sigil_schemas::sigil::v1::IdentityResponse, i64), ClientError> {
    use sigil_schemas::sigil::v1 as pb;
    let sequence = state.sequence;
    let c = client
        .begin_join(pb::BeginJoinRequest { method: METHOD.into(), token_name: token_name.into(), payload: key.begin_payload() })
        .await?
        .into_inner();
    let payload = key.answer(token_name, &c.challenge_id, &c.payload, sequence, state.attempt.as_deref().unwrap_or_default())?;
    let r = client
        .join(pb::JoinRequest {
            method: METHOD.into(),
            token: registration_secret.unwrap_or_default().into(),
            token_name: token_name.into(),
            csr,
            ttl_seconds,
            payload,
            challenge_id: c.challenge_id,
        })
        .await?
        .into_inner();
    Ok((r, sequence + 1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_file_with_another_block_is_read_by_label_not_decoded_as_one_blob() {
        let k = AgentKey::generate().unwrap();
        let other = sigil_schemas::identity::to_pem("CERTIFICATE", b"not a key");
        let k2 = AgentKey::from_pem(&format!("{other}{}", k.to_pem())).unwrap();
        assert_eq!(k.public_key_b64(), k2.public_key_b64());
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", k.public_key_b64());
        let t = JoinToken::for_test(METHOD, &[("public_key", &format!("comment line\n{pem}{pem}"))], &[]);
        assert_eq!(configured_key(&t).unwrap(), Some(k.public_key_b64()));
    }

    #[test]
    fn agent_keys_round_trip_and_their_signatures_verify_only_for_the_signed_challenge() {
        let k = AgentKey::generate().unwrap();
        let k2 = AgentKey::from_pem(&k.to_pem()).unwrap();
        assert_eq!(k.public_key_b64(), k2.public_key_b64());
        assert!(!format!("{k:?}").contains("PRIVATE"));
        let pk = parse_public_key(&k.public_key_b64()).unwrap();
        let answer: AnswerPayload = serde_json::from_slice(&k.answer("t", "c", br#"{"nonce":"n"}"#, 3, "").unwrap()).unwrap();
        let sig = STANDARD.decode(answer.signature).unwrap();
        assert!(pk.verify(&signed_message("t", "c", "n", 3, ""), &sig));
        assert!(!pk.verify(&signed_message("t", "c", "n", 4, ""), &sig));
        assert!(!pk.verify(&signed_message("other", "c", "n", 3, ""), &sig));
        let answer: AnswerPayload = serde_json::from_slice(&k.answer("t", "c", br#"{"nonce":"n"}"#, 3, "a1").unwrap()).unwrap();
        let sig = STANDARD.decode(answer.signature).unwrap();
        assert!(pk.verify(&signed_message("t", "c", "n", 3, "a1"), &sig));
        assert!(!pk.verify(&signed_message("t", "c", "n", 3, "a2"), &sig));
        assert!(!pk.verify(&signed_message("t", "c", "n", 3, ""), &sig), "the attempt cannot be stripped");
    }

    #[test]
    fn join_state_round_trips_and_keeps_its_attempt_until_the_join_succeeds() {
        assert_eq!(JoinState::parse("").unwrap(), JoinState::default());
        assert_eq!(JoinState::parse("7\n").unwrap(), JoinState { sequence: 7, attempt: None });
        let started = JoinState::parse("7").unwrap().start().unwrap();
        let saved = started.render();
        assert_eq!(JoinState::parse(&saved).unwrap(), started);
        assert_eq!(started.start().unwrap(), started, "a retry reuses the attempt");
        assert_eq!(started.after_join(), JoinState { sequence: 8, attempt: None });
        for bad in ["seven", "-1", "7 a b", "7 a/b"] {
            assert!(JoinState::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_ed25519_and_p256_keys_are_accepted() {
        assert!(parse_public_key("AAAA").is_err());
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        use aws_lc_rs::encoding::AsDer;
        let der = rsa.public_key().as_der().unwrap();
        assert!(parse_public_key(&STANDARD.encode(der.as_ref())).unwrap_err().contains("not accepted"));
    }
}
