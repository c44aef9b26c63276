//! Where the CA and JWT private keys live, and the one signing interface the
//! CAs use whatever the place.
//!
//! Two backends:
//! - **sealed** (default): the key is generated in the process and stored in
//!   `ca_keys.sealed_key`, sealed with the seal key ([`super::seal`]).
//! - **pkcs11**: the key is generated inside a PKCS#11 token (an HSM, or
//!   SoftHSM2 in tests) as a non-extractable, sensitive token object and
//!   every signature is a `C_Sign`; `ca_keys` holds only a reference
//!   ([`KeyRef`]: token label and serial, `CKA_ID`, public key) and an empty
//!   `sealed_key`.
//!
//! Which backend *generates* new keys is configuration (`keys.backend`);
//! which one *opens* a stored key is decided by the row itself (a
//! `key_ref` means the token), so a store can hold keys of both (e.g. across a
//! rotation that moves the CA into an HSM).
//!
//! Every signature leaves [`KeySigner::sign`] in JWS form (`r || s` for
//! ECDSA, PKCS#1 v1.5 for RSA); [`RcgenKey`] re-encodes ECDSA as DER for X.509.

pub mod config;
pub mod der;
pub mod pkcs11;
pub mod sealed;

use super::keys::{KeyAlg, KeyError};
use crate::store::CaKeyRecord;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt::Debug;
use std::sync::Arc;

/// A key backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Sealed key handling.
    #[error(transparent)]
    Seal(#[from] super::seal::SealError),
    /// Key parsing or signing.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The PKCS#11 module, token or key (never carries the PIN).
    #[error(transparent)]
    Pkcs11(#[from] pkcs11::Pkcs11Error),
    /// The row names a token key but no PKCS#11 backend is configured.
    #[error("CA key {0} is in a PKCS#11 token: configure `keys: {{backend: pkcs11, ...}}` (docs/hsm.md)")]
    NoPkcs11(String),
    /// The row's key reference does not parse.
    #[error("CA key {0} has an unreadable key reference: {1}")]
    BadRef(String, String),
}

/// A public key in the two forms the CAs need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// What X.509 puts in the SubjectPublicKeyInfo BIT STRING: the
    /// uncompressed EC point, or PKCS#1 `RSAPublicKey` DER.
    pub raw: Vec<u8>,
    /// JWK members (kty and key material).
    pub jwk: Value,
}

impl PublicKey {
    /// From an uncompressed P-256 point.
    pub fn ec(point: Vec<u8>) -> Self {
        let (x, y) = if point.len() == 65 { (&point[1..33], &point[33..]) } else { (&point[..0], &point[..0]) };
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": B64URL.encode(x), "y": B64URL.encode(y)});
        Self { raw: point, jwk }
    }

    /// From the 32 bytes of an Ed25519 public key.
    pub fn ed25519(raw: Vec<u8>) -> Self {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": B64URL.encode(&raw)});
        Self { raw, jwk }
    }

    /// The key as an OpenSSH public key (SSH CAs).
    pub fn ssh(&self) -> Result<sigil_core::ssh::PublicKey, sigil_core::ssh::SshError> {
        use sigil_core::ssh::PublicKey as Ssh;
        let field = |name: &str| self.jwk.get(name).and_then(Value::as_str).and_then(|v| B64URL.decode(v).ok()).unwrap_or_default();
        match self.jwk.get("kty").and_then(Value::as_str) {
            Some("OKP") => Ssh::ed25519(&self.raw),
            Some("EC") => Ssh::ecdsa(&self.raw),
            _ => Ssh::rsa(&field("n"), &field("e")),
        }
    }

    /// From RSA modulus and exponent (big-endian).
    pub fn rsa(modulus: &[u8], exponent: &[u8]) -> Self {
        let strip = |b: &[u8]| b.iter().skip_while(|&&x| x == 0).copied().collect::<Vec<u8>>();
        let jwk = json!({"kty": "RSA", "n": B64URL.encode(strip(modulus)), "e": B64URL.encode(strip(exponent))});
        Self { raw: der::rsa_public_key(modulus, exponent), jwk }
    }
}

/// A private key the CAs can sign with, wherever it lives.
pub trait KeySigner: Send + Sync + Debug {
    /// The algorithm.
    fn alg(&self) -> KeyAlg;
    /// The public key.
    fn public_key(&self) -> &PublicKey;
    /// Signs `msg` (hashing with SHA-256 is part of the algorithm): `r || s`
    /// for ECDSA, the PKCS#1 v1.5 signature for RSA.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// What the store keeps of a token key (`ca_keys.key_ref`, JSON). No key
/// material: the module path is configuration, the PIN a secret of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// Always `pkcs11`.
    pub backend: String,
    /// Token label when the key was made.
    pub token_label: String,
    /// Token serial when the key was made.
    pub token_serial: String,
    /// `CKA_ID` of the key pair, hex.
    pub id: String,
    /// `CKA_LABEL` of the key pair.
    pub label: String,
    /// The public key (`PublicKey::raw`), base64url: checked against the
    /// token's at every open, so another key under the same id is refused.
    pub public_key: String,
}

/// A freshly generated key: its signer and what the row stores.
pub struct NewKey {
    /// Signs with it.
    pub signer: Arc<dyn KeySigner>,
    /// Seals it for the row once its id is known (empty for a token key).
    sealed: Option<super::keys::PrivateKey>,
    /// `key_ref` for the row (empty for a sealed key).
    pub key_ref: String,
}

impl Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewKey({:?})", self.signer)
    }
}

/// The key backends of one broker: the sealed one always (to open sealed
/// rows), the PKCS#11 one when configured.
#[derive(Debug)]
pub struct KeyStore {
    seal: super::seal::SealKey,
    pkcs11: Option<pkcs11::Pkcs11Backend>,
}

impl KeyStore {
    /// Sealed keys only (the default).
    pub fn sealed(seal: super::seal::SealKey) -> Self {
        Self { seal, pkcs11: None }
    }

    /// New keys go to this token; sealed rows still open with `seal`.
    pub fn with_pkcs11(seal: super::seal::SealKey, backend: pkcs11::Pkcs11Backend) -> Self {
        Self { seal, pkcs11: Some(backend) }
    }

    /// Where new keys are generated, for logs: `sealed` or `pkcs11`.
    pub fn generating_backend(&self) -> &'static str {
        if self.pkcs11.is_some() {
            "pkcs11"
        } else {
            "sealed"
        }
    }

    /// Generates a key for `purpose` in the configured backend.
    pub fn generate(&self, purpose: &str, alg: KeyAlg) -> Result<NewKey, BackendError> {
        match &self.pkcs11 {
            None => {
                let (signer, key) = sealed::generate(alg)?;
                Ok(NewKey { signer, sealed: Some(key), key_ref: String::new() })
            }
            Some(p) => {
                let (signer, r) = p.generate(purpose, alg)?;
                let key_ref = serde_json::to_string(&r).map_err(|e| BackendError::BadRef(r.id.clone(), e.to_string()))?;
                Ok(NewKey { signer, sealed: None, key_ref })
            }
        }
    }

    /// The `sealed_key` column for `key`, stored under `id`.
    pub fn sealed_blob(&self, id: &str, key: &NewKey) -> Result<Vec<u8>, BackendError> {
        match &key.sealed {
            Some(k) => Ok(self.seal.seal(id, k.pkcs8())?),
            None => Ok(Vec::new()),
        }
    }

    /// Removes a key generated but not stored (another replica stored its own
    /// first). A sealed key only lived in memory; a token key is destroyed,
    /// and a failure to is only logged (an orphan key signs nothing).
    pub fn discard(&self, key: &NewKey) {
        let (Some(p), false) = (&self.pkcs11, key.key_ref.is_empty()) else { return };
        let destroyed = serde_json::from_str::<KeyRef>(&key.key_ref).map_err(|e| e.to_string()).and_then(|r| p.destroy(&r).map_err(|e| e.to_string()));
        if let Err(e) = destroyed {
            tracing::warn!(error = %e, "could not destroy an unused PKCS#11 key");
        }
    }

    /// Destroys the token object of a stored row that will never sign or be
    /// published again (rolled back or retired). A sealed key has nothing
    /// outside its row. A failure is logged, never returned: the row's state
    /// already keeps the key out of use.
    pub fn destroy_stored(&self, r: &CaKeyRecord) {
        if r.key_ref.is_empty() {
            return;
        }
        let destroyed = match (&self.pkcs11, serde_json::from_str::<KeyRef>(&r.key_ref)) {
            (Some(p), Ok(k)) => p.destroy(&k).map_err(|e| e.to_string()),
            (None, _) => Err("no PKCS#11 backend is configured".into()),
            (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(e) = destroyed {
            tracing::warn!(key = %r.id, error = %e, "could not destroy the PKCS#11 object of a retired or rolled back CA key");
        }
    }

    /// Opens the key of a stored row.
    pub fn open(&self, r: &CaKeyRecord) -> Result<Arc<dyn KeySigner>, BackendError> {
        let alg = KeyAlg::parse(&r.alg).ok_or_else(|| BackendError::BadRef(r.id.clone(), format!("unknown alg {}", r.alg)))?;
        if r.key_ref.is_empty() {
            return sealed::open(alg, self.seal.unseal(&r.id, &r.sealed_key)?);
        }
        let key_ref: KeyRef = serde_json::from_str(&r.key_ref).map_err(|e| BackendError::BadRef(r.id.clone(), e.to_string()))?;
        let p = self.pkcs11.as_ref().ok_or_else(|| BackendError::NoPkcs11(r.id.clone()))?;
        Ok(p.open(alg, &key_ref)?)
    }
}

/// A [`KeySigner`] as rcgen's signing key, for X.509 issuance.
#[derive(Debug, Clone)]
pub struct RcgenKey(pub Arc<dyn KeySigner>);

impl rcgen::PublicKeyData for RcgenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0.public_key().raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.0.alg() {
            KeyAlg::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlg::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            KeyAlg::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl rcgen::SigningKey for RcgenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let sig = self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)?;
        match self.0.alg() {
            KeyAlg::EcP256 => der::ecdsa_raw_to_der(&sig).ok_or(rcgen::Error::RemoteKeyError),
            KeyAlg::Rsa2048 | KeyAlg::Ed25519 => Ok(sig),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::seal::SealKey;

    fn store() -> KeyStore {
        KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap())
    }

    fn row(key_ref: &str, sealed_key: Vec<u8>) -> CaKeyRecord {
        CaKeyRecord {
            id: "k1".into(),
            purpose: "x509-svid".into(),
            alg: "ec-p256".into(),
            sealed_key,
            key_ref: key_ref.into(),
            cert_der: None,
            created_at: 1,
            not_after: 2,
            state: "active".into(),
            activated_at: 0,
            deactivated_at: 0,
        }
    }

    #[test]
    fn a_sealed_key_round_trips_and_signs_like_its_public_key_says() {
        let keys = store();
        for alg in [KeyAlg::EcP256, KeyAlg::Rsa2048, KeyAlg::Ed25519] {
            let new = keys.generate("x509-svid", alg).unwrap();
            assert!(new.key_ref.is_empty());
            let blob = keys.sealed_blob("k1", &new).unwrap();
            let mut r = row("", blob);
            r.alg = alg.as_str().into();
            let opened = keys.open(&r).unwrap();
            assert_eq!(opened.public_key(), new.signer.public_key());
            let sig = opened.sign(b"msg").unwrap();
            use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256};
            let raw = &opened.public_key().raw;
            match alg {
                KeyAlg::EcP256 => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, raw).verify(b"msg", &sig).unwrap(),
                KeyAlg::Rsa2048 => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, raw).verify(b"msg", &sig).unwrap(),
                KeyAlg::Ed25519 => UnparsedPublicKey::new(&ED25519, raw).verify(b"msg", &sig).unwrap(),
            }
        }
    }

    #[test]
    fn a_token_key_row_without_a_configured_token_is_a_clear_error() {
        let r = row(r#"{"backend":"pkcs11","token_label":"t","token_serial":"s","id":"00","label":"l","public_key":"AA"}"#, vec![]);
        let err = store().open(&r).unwrap_err().to_string();
        assert!(err.contains("is in a PKCS#11 token") && err.contains("backend: pkcs11"), "{err}");
        let err = store().open(&row("{not json", vec![])).unwrap_err().to_string();
        assert!(err.contains("unreadable key reference"), "{err}");
    }
}
