//! Endorsement key certificates: the EK certificate must carry exactly the EK
//! the agent presented, be within its validity, and be signed by one of the
//! CAs in the join token's `ek_ca` (PEM bundle; every certificate in it is a
//! trust anchor, so put the TPM vendor's intermediate there too).

use x509_parser::prelude::*;

/// What a verified EK certificate tells about the TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertInfo {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Issuer distinguished name (RFC 4514 string).
    pub issuer: String,
}

/// Why an EK certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EkCertError {
    /// Not a DER X.509 certificate.
    #[error("EK certificate does not parse: {0}")]
    Parse(String),
    /// Its key is not the EK the agent presented.
    #[error("EK certificate is for another key than the presented EK")]
    KeyMismatch,
    /// Outside its validity period.
    #[error("EK certificate is not valid now")]
    Expired,
    /// No `ek_ca` configured on the join token.
    #[error("join token has no ek_ca to verify EK certificates against")]
    NoCa,
    /// `ek_ca` has no usable certificate.
    #[error("join token ek_ca: {0}")]
    BadCa(String),
    /// Not signed by any configured CA.
    #[error("EK certificate is not signed by a CA in the join token's ek_ca (issuer {0})")]
    UntrustedIssuer(String),
}

/// Checks `cert_der` against the EK (`modulus`, `exponent`), `ca_pem` and `now`.
pub fn verify(cert_der: &[u8], modulus: &[u8], exponent: u32, ca_pem: Option<&str>, now: i64) -> Result<EkCertInfo, EkCertError> {
    let (rest, cert) = X509Certificate::from_der(cert_der).map_err(|e| EkCertError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(EkCertError::Parse("trailing bytes".into()));
    }
    match cert.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            if strip(rsa.modulus) != strip(modulus) || rsa.try_exponent().ok() != Some(u64::from(exponent)) {
                return Err(EkCertError::KeyMismatch);
            }
        }
        _ => return Err(EkCertError::KeyMismatch),
    }
    let valid = |c: &X509Certificate<'_>| c.validity().not_before.timestamp() <= now && now <= c.validity().not_after.timestamp();
    if !valid(&cert) {
        return Err(EkCertError::Expired);
    }
    let ca_pem = ca_pem.filter(|p| !p.trim().is_empty()).ok_or(EkCertError::NoCa)?;
    let anchors = sigil_core::pem::certificate_ders(ca_pem, "the PEM bundle").map_err(|e| EkCertError::BadCa(e.to_string()))?;
    if anchors.is_empty() {
        return Err(EkCertError::BadCa("no CERTIFICATE block".into()));
    }
    let issuer = cert.issuer().to_string();
    for der in &anchors {
        let Ok((_, ca)) = X509Certificate::from_der(der) else { continue };
        if ca.subject().as_raw() == cert.issuer().as_raw() && ca.is_ca() && valid(&ca) && cert.verify_signature(Some(ca.public_key())).is_ok() {
            return Ok(EkCertInfo { serial: cert.raw_serial_as_string().replace(':', ""), issuer });
        }
    }
    Err(EkCertError::UntrustedIssuer(issuer))
}

fn strip(b: &[u8]) -> &[u8] {
    &b[b.iter().position(|x| *x != 0).unwrap_or(b.len())..]
}
