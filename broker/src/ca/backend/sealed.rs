//! The sealed backend: keys generated in the process, stored sealed in the
//! store (see [`crate::ca::seal`]), held in memory while the broker runs.

use super::{BackendError, KeySigner, PublicKey};
use crate::ca::keys::{JwsSigner, KeyAlg, KeyError, PrivateKey};
use aws_lc_rs::signature::KeyPair as _;
use std::sync::Arc;

/// A key held in memory.
#[derive(Debug)]
pub struct SealedKey {
    alg: KeyAlg,
    signer: JwsSigner,
    public: PublicKey,
}

impl SealedKey {
    fn new(key: &PrivateKey) -> Result<Self, KeyError> {
        let signer = key.signer()?;
        let public = match &signer {
            JwsSigner::Ec(k) => PublicKey::ec(k.public_key().as_ref().to_vec()),
            JwsSigner::Rsa(k) => {
                let pk = k.public_key();
                PublicKey::rsa(pk.modulus().big_endian_without_leading_zero(), pk.exponent().big_endian_without_leading_zero())
            }
            JwsSigner::Ed25519(k) => PublicKey::ed25519(k.public_key().as_ref().to_vec()),
        };
        Ok(Self { alg: key.alg(), signer, public })
    }
}

impl KeySigner for SealedKey {
    fn alg(&self) -> KeyAlg {
        self.alg
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.signer.sign(msg)
    }
}

/// A new in-process key, and its PKCS#8 form to seal.
pub fn generate(alg: KeyAlg) -> Result<(Arc<dyn KeySigner>, PrivateKey), BackendError> {
    let key = PrivateKey::generate(alg)?;
    Ok((Arc::new(SealedKey::new(&key)?), key))
}

/// Opens unsealed PKCS#8.
pub fn open(alg: KeyAlg, pkcs8: Vec<u8>) -> Result<Arc<dyn KeySigner>, BackendError> {
    Ok(Arc::new(SealedKey::new(&PrivateKey::from_pkcs8(alg, pkcs8))?))
}
