//! Random challenge ids and nonces for the cloud and TPM join methods.

use base64::Engine;

/// `n` random bytes, base64url without padding (ids and header-safe nonces).
pub fn random_b64(n: usize) -> Result<String, super::JoinError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(n)?))
}

/// `n` random bytes from the system RNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, super::JoinError> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| super::JoinError::Internal("system RNG failed".into()))?;
    Ok(b)
}
