//! The trust bundle as the agent holds it: X.509 authorities and the JWKS of the
//! broker's trust domain. A change means CA rotation: everything is re-issued.

use sigil_schemas::sigil::v1 as pb;

/// Why a bundle from the broker is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The X.509 authorities are not PEM certificates.
    #[error(transparent)]
    Pem(#[from] sigil_core::pem::PemError),
    /// The bundle is empty.
    #[error("trust bundle has no X.509 authorities")]
    Empty,
}

/// The trust bundle of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Trust domain name (no scheme).
    pub trust_domain: String,
    /// X.509 authorities, PEM.
    pub x509_pem: String,
    /// X.509 authorities, DER each.
    pub x509_der: Vec<Vec<u8>>,
    /// JWKS (keys with `kid`, `alg`, `use: sig`).
    pub jwks_json: String,
}

/// Parses every certificate of a PEM string.
pub fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, BundleError> {
    let certs = sigil_core::pem::certificate_ders(pem, "the trust bundle's X.509 authorities")?;
    if certs.is_empty() {
        return Err(BundleError::Empty);
    }
    Ok(certs)
}

impl Bundle {
    /// From the broker's `GetTrustBundle` answer.
    pub fn from_pb(b: pb::TrustBundle) -> Result<Self, BundleError> {
        let x509_der = pem_certs(&b.x509_authorities_pem)?;
        Ok(Self { trust_domain: b.trust_domain, x509_pem: b.x509_authorities_pem, x509_der, jwks_json: b.jwks_json })
    }

    /// `spiffe://<trust domain>`, the key of Workload API bundle maps.
    pub fn trust_domain_id(&self) -> String {
        format!("spiffe://{}", self.trust_domain)
    }

    /// All authorities, concatenated DER (Workload API encoding).
    pub fn x509_concat(&self) -> Vec<u8> {
        self.x509_der.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_is_rejected() {
        assert!(matches!(pem_certs("hello"), Err(BundleError::Empty)));
    }

    #[test]
    fn certificates_are_decoded_in_order() {
        let pem = sigil_schemas::identity::to_pem("CERTIFICATE", b"one") + &sigil_schemas::identity::to_pem("CERTIFICATE", b"two");
        assert_eq!(pem_certs(&pem).unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
    }
}
