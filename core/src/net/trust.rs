//! Trust anchors for outbound TLS: the public Web PKI (Mozilla's roots from
//! webpki-roots), CA certificates from a PEM text, or both. A [`Trust`] is a
//! ready rustls client configuration (aws-lc-rs, safe protocol versions,
//! ALPN `http/1.1`), built once and shared.
//!
//! A [`Trust`] may also carry a [`ClientCert`] (a certificate chain and its
//! private key, from PEM) that the client presents when the server asks for
//! one: how kube-apiservers authenticate kind, minikube and kubeadm admin
//! users. The key never appears in Debug output or errors.

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
    /// The client certificate chain or its key is malformed, missing, or they do not match.
    /// Names where the PEM came from, never its content.
    #[error("{0}")]
    BadClientCert(String),
}

/// A client certificate chain (leaf first) and its private key (PKCS#8,
/// SEC1 or PKCS#1 PEM), presented when a server asks for a client certificate.
#[derive(Clone)]
pub struct ClientCert {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: Arc<rustls::pki_types::PrivateKeyDer<'static>>,
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert").field("certificates", &self.chain.len()).field("key", &"<redacted>").finish()
    }
}

impl ClientCert {
    /// Parses the chain (every `CERTIFICATE` block of `cert_pem`, leaf first)
    /// and the first private key of `key_pem`; `cert_origin`/`key_origin`
    /// name them in errors (a file name, a kubeconfig field). Whether the key
    /// belongs to the leaf is checked when a [`Trust`] is built from it.
    pub fn from_pem(cert_pem: &str, cert_origin: &str, key_pem: &str, key_origin: &str) -> Result<Self, TrustError> {
        let chain = crate::pem::certificates(cert_pem, cert_origin).map_err(|e| TrustError::BadClientCert(e.to_string()))?;
        if chain.is_empty() {
            return Err(TrustError::BadClientCert(format!("{cert_origin} holds no CERTIFICATE PEM block")));
        }
        let key = crate::pem::private_key(key_pem, key_origin).map_err(|e| TrustError::BadClientCert(e.to_string()))?;
        Ok(Self { chain, key: Arc::new(key) })
    }
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

    /// Exactly the anchors in `roots`, presenting `client` when the server
    /// asks for a client certificate. Refused when the key is not the leaf's.
    pub fn roots_with_client_cert(roots: Arc<RootCertStore>, client: &ClientCert) -> Result<Self, TrustError> {
        Self::build_with(roots, "configured roots with a client certificate", Some(client))
    }

    /// Only the CA certificates in `pem`, presenting `client` (see [`Trust::roots_with_client_cert`]).
    pub fn only_pem_with_client_cert(pem: &str, client: &ClientCert) -> Result<Self, TrustError> {
        Self::roots_with_client_cert(roots_from_pem(pem)?, client)
    }

    /// Whether this trust presents a client certificate.
    pub fn has_client_cert(&self) -> bool {
        self.config.client_auth_cert_resolver.has_certs()
    }

    /// The rustls client configuration.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    fn build(roots: Arc<RootCertStore>, label: &'static str) -> Result<Self, TrustError> {
        Self::build_with(roots, label, None)
    }

    fn build_with(roots: Arc<RootCertStore>, label: &'static str, client: Option<&ClientCert>) -> Result<Self, TrustError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TrustError::BadCa(e.to_string()))?
            .with_root_certificates(roots);
        let mut cfg = match client {
            None => builder.with_no_client_auth(),
            Some(c) => builder.with_client_auth_cert(c.chain.clone(), c.key.clone_key()).map_err(|e| {
                let why = match e {
                    rustls::Error::InconsistentKeys(_) => "the private key does not belong to the client certificate".to_string(),
                    other => format!("the client certificate or key is unusable ({other})"),
                };
                TrustError::BadClientCert(why)
            })?,
        };
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

    fn client_pem(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["broker".to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Rewraps a PKCS#8 P-256 key as SEC1 (`EC PRIVATE KEY`) through aws-lc-rs.
    fn sec1_pem(pkcs8_pem: &str) -> String {
        use aws_lc_rs::encoding::AsDer;
        let der = crate::pem::private_key(pkcs8_pem, "k").unwrap().secret_der().to_vec();
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &der).unwrap();
        let sec1: aws_lc_rs::encoding::EcPrivateKeyRfc5915Der = key.private_key().as_der().unwrap();
        pem_block("EC PRIVATE KEY", sec1.as_ref())
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    #[test]
    fn a_client_certificate_with_its_pkcs8_or_sec1_key_builds_a_trust_that_presents_it() {
        let ca = ca_pem();
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ED25519] {
            let (cert, key) = client_pem(alg);
            let client = ClientCert::from_pem(&cert, "client.crt", &key, "client.key").unwrap();
            let t = Trust::only_pem_with_client_cert(&ca, &client).unwrap();
            assert!(t.has_client_cert());
        }
        let (cert, key) = client_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let sec1 = sec1_pem(&key);
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let client = ClientCert::from_pem(&cert, "client.crt", &sec1, "client.key").unwrap();
        assert!(Trust::only_pem_with_client_cert(&ca, &client).unwrap().has_client_cert());
        assert!(!Trust::only_pem(&ca).unwrap().has_client_cert());
    }

    #[test]
    fn a_client_key_that_is_not_the_certificates_is_refused() {
        let (cert, _) = client_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, other_key) = client_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let client = ClientCert::from_pem(&cert, "client.crt", &other_key, "client.key").unwrap();
        let e = Trust::only_pem_with_client_cert(&ca_pem(), &client).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn missing_client_pem_blocks_are_named_and_the_key_never_shown() {
        let (cert, key) = client_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let e = ClientCert::from_pem(&key, "users[a].client-certificate-data", &key, "k").unwrap_err().to_string();
        assert!(e.contains("users[a].client-certificate-data") && e.contains("CERTIFICATE"), "{e}");
        let e = ClientCert::from_pem(&cert, "c", &cert, "/etc/sigil/client.key").unwrap_err().to_string();
        assert!(e.contains("/etc/sigil/client.key"), "{e}");
        let client = ClientCert::from_pem(&cert, "c", &key, "k").unwrap();
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        let shown = format!("{client:?} {:?}", Trust::only_pem_with_client_cert(&ca_pem(), &client).unwrap());
        assert!(shown.contains("<redacted>") && !shown.contains(&body[..40]), "{shown}");
    }

    #[test]
    fn every_trust_offers_http_1_1_alpn() {
        assert_eq!(Trust::public().unwrap().client_config().alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
