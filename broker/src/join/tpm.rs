//! TPM join (`tpm`): the agent proves it runs on a known TPM.
//!
//! 1. `BeginJoin` carries the TPM's endorsement key (EK) public area, its EK
//!    certificate when the TPM has one, and a fresh attestation key (AK) public
//!    area. The broker checks both keys' attributes (the AK must be a restricted
//!    signing key that cannot leave the TPM), derives the claims
//!    `ek_public_hash` (hex SHA-256 of the EK's PKIX SubjectPublicKeyInfo DER)
//!    and, when the EK certificate chains to the token's `ek_ca`,
//!    `ek_cert_verified = "true"`, `ek_cert_serial`, `ek_cert_issuer`; it
//!    matches them against the token's allow rules *before* issuing anything.
//! 2. It then makes a credential (`tpm_credential.rs`) holding a random secret
//!    that only the TPM holding that EK, with that AK loaded, can recover.
//! 3. The agent runs `TPM2_ActivateCredential` and sends the secret with `Join`.
//!    The challenge is single use: a replayed activation finds nothing. The
//!    store keeps only the secret's SHA-256 (`State`).

use super::challenge::{Issued, Pending, TTL_SECS};
use super::tpm_credential::{make_credential, CredentialError, DIGEST_LEN};
use super::tpm_ek_cert;
pub use sigil_core::join_wire::tpm::{BeginPayload, ChallengePayload, MAX_BEGIN_BYTES, METHOD};
use super::tpm_wire::{attr, KeyParams, TpmPublic, TpmWireError};
use super::{nonce, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::join_token::match_rules;
use sigil_core::domain::{Attributes, JoinToken};
use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// What the broker remembers between the two calls, in the store: the
/// credential's secret only as its SHA-256 (the answer must equal the secret,
/// so a reader of the database could answer with the secret itself, never with
/// its hash), and the claims about the EK (public).
#[derive(Serialize, Deserialize)]
struct State {
    secret_sha256: Vec<u8>,
    claims: Attributes,
}

fn sha256(b: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, b).as_ref().to_vec()
}

impl From<TpmWireError> for JoinError {
    fn from(e: TpmWireError) -> Self {
        JoinError::invalid("payload", e.to_string())
    }
}

impl From<CredentialError> for JoinError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::UnsupportedEk(_) => JoinError::invalid("payload", e.to_string()),
            _ => JoinError::Internal(e.to_string()),
        }
    }
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, JoinError> {
    B64.decode(s).map_err(|_| JoinError::invalid("payload", format!("{field} is not base64")))
}

/// `BeginJoin`: checks the TPM against the rules and returns the credential to activate.
pub async fn begin(env: &JoinEnv<'_>, token: &JoinToken, payload: &[u8]) -> Result<Issued, JoinError> {
    if payload.len() > MAX_BEGIN_BYTES {
        return Err(JoinError::invalid("payload", format!("larger than {MAX_BEGIN_BYTES} bytes")));
    }
    let req: BeginPayload = serde_json::from_slice(payload).map_err(|e| JoinError::invalid("payload", e.to_string()))?;
    let ek = TpmPublic::parse(&b64("ek_public", &req.ek_public)?, "ek_public")?;
    let ak = TpmPublic::parse(&b64("ak_public", &req.ak_public)?, "ak_public")?;
    check_keys(&ek, &ak)?;
    let (claims, cert_note) = ek_claims(&ek, &b64("ek_certificate", &req.ek_certificate)?, token, env.now)?;
    match_rules(&token.allow, &claims)
        .map_err(|why| JoinError::Rejected(format!("TPM with ek_public_hash {}: {why}{cert_note}", claims["ek_public_hash"])))?;

    let secret = nonce::random_bytes(DIGEST_LEN)?;
    let blob = make_credential(&ek, &ak.name()?, &secret, &nonce::random_bytes(DIGEST_LEN)?)?;
    let state = serde_json::to_vec(&State { secret_sha256: sha256(&secret), claims }).map_err(|e| JoinError::Internal(e.to_string()))?;
    let id = nonce::random_b64(18)?;
    let expires_at = env.now + TTL_SECS;
    let pending = Pending { method: METHOD.into(), token_name: token.name.to_string(), state, expires_at };
    env.store_challenge(&id, pending).await?;
    let answer = ChallengePayload { id_object: B64.encode(&blob.id_object), encrypted_secret: B64.encode(&blob.encrypted_secret) };
    let payload = serde_json::to_vec(&answer).map_err(|e| JoinError::Internal(e.to_string()))?;
    Ok(Issued { id, payload, expires_at })
}

/// `Join`: the activated secret must match the pending challenge (single use).
pub async fn verify(token: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    let pending = env.take_challenge(&input.challenge_id, METHOD, token.name.as_str()).await?;
    let state: State = serde_json::from_slice(&pending.state).map_err(|e| JoinError::Internal(e.to_string()))?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(&sha256(&input.payload), &state.secret_sha256).is_err() {
        return Err(JoinError::Rejected("credential activation failed: the secret does not match (the AK is not in the TPM holding that EK)".into()));
    }
    match_rules(&token.allow, &state.claims).map_err(JoinError::Rejected)?;
    Ok(state.claims)
}

/// The EK must be a restricted decryption key and the AK a restricted signing
/// key, both generated in and bound to the TPM.
fn check_keys(ek: &TpmPublic, ak: &TpmPublic) -> Result<(), JoinError> {
    let bound = attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN;
    if !ek.has(bound | attr::RESTRICTED | attr::DECRYPT, attr::SIGN) {
        return Err(JoinError::invalid("payload", "ek_public is not a restricted decryption key fixed to the TPM"));
    }
    if !ak.has(bound | attr::RESTRICTED | attr::SIGN, attr::DECRYPT) {
        return Err(JoinError::invalid("payload", "ak_public must be a restricted signing key with fixedTPM, fixedParent and sensitiveDataOrigin"));
    }
    Ok(())
}

/// Claims about the EK, and a note on why its certificate was not accepted (if so).
fn ek_claims(ek: &TpmPublic, cert: &[u8], token: &JoinToken, now: i64) -> Result<(Attributes, String), JoinError> {
    let KeyParams::Rsa { modulus, exponent, .. } = &ek.params else {
        return Err(JoinError::invalid("payload", "only RSA endorsement keys are supported"));
    };
    let exponent = if *exponent == 0 { 65537 } else { *exponent };
    let mut claims = Attributes::new();
    claims.insert("ek_public_hash".into(), ek_public_hash(modulus, exponent)?);
    let mut note = String::new();
    if !cert.is_empty() {
        match tpm_ek_cert::verify(cert, modulus, exponent, token.config.get("ek_ca").map(String::as_str), now) {
            Ok(info) => {
                claims.insert("ek_cert_verified".into(), "true".into());
                claims.insert("ek_cert_serial".into(), info.serial);
                claims.insert("ek_cert_issuer".into(), info.issuer);
            }
            Err(e) => note = format!(" ({e})"),
        }
    }
    Ok((claims, note))
}

/// Hex SHA-256 of the EK's PKIX SubjectPublicKeyInfo DER (what `openssl pkey
/// -pubin -outform DER | sha256sum` prints for the EK certificate's key).
pub fn ek_public_hash(modulus: &[u8], exponent: u32) -> Result<String, JoinError> {
    let e = exponent.to_be_bytes();
    let e = &e[e.iter().position(|b| *b != 0).unwrap_or(3)..];
    let n = &modulus[modulus.iter().position(|b| *b != 0).unwrap_or(0)..];
    let der = aws_lc_rs::rsa::PublicKeyComponents { n, e }
        .as_der()
        .map_err(|_| JoinError::invalid("payload", "EK RSA public key rejected"))?;
    Ok(hex::encode(digest::digest(&digest::SHA256, der.as_ref())))
}
