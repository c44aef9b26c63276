//! Bound-keypair join, agent half: the key, the saved join state and the two
//! calls. The wire format and signed message: `sigil_core::join_wire::bound_keypair`.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sigil_core::join_wire::bound_keypair::{attempt_is_valid, signed_message, AnswerPayload, BeginPayload, ChallengePayload, ED25519_SPKI_PREFIX, METHOD};

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
        match sigil_core::pem::private_key(pem, "the bound key").map_err(|e| ClientError::Key(e.to_string()))? {
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
        if attempt.as_deref().is_some_and(|a| !attempt_is_valid(a) || a.is_empty()) || parts.next().is_some() {
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
        let mut b = [0u8; 18];
        aws_lc_rs::rand::fill(&mut b).map_err(|_| ClientError::Key("system RNG failed".into()))?;
        let attempt = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
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

    struct Verifier(Vec<u8>);
    impl Verifier {
        fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
            aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &self.0).verify(msg, sig).is_ok()
        }
    }

    #[test]
    fn a_key_file_with_another_block_is_read_by_label_not_decoded_as_one_blob() {
        // The old reader dropped every `-----` line and decoded the rest as one key.
        let k = AgentKey::generate().unwrap();
        let other = sigil_schemas::identity::to_pem("CERTIFICATE", b"not a key");
        let k2 = AgentKey::from_pem(&format!("{other}{}", k.to_pem())).unwrap();
        assert_eq!(k.public_key_b64(), k2.public_key_b64());
        let e = AgentKey::from_pem(&other).unwrap_err().to_string();
        assert!(e.contains("the bound key holds no private key"), "{e}");
    }

    #[test]
    fn agent_keys_round_trip_and_their_signatures_verify_only_for_the_signed_challenge() {
        let k = AgentKey::generate().unwrap();
        let k2 = AgentKey::from_pem(&k.to_pem()).unwrap();
        assert_eq!(k.public_key_b64(), k2.public_key_b64());
        assert!(!format!("{k:?}").contains("PRIVATE"));
        let spki = STANDARD.decode(k.public_key_b64()).unwrap();
        let pk = Verifier(spki[ED25519_SPKI_PREFIX.len()..].to_vec());
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
}
