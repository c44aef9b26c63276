//! TLS for the broker port: serving certificate from the internal CA, optional
//! client certificates verified against the internal CA on every handshake.
//!
//! Session resumption is disabled so that every connection re-validates the
//! client chain against the current CA (the failure SPIRE #6715 describes).

use sigil_core::keys::{KeyAlg, PrivateKey};
use crate::ca::lifetime::Validity;
use crate::ca::x509::LeafKind;
use crate::ca::Authority;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::IpAddr;
use std::sync::Arc;

/// TLS set-up failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Certificate issuance for the serving key failed.
    #[error("cannot issue serving certificate: {0}")]
    Issue(String),
    /// rustls rejected the configuration.
    #[error("TLS configuration error: {0}")]
    Rustls(String),
}

/// The crypto provider used everywhere (aws-lc-rs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the server config. `dns`/`ips` are the serving certificate's SANs.
pub fn server_config(authority: &Authority, dns: &[String], ips: &[IpAddr], now: i64) -> Result<ServerConfig, TlsError> {
    let key = PrivateKey::generate(KeyAlg::EcP256).map_err(|e| TlsError::Issue(e.to_string()))?;
    let kp = key.rcgen().map_err(|e| TlsError::Issue(e.to_string()))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    let v = Validity { not_before: now - 60, not_after: (now + 90 * 24 * 3600).min(authority.internal.not_after) };
    let leaf = authority
        .internal
        .sign_leaf(&spki, &LeafKind::Serving { dns: dns.to_vec(), ips: ips.to_vec() }, v)
        .map_err(|e| TlsError::Issue(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(authority.internal.cert_der.clone()))
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(leaf), CertificateDer::from(authority.internal.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8().to_vec())),
        )
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}
