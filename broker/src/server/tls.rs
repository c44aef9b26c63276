//! TLS for the broker port: the serving certificate from the active internal
//! CA ([`serving_cert`], reissued while running), optional client certificates
//! verified against every published internal CA on every handshake
//! ([`client_auth`]). Both follow the [`AuthorityCell`], so an internal CA
//! rotation needs no restart.
//!
//! Session resumption is disabled so that every connection re-validates the
//! client chain against the current CAs (the failure SPIRE #6715 describes).
//!
//! [`serving_cert`]: super::serving_cert
//! [`client_auth`]: super::client_auth

use super::client_auth::ClientTrust;
use super::serving_cert::{ServingCert, ServingNames};
use crate::ca::AuthorityCell;
use rustls::ServerConfig;
use rustls_pki_types::UnixTime;
use sigil_core::clock::Clock;
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

/// The injected clock as rustls's time (certificate validity in handshakes).
#[derive(Clone)]
pub struct ClockTime(pub Arc<dyn Clock>);

impl std::fmt::Debug for ClockTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClockTime")
    }
}

impl rustls::time_provider::TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        u64::try_from(self.0.now()).ok().map(|s| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s)))
    }
}

/// Builds the server config following `cell`, with `names` in the serving
/// certificate. Keep the serving certificate current with
/// [`super::serving_cert::follow`].
pub fn server_config(cell: &Arc<AuthorityCell>, names: ServingNames, clock: Arc<dyn Clock>) -> Result<(ServerConfig, Arc<ServingCert>), TlsError> {
    let provider = provider();
    let serving = Arc::new(ServingCert::new(cell.clone(), names, provider.clone(), clock.now())?);
    let verifier = Arc::new(ClientTrust::new(cell.clone(), provider.clone()));
    let mut cfg = ServerConfig::builder_with_details(provider, Arc::new(ClockTime(clock)))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok((cfg, serving))
}
