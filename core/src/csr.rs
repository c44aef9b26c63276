//! Client side of issuance: a fresh key and a certificate signing request for
//! it. The key never leaves the caller; the broker fills in every name.

use rcgen::CertificateParams;

/// Key generation or CSR encoding failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a key and CSR: {0}")]
pub struct CsrError(String);

/// A fresh P-256 key and a CSR for it.
pub fn key_and_csr() -> Result<(rcgen::KeyPair, Vec<u8>), CsrError> {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| CsrError(e.to_string()))?;
    let csr = CertificateParams::default().serialize_request(&kp).map_err(|e| CsrError(e.to_string()))?;
    Ok((kp, csr.der().to_vec()))
}
