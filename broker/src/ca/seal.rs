//! Sealing CA private keys at rest (AES-256-GCM).
//!
//! What protects what: the store (SQLite file or PostgreSQL) holds CA private
//! keys only in sealed form. The seal key lives outside the store, in a file
//! (`seal_key_file`, mode 0600) or the `SIGIL_SEAL_KEY` environment variable, so a
//! copy of the database alone reveals no private key. Each sealed blob binds its
//! key id as associated data, so blobs cannot be swapped between keys unnoticed.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use std::fmt;

const VERSION: u8 = 1;

/// Sealing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The seal key is not 32 bytes of hex or base64.
    #[error("seal key must be 32 bytes, hex (64 characters) or base64 encoded")]
    BadKey,
    /// Decryption failed: wrong seal key, or the data was tampered with.
    #[error("cannot unseal key {0}: wrong seal key or corrupted data")]
    Unseal(String),
    /// Random generation or encryption failed.
    #[error("sealing failed")]
    Crypto,
}

/// The key that seals CA private keys. Redacted in Debug.
pub struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    /// Parses a key from hex or base64 text.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        use base64::Engine as _;
        let t = text.trim();
        let bytes = hex::decode(t)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .ok_or(SealError::BadKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(Self(arr))
    }

    /// A fresh random key, hex encoded for writing to a file.
    pub fn generate_hex() -> Result<String, SealError> {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).map_err(|_| SealError::Crypto)?;
        Ok(hex::encode(k))
    }

    fn aead(&self) -> Result<LessSafeKey, SealError> {
        Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).map_err(|_| SealError::Crypto)?))
    }

    /// Seals `plaintext`, binding `key_id`.
    pub fn seal(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::Crypto)?;
        let mut buf = plaintext.to_vec();
        self.aead()?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key_id.as_bytes()), &mut buf)
            .map_err(|_| SealError::Crypto)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens a blob sealed for `key_id`.
    pub fn unseal(&self, key_id: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let bad = || SealError::Unseal(key_id.to_string());
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(bad());
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().map_err(|_| bad())?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .aead()?
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(key_id.as_bytes()), &mut buf)
            .map_err(|_| bad())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_key_opens_only_with_same_key_and_id() {
        let k = SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap();
        let blob = k.seal("kid-1", b"private").unwrap();
        assert!(!blob.windows(7).any(|w| w == b"private"));
        assert_eq!(k.unseal("kid-1", &blob).unwrap(), b"private");
        assert!(k.unseal("kid-2", &blob).is_err());
        let other = SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap();
        assert!(other.unseal("kid-1", &blob).is_err());
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(SealKey::parse("abcd").is_err());
    }
}
