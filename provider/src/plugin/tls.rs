//! go-plugin AutoMTLS: the host hands us its client certificate in
//! `PLUGIN_CLIENT_CERT`; we answer with a fresh self-signed server certificate
//! (sent in the handshake line) and accept exactly that client certificate.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

/// Why the TLS side of the handshake could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// `PLUGIN_CLIENT_CERT` holds no PEM certificate.
    #[error("PLUGIN_CLIENT_CERT is not a PEM certificate: {0}")]
    ClientCert(String),
    /// Generating the server certificate failed.
    #[error("cannot generate the plugin server certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A ready server TLS configuration and the DER of its certificate.
pub struct AutoMtls {
    /// rustls configuration requiring the host's client certificate.
    pub config: Arc<rustls::ServerConfig>,
    /// DER of our server certificate, for the handshake line.
    pub cert_der: Vec<u8>,
}

/// The crypto provider used throughout: aws-lc-rs, which also verifies the
/// P-521 signatures go-plugin's client certificates make.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the AutoMTLS server configuration for the host certificate `client_cert_pem`.
pub fn auto_mtls(client_cert_pem: &str) -> Result<AutoMtls, TlsError> {
    let client = CertificateDer::from_pem_slice(client_cert_pem.as_bytes())
        .map_err(|e| TlsError::ClientCert(e.to_string()))?;
    let (cert_der, key_der) = server_certificate()?;
    let provider = crypto_provider();
    let verifier = ExactClientCert { expected: client, algs: provider.signature_verification_algorithms };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![CertificateDer::from(cert_der.clone())], key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(AutoMtls { config: Arc::new(config), cert_der })
}

/// A fresh self-signed certificate for `localhost`, the name go-plugin's
/// client verifies, usable for both server and client authentication.
fn server_certificate() -> Result<(Vec<u8>, PrivateKeyDer<'static>), TlsError> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.distinguished_name.push(DnType::OrganizationName, "Sigil Terraform provider");
    // The host puts this very certificate in its root pool; Go accepts a
    // pinned leaf there, and a non-CA leaf also passes stricter verifiers.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().to_vec(), key_der))
}

/// Accepts one client certificate, byte for byte, and checks the handshake
/// signatures against its key.
#[derive(Debug)]
struct ExactClientCert {
    expected: CertificateDer<'static>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ExactClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client certificate like go-plugin's: ECDSA P-521, self-signed.
    fn host_cert() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.pem(), cert.der().clone(), key_der)
    }

    async fn handshake(server: &AutoMtls, cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(server.cert_der.clone())).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert], key)
            .unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.config.clone());
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let srv = tokio::spawn(async move {
            let mut s = acceptor.accept(b).await.ok()?;
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).await.ok()?;
            Some(buf)
        });
        let name = ServerName::try_from("localhost").unwrap();
        // Keep the client open until the server has read, or TLS 1.3's
        // post-handshake writes hit a closed pipe.
        let client = match connector.connect(name, a).await {
            Ok(mut c) => {
                let _ = c.write_all(b"ok").await;
                let _ = c.flush().await;
                Some(c)
            }
            Err(_) => None,
        };
        let accepted = matches!(srv.await, Ok(Some(b)) if &b == b"ok");
        drop(client);
        accepted
    }

    #[tokio::test]
    async fn host_certificate_is_accepted() {
        let (pem, der, key) = host_cert();
        let server = auto_mtls(&pem).unwrap();
        assert!(handshake(&server, der, key).await);
    }

    #[tokio::test]
    async fn any_other_client_certificate_is_refused() {
        let (pem, _, _) = host_cert();
        let (_, other_der, other_key) = host_cert();
        let server = auto_mtls(&pem).unwrap();
        assert!(!handshake(&server, other_der, other_key).await);
    }

    #[test]
    fn garbage_client_cert_is_reported() {
        assert!(matches!(auto_mtls("not pem"), Err(TlsError::ClientCert(_))));
    }
}
