//! Public key material and the signature check itself. A key only ever
//! verifies the algorithms of its own type ([`KeyMaterial::allows`]).

use super::Alg;
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

/// A public key from a JWKS.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// Uncompressed P-256 point (0x04 || x || y).
    P256(Vec<u8>),
    /// Uncompressed P-384 point.
    P384(Vec<u8>),
    /// Ed25519 public key.
    Ed25519(Vec<u8>),
}

impl KeyMaterial {
    /// Key type, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "RSA",
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
        }
    }

    /// Whether the key type allows `alg` at all.
    pub fn allows(&self, alg: Alg) -> bool {
        match self {
            KeyMaterial::Rsa { .. } => alg.is_rsa(),
            KeyMaterial::P256(_) => alg == Alg::Es256,
            KeyMaterial::P384(_) => alg == Alg::Es384,
            KeyMaterial::Ed25519(_) => alg == Alg::EdDsa,
        }
    }

    /// Whether `sig` is a valid `alg` signature of `msg` by this key. RSA
    /// moduli below 2048 bits never verify.
    pub fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        let ok = match self {
            KeyMaterial::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }.verify(params, msg, sig)
            }
            KeyMaterial::P256(point) if alg == Alg::Es256 => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, sig),
            KeyMaterial::P384(point) if alg == Alg::Es384 => UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(msg, sig),
            KeyMaterial::Ed25519(x) if alg == Alg::EdDsa => UnparsedPublicKey::new(&signature::ED25519, x).verify(msg, sig),
            _ => return false,
        };
        ok.is_ok()
    }
}
