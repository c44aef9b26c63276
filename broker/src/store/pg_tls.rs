//! TLS to PostgreSQL over rustls (aws-lc-rs), for tokio-postgres: the
//! connector ([`PgTls`], tokio-postgres's `MakeTlsConnect`), the stream with
//! its `tls-server-end-point` channel binding (SCRAM-SHA-256-PLUS), and the
//! server certificate check each `sslmode` asks for ([`pg_url::Verify`]).
//!
//! Built once per store from the URL's policy: the root, client certificate
//! and key files are read then, so a missing or unreadable file is a startup
//! error, never a failure on the first reconnect hours later.

use super::pg_url::{RootCerts, SslMode, TlsPolicy, Verify};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Why TLS to PostgreSQL could not be set up or established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgTlsError {
    /// A root, certificate or key file is unreadable or holds no usable PEM.
    #[error("{what} {path}: {why}")]
    File {
        /// The URL parameter naming the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS client configuration: {0}")]
    Config(String),
    /// The host is not usable as a TLS server name.
    #[error("host {0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The server's certificate failed the check `sslmode` asks for.
    #[error("the PostgreSQL server's certificate failed verification (sslmode={mode}{roots}): {why}")]
    Verification {
        /// The mode in force.
        mode: &'static str,
        /// `, sslrootcert=...` or the public roots, for the operator.
        roots: String,
        /// rustls's reason (unknown issuer, name mismatch, expired...).
        why: String,
    },
    /// The TLS handshake failed for another reason.
    #[error("TLS handshake with PostgreSQL failed: {0}")]
    Handshake(io::Error),
}

/// The connector a pool hands to tokio-postgres for every new connection.
#[derive(Clone)]
pub struct PgTls {
    config: Arc<rustls::ClientConfig>,
    mode: SslMode,
    roots_shown: String,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").field("mode", &self.mode).field("roots", &self.roots_shown).finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn file_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(String) -> PgTlsError + 'a {
    move |why| PgTlsError::File { what, path: path.to_path_buf(), why }
}

fn read_pem(what: &'static str, path: &Path) -> Result<String, PgTlsError> {
    sigil_core::pem::read_file(path).map_err(|e| e.to_string()).map_err(file_err(what, path))
}

/// libpq's rule for `sslkey`: no access for others (0600), or 0640 when
/// root owns it (a group such as ssl-cert may read it).
fn check_key_mode(path: &Path) -> Result<(), PgTlsError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| e.to_string()).map_err(file_err("sslkey", path))?;
    let allowed = if m.uid() == 0 { 0o640 } else { 0o600 };
    if m.mode() & 0o777 & !allowed != 0 {
        return Err(PgTlsError::File {
            what: "sslkey",
            path: path.to_path_buf(),
            why: format!("mode {:o} lets other users read the private key: chmod 600 it (libpq refuses it too)", m.mode() & 0o777),
        });
    }
    Ok(())
}

fn root_store(roots: &RootCerts) -> Result<Arc<RootCertStore>, PgTlsError> {
    match roots {
        RootCerts::Public => Ok(sigil_core::net::trust::public_roots()),
        RootCerts::File(path) => {
            let pem = read_pem("sslrootcert", path)?;
            sigil_core::net::trust::roots_from_pem(&pem).map_err(|e| e.to_string()).map_err(file_err("sslrootcert", path))
        }
    }
}

impl PgTls {
    /// Reads the files `policy` names (blocking: call at startup, off the
    /// async workers) and builds the rustls configuration.
    pub fn new(policy: &TlsPolicy) -> Result<Self, PgTlsError> {
        let provider = provider();
        let (roots, check_name, roots_shown) = match &policy.verify {
            Verify::Nothing => (None, false, ", server certificate not checked".to_string()),
            Verify::Chain(r) => (Some(root_store(r)?), false, shown(r)),
            Verify::ChainAndName(r) => (Some(root_store(r)?), true, shown(r)),
        };
        let verifier = PgServerVerifier { roots, check_name, algs: provider.signature_verification_algorithms };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgTlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &policy.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = sigil_core::pem::certificates(&read_pem("sslcert", cert)?, "sslcert")
                    .map_err(|e| e.to_string())
                    .map_err(file_err("sslcert", cert))?;
                if chain.is_empty() {
                    return Err(PgTlsError::File { what: "sslcert", path: cert.clone(), why: "no CERTIFICATE block found".into() });
                }
                check_key_mode(key)?;
                let der = sigil_core::pem::private_key(&read_pem("sslkey", key)?, "sslkey")
                    .map_err(|e| e.to_string())
                    .map_err(file_err("sslkey", key))?;
                builder.with_client_auth_cert(chain, der).map_err(|e| PgTlsError::Config(format!("sslcert/sslkey: {e}")))?
            }
        };
        // PostgreSQL 17 asks for it on direct TLS; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Self { config: Arc::new(config), mode: policy.mode, roots_shown })
    }
}

fn shown(r: &RootCerts) -> String {
    match r {
        RootCerts::Public => ", public web PKI roots".into(),
        RootCerts::File(p) => format!(", sslrootcert={}", p.display()),
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = PgTlsError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, PgTlsError> {
        let name = ServerName::try_from(domain.to_string()).map_err(|_| PgTlsError::ServerName(domain.to_string()))?;
        Ok(PgTlsConnect { tls: self.clone(), name })
    }
}

/// One connection's handshake, to `name`.
pub struct PgTlsConnect {
    tls: PgTls,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = PgTlsError;
    type Future = Pin<Box<dyn Future<Output = Result<PgTlsStream<S>, PgTlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.tls.config.clone());
            let inner = connector.connect(self.name, stream).await.map_err(|e| classify(e, &self.tls))?;
            let end_point = inner.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| tls_server_end_point(c));
            Ok(PgTlsStream { inner, end_point })
        })
    }
}

/// A certificate refusal names the mode and roots; anything else stays a handshake error.
fn classify(e: io::Error, tls: &PgTls) -> PgTlsError {
    let cert_refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .filter(|r| matches!(r, rustls::Error::InvalidCertificate(_)))
        .map(ToString::to_string);
    match cert_refused {
        Some(why) => PgTlsError::Verification { mode: tls.mode.as_str(), roots: tls.roots_shown.clone(), why },
        None => PgTlsError::Handshake(e),
    }
}

/// A TLS connection to PostgreSQL.
pub struct PgTlsStream<S> {
    inner: tokio_rustls::client::TlsStream<S>,
    end_point: Option<Vec<u8>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.end_point {
            Some(h) => ChannelBinding::tls_server_end_point(h.clone()),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929 `tls-server-end-point`: the server certificate hashed with the
/// hash of its own signature algorithm (MD5 and SHA-1 become SHA-256).
/// `None` for algorithms without a single such hash (Ed25519, RSA-PSS), as
/// PostgreSQL's server then offers no channel binding either.
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use aws_lc_rs::digest;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let alg = match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        // md5/sha1/sha256 WithRSAEncryption, ecdsa-with-SHA1, ecdsa-with-SHA256
        "1.2.840.113549.1.1.4" | "1.2.840.113549.1.1.5" | "1.2.840.113549.1.1.11" | "1.2.840.10045.4.1" | "1.2.840.10045.4.3.2" => {
            &digest::SHA256
        }
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &digest::SHA384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(alg, cert_der).as_ref().to_vec())
}

/// The server certificate check of one policy: nothing, the chain, or the
/// chain and the name. The handshake signature is always checked (the server
/// holds the key of the certificate it shows, which channel binding relies on).
#[derive(Debug)]
struct PgServerVerifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PgServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else { return Ok(ServerCertVerified::assertion()) };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algs.all)?;
        if self.check_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        rcgen::CertificateParams::new(vec!["db.example".to_string()]).unwrap().self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn channel_binding_hashes_the_certificate_with_its_signature_hash() {
        use aws_lc_rs::digest;
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(tls_server_end_point(&p256).unwrap(), digest::digest(&digest::SHA256, &p256).as_ref());
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(tls_server_end_point(&p384).unwrap(), digest::digest(&digest::SHA384, &p384).as_ref());
        assert_eq!(tls_server_end_point(&cert(&rcgen::PKCS_ED25519)), None, "Ed25519 has no tls-server-end-point hash");
        assert_eq!(tls_server_end_point(b"not a certificate"), None);
    }

    #[test]
    fn a_world_readable_client_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("k.pem");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_key_mode(&key).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_key_mode(&key).unwrap();
    }

    #[test]
    fn a_missing_root_file_is_named() {
        let policy = TlsPolicy {
            mode: SslMode::VerifyFull,
            explicit: true,
            verify: Verify::ChainAndName(RootCerts::File("/nonexistent/ca.pem".into())),
            client_cert: None,
        };
        let e = PgTls::new(&policy).unwrap_err().to_string();
        assert!(e.starts_with("sslrootcert /nonexistent/ca.pem:"), "{e}");
    }
}

/// The store over TLS to a real PostgreSQL that refuses plaintext
/// ([`crate::store::pg_harness::shared_tls`]): the conformance suite, and
/// what PostgreSQL itself reports about the connections.
#[cfg(test)]
mod over_postgres {
    #![allow(clippy::unwrap_used)]
    use crate::store::conformance::Subject;
    use crate::store::pg_harness;
    use crate::store::postgres::PgStore;
    use crate::store::{Doc, Kind, Store};

    async fn fresh() -> Subject {
        crate::store::postgres::conformance_tests::subject_at(&pg_harness::shared_tls().fresh_database().await).await
    }

    crate::store_conformance_tests!(fresh);

    fn db_name(url: &str) -> &str {
        url.split('?').next().unwrap().rsplit('/').next().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_store_connection_is_tls_and_the_login_is_channel_bound() {
        let cluster = pg_harness::shared_tls();
        // The URL says channel_binding=require: the login fails unless SCRAM-SHA-256-PLUS with our end point.
        let url = cluster.fresh_database().await;
        let store = PgStore::connect(&url).await.unwrap();
        store.create(Kind::Role, &Doc { name: "r".into(), revision: 0, spec: serde_json::json!({"name": "r"}) }, None).await.unwrap();
        let rows = cluster
            .admin()
            .await
            .query(
                "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
                &[&db_name(&url)],
            )
            .await
            .unwrap();
        assert!(!rows.is_empty(), "no connection of the store in pg_stat_activity");
        for r in rows {
            let (ssl, version): (bool, Option<String>) = (r.get(0), r.get(1));
            assert!(ssl && version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")), "{ssl} {version:?}");
        }
    }

    #[tokio::test]
    async fn a_server_certificate_from_another_ca_or_a_plaintext_url_is_refused() {
        let cluster = pg_harness::shared_tls();
        let url = cluster.fresh_database().await;
        let d = tempfile::tempdir().unwrap();
        let other = d.path().join("other-ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&other, p.self_signed(&key).unwrap().pem()).unwrap();
        let ca = cluster.tls().unwrap().ca_file.display().to_string();
        let wrong = url.replace(&ca, &other.display().to_string());
        let e = PgStore::connect(&wrong).await.unwrap_err().to_string();
        assert!(e.contains("certificate failed verification") && e.contains("UnknownIssuer"), "{e}");
        let plain = format!("{}?sslmode=disable", url.split('?').next().unwrap());
        let e = PgStore::connect(&plain).await.unwrap_err().to_string();
        assert!(e.contains("no encryption") && e.contains("accepts only TLS"), "{e}");
        assert!(!e.contains(&cluster.tls().unwrap().password), "{e}");
    }
}
