//! Trust anchors for outbound TLS: the public Web PKI (Mozilla's roots from
//! webpki-roots), CA certificates from a PEM text, or both. A [`Trust`] is a
//! ready rustls client configuration (aws-lc-rs, safe protocol versions,
//! ALPN `http/1.1`), built once and shared.

use rustls::RootCertStore;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Why trust anchors could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The PEM text is malformed, holds no certificate, or a certificate is unusable as an anchor.
    #[error("{0}")]
    BadCa(String),
}

/// The server certificates an outbound request accepts.
#[derive(Clone)]
pub struct Trust {
    config: Arc<rustls::ClientConfig>,
    label: &'static str,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Trust").field(&self.label).finish()
    }
}

impl Trust {
    /// The public Web PKI roots only (configuration built once per process).
    pub fn public() -> Result<Self, TrustError> {
        static PUBLIC: OnceLock<Result<Trust, TrustError>> = OnceLock::new();
        PUBLIC.get_or_init(|| Self::build(public_roots(), "public web PKI")).clone()
    }

    /// Exactly the anchors in `roots` (the public roots are not added).
    pub fn roots(roots: Arc<RootCertStore>) -> Result<Self, TrustError> {
        Self::build(roots, "configured roots")
    }

    /// Only the CA certificates in `pem` (they replace the public roots).
    pub fn only_pem(pem: &str) -> Result<Self, TrustError> {
        Self::roots(roots_from_pem(pem)?)
    }

    /// The public roots plus the CA certificates in `pem`, if any.
    pub fn public_plus_pem(pem: Option<&str>) -> Result<Self, TrustError> {
        let Some(pem) = pem else { return Self::public() };
        let mut store = (*public_roots()).clone();
        add_pem(&mut store, pem)?;
        Self::build(Arc::new(store), "public web PKI plus a CA file")
    }

    /// The rustls client configuration.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    fn build(roots: Arc<RootCertStore>, label: &'static str) -> Result<Self, TrustError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TrustError::BadCa(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { config: Arc::new(cfg), label })
    }
}

/// The public Web PKI roots (built once).
pub fn public_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| Arc::new(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })).clone()
}

/// A root store holding only the CA certificates in `pem`.
pub fn roots_from_pem(pem: &str) -> Result<Arc<RootCertStore>, TrustError> {
    let mut store = RootCertStore::empty();
    add_pem(&mut store, pem)?;
    Ok(Arc::new(store))
}

fn add_pem(store: &mut RootCertStore, pem: &str) -> Result<(), TrustError> {
    let certs = crate::pem::certificates(pem, "the CA PEM").map_err(|e| TrustError::BadCa(e.to_string()))?;
    if certs.is_empty() {
        return Err(TrustError::BadCa("no CERTIFICATE block found".into()));
    }
    for der in certs {
        store.add(der).map_err(|e| TrustError::BadCa(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn pem_ca_replaces_or_extends_the_public_roots() {
        let pem = ca_pem();
        assert_eq!(roots_from_pem(&pem).unwrap().len(), 1);
        assert!(Trust::only_pem(&pem).is_ok());
        assert!(Trust::public_plus_pem(Some(&pem)).is_ok());
        assert_eq!(public_roots().len(), webpki_roots::TLS_SERVER_ROOTS.len());
    }

    #[test]
    fn pem_without_a_certificate_is_refused() {
        for pem in ["", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"] {
            assert!(roots_from_pem(pem).is_err(), "{pem:?}");
            assert!(Trust::public_plus_pem(Some(pem)).is_err(), "{pem:?}");
        }
    }

    #[test]
    fn every_trust_offers_http_1_1_alpn() {
        assert_eq!(Trust::public().unwrap().client_config().alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
