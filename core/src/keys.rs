//! Key material for the CAs: generation, PKCS#8 round trip, public JWK forms.

use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};
use std::fmt;

/// Key algorithms Sigil issues with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    /// ECDSA P-256 with SHA-256 (X.509 default; JWT `ES256`).
    EcP256,
    /// RSA 2048 PKCS#1 v1.5 with SHA-256 (JWT default `RS256`).
    Rsa2048,
    /// Ed25519 (SSH CAs only: the X.509 and JWT settings refuse it).
    Ed25519,
}

impl KeyAlg {
    /// Stable name used in config and store.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::EcP256 => "ec-p256",
            KeyAlg::Rsa2048 => "rsa-2048",
            KeyAlg::Ed25519 => "ed25519",
        }
    }

    /// Parses a config/store name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ec-p256" | "ES256" | "ecdsa" | "ec" => Some(KeyAlg::EcP256),
            "rsa-2048" | "RS256" | "rsa" => Some(KeyAlg::Rsa2048),
            "ed25519" | "EdDSA" => Some(KeyAlg::Ed25519),
            _ => None,
        }
    }

    /// JWS algorithm name.
    pub fn jws_alg(self) -> &'static str {
        match self {
            KeyAlg::EcP256 => "ES256",
            KeyAlg::Rsa2048 => "RS256",
            KeyAlg::Ed25519 => "EdDSA",
        }
    }

    fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlg::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlg::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            KeyAlg::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// Key handling failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Generation or parsing failed.
    #[error("key error: {0}")]
    Crypto(String),
}

/// A private key in PKCS#8 DER. Secret: redacted in Debug.
pub struct PrivateKey {
    alg: KeyAlg,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.alg.as_str())
    }
}

impl PrivateKey {
    /// Generates a new key.
    pub fn generate(alg: KeyAlg) -> Result<Self, KeyError> {
        let kp = match alg {
            KeyAlg::EcP256 => rcgen::KeyPair::generate_for(alg.rcgen_alg()),
            KeyAlg::Rsa2048 => rcgen::KeyPair::generate_rsa_for(alg.rcgen_alg(), rcgen::RsaKeySize::_2048),
            KeyAlg::Ed25519 => {
                let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).map_err(|e| KeyError::Crypto(e.to_string()))?;
                return Ok(Self { alg, pkcs8: doc.as_ref().to_vec() });
            }
        }
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(Self { alg, pkcs8: kp.serialize_der() })
    }

    /// Wraps PKCS#8 DER read back from the store.
    pub fn from_pkcs8(alg: KeyAlg, pkcs8: Vec<u8>) -> Self {
        Self { alg, pkcs8 }
    }

    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// PKCS#8 DER, for sealing.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// An rcgen key pair for certificate signing.
    pub fn rcgen(&self) -> Result<rcgen::KeyPair, KeyError> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.clone());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, self.alg.rcgen_alg())
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }

    /// A JWS signer.
    pub fn signer(&self) -> Result<JwsSigner, KeyError> {
        match self.alg {
            KeyAlg::EcP256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8)
                .map(JwsSigner::Ec)
                .map_err(|e| KeyError::Crypto(e.to_string())),
            KeyAlg::Rsa2048 => RsaKeyPair::from_pkcs8(&self.pkcs8)
                .map(JwsSigner::Rsa)
                .map_err(|e| KeyError::Crypto(e.to_string())),
            KeyAlg::Ed25519 => Ed25519KeyPair::from_pkcs8(&self.pkcs8)
                .map(JwsSigner::Ed25519)
                .map_err(|e| KeyError::Crypto(e.to_string())),
        }
    }
}

/// Signs JWS payloads with one key.
pub enum JwsSigner {
    /// ES256.
    Ec(EcdsaKeyPair),
    /// RS256.
    Rsa(RsaKeyPair),
    /// Ed25519 (raw 64-byte signatures; SSH CAs).
    Ed25519(Ed25519KeyPair),
}

impl fmt::Debug for JwsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwsSigner(<redacted>)")
    }
}

impl JwsSigner {
    /// Signs `msg`, returning the raw JWS signature (r||s for ES256).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            JwsSigner::Ec(k) => k
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| KeyError::Crypto(e.to_string())),
            JwsSigner::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|e| KeyError::Crypto(e.to_string()))?;
                Ok(sig)
            }
            JwsSigner::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }

    /// The public key as JWK members (kty and key material only).
    pub fn public_jwk(&self) -> Value {
        match self {
            JwsSigner::Ec(k) => {
                let p = k.public_key().as_ref();
                // Uncompressed point: 0x04 || X(32) || Y(32).
                let (x, y) = if p.len() == 65 { (&p[1..33], &p[33..65]) } else { (&p[..0], &p[..0]) };
                json!({"kty": "EC", "crv": "P-256", "x": B64URL.encode(x), "y": B64URL.encode(y)})
            }
            JwsSigner::Rsa(k) => {
                let pk = k.public_key();
                json!({
                    "kty": "RSA",
                    "n": B64URL.encode(pk.modulus().big_endian_without_leading_zero()),
                    "e": B64URL.encode(pk.exponent().big_endian_without_leading_zero()),
                })
            }
            JwsSigner::Ed25519(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": B64URL.encode(k.public_key().as_ref())}),
        }
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url): a stable `kid`.
pub fn thumbprint(jwk: &Value) -> String {
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("OKP") => &["crv", "kty", "x"],
        _ => &["e", "kty", "n"],
    };
    // serde_json maps are sorted (BTreeMap), which is the canonical member order.
    let mut canon = serde_json::Map::new();
    for m in members {
        if let Some(v) = jwk.get(*m) {
            canon.insert((*m).to_string(), v.clone());
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(canon)).unwrap_or_default();
    B64URL.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 section 3.1 example key.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
        });
        assert_eq!(thumbprint(&jwk), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn generated_keys_round_trip_through_pkcs8() {
        for alg in [KeyAlg::EcP256, KeyAlg::Rsa2048, KeyAlg::Ed25519] {
            let k = PrivateKey::generate(alg).unwrap();
            let again = PrivateKey::from_pkcs8(alg, k.pkcs8().to_vec());
            assert_eq!(k.signer().unwrap().public_jwk(), again.signer().unwrap().public_jwk());
            assert!(again.rcgen().is_ok());
        }
    }
}
