//! Identity files: the PEM bundle a bot (or the dev-mode admin) authenticates with.
//!
//! Layout, in order: the identity certificate, its private key, then the CA
//! certificate(s) that sign the broker's TLS certificate. The private key is held
//! in [`Identity`] and never printed by `Debug`.

use rustls_pki_types::pem::{PemObject, SectionKind};
use std::fmt;
use std::path::Path;

/// Why an identity file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file could not be read.
    #[error("cannot read identity file {path}: {source}")]
    Read {
        /// The path that failed.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM could not be parsed.
    #[error("identity file is not valid PEM: {0}")]
    Pem(String),
    /// A required section is missing.
    #[error("identity file has no {0}; expected certificate, private key, then CA certificate")]
    Missing(&'static str),
    /// The identity certificate has no SPIFFE ID.
    #[error("identity certificate is not a Sigil bot identity: {0}")]
    NotABotIdentity(String),
}

/// A bot identity: certificate, private key and the broker CA.
#[derive(Clone)]
pub struct Identity {
    /// Identity certificate (PEM).
    pub cert_pem: String,
    /// Private key (PEM). Secret.
    key_pem: String,
    /// CA certificate(s) (PEM) trusted for the broker's TLS certificate.
    pub ca_pem: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert_pem", &"<certificate>")
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn pem_block(kind: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {kind}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {kind}-----\n"));
    out
}

impl Identity {
    /// Builds an identity from its three PEM parts.
    pub fn new(cert_pem: String, key_pem: String, ca_pem: String) -> Self {
        Self { cert_pem, key_pem, ca_pem }
    }

    /// The private key PEM. Callers must not log it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Parses the identity file format.
    pub fn from_pem(text: &str) -> Result<Self, IdentityError> {
        let mut cert = None;
        let mut key = None;
        let mut ca = String::new();
        for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes()) {
            let (kind, der) = item.map_err(|e| IdentityError::Pem(e.to_string()))?;
            match kind {
                SectionKind::Certificate if cert.is_none() => {
                    cert = Some(pem_block("CERTIFICATE", &der))
                }
                SectionKind::Certificate => ca.push_str(&pem_block("CERTIFICATE", &der)),
                SectionKind::PrivateKey => key = Some(pem_block("PRIVATE KEY", &der)),
                SectionKind::EcPrivateKey => key = Some(pem_block("EC PRIVATE KEY", &der)),
                SectionKind::RsaPrivateKey => key = Some(pem_block("RSA PRIVATE KEY", &der)),
                _ => {}
            }
        }
        let cert_pem = cert.ok_or(IdentityError::Missing("certificate"))?;
        let key_pem = key.ok_or(IdentityError::Missing("private key"))?;
        if ca.is_empty() {
            return Err(IdentityError::Missing("CA certificate"));
        }
        Ok(Self { cert_pem, key_pem, ca_pem: ca })
    }

    /// Reads an identity file.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&text)
    }

    /// Serializes to the identity file format.
    pub fn to_pem(&self) -> String {
        format!("{}{}{}", self.cert_pem, self.key_pem, self.ca_pem)
    }

    /// The SPIFFE ID (URI SAN) and NotAfter (Unix seconds) of the identity certificate.
    pub fn subject(&self) -> Result<(String, i64), IdentityError> {
        let der = rustls_pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| IdentityError::Pem(e.to_string()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| IdentityError::NotABotIdentity(e.to_string()))?;
        let not_after = cert.validity().not_after.timestamp();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::NotABotIdentity(e.to_string()))?
            .ok_or_else(|| IdentityError::NotABotIdentity("no subjectAltName".into()))?;
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                return Ok(((*uri).to_string(), not_after));
            }
        }
        Err(IdentityError::NotABotIdentity("no URI SAN".into()))
    }
}

/// Encodes DER as a PEM block of the given kind (e.g. "CERTIFICATE").
pub fn to_pem(kind: &str, der: &[u8]) -> String {
    pem_block(kind, der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_block_round_trips_through_the_pem_parser() {
        let der: Vec<u8> = (0u8..=200).collect();
        let pem = to_pem("CERTIFICATE", &der);
        let back = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
    }

    #[test]
    fn identity_without_ca_is_rejected_with_the_missing_part_named() {
        let pem = to_pem("CERTIFICATE", b"abc") + &to_pem("PRIVATE KEY", b"def");
        let err = Identity::from_pem(&pem).unwrap_err();
        assert!(err.to_string().contains("no CA certificate"), "{err}");
    }

    #[test]
    fn debug_output_never_contains_the_key() {
        let id = Identity::new("cert".into(), "SECRET-KEY".into(), "ca".into());
        assert!(!format!("{id:?}").contains("SECRET-KEY"));
    }
}
