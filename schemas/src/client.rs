//! The one Sigil API client: address parsing, mTLS channel, typed calls.
//!
//! Used by the `sigil` CLI, the agent and the Terraform provider so that nothing
//! talks to the broker API twice.

use crate::identity::Identity;
use crate::sigil::v1::sigil_client::SigilClient;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Why a connection to the broker could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker address is malformed.
    #[error("invalid broker address {0:?}: expected HOST:PORT or https://HOST:PORT")]
    InvalidAddress(String),
    /// TLS or connection set-up failed.
    #[error("cannot connect to broker at {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
}

/// Largest message the client accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Normalizes `HOST:PORT` to `https://HOST:PORT`.
pub fn normalize_addr(addr: &str) -> Result<String, ClientError> {
    let trimmed = addr.trim();
    if trimmed.is_empty() {
        return Err(ClientError::InvalidAddress(addr.to_string()));
    }
    let url = if trimmed.starts_with("https://") {
        trimmed.to_string()
    } else if trimmed.contains("://") {
        return Err(ClientError::InvalidAddress(addr.to_string()));
    } else {
        format!("https://{trimmed}")
    };
    url.parse::<http::Uri>()
        .map_err(|_| ClientError::InvalidAddress(addr.to_string()))?;
    Ok(url)
}

/// Connects to the broker. `ca_pem` is the CA that signs the broker's TLS
/// certificate; `identity`, when given, authenticates the caller (mTLS).
pub async fn connect(
    addr: &str,
    ca_pem: &str,
    identity: Option<&Identity>,
) -> Result<SigilClient<Channel>, ClientError> {
    let url = normalize_addr(addr)?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(id) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(&id.cert_pem, id.key_pem()));
    }
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|source| ClientError::Connect { addr: url.clone(), source })?
        .tls_config(tls)
        .map_err(|source| ClientError::Connect { addr: url.clone(), source })?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Connect { addr: url, source })?;
    Ok(SigilClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Connects with an identity file's own CA and credentials.
pub async fn connect_with_identity(
    addr: &str,
    identity: &Identity,
) -> Result<SigilClient<Channel>, ClientError> {
    connect(addr, &identity.ca_pem.clone(), Some(identity)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_becomes_https() {
        assert_eq!(normalize_addr("127.0.0.1:8443").unwrap(), "https://127.0.0.1:8443");
    }

    #[test]
    fn plaintext_scheme_is_refused() {
        assert!(normalize_addr("http://127.0.0.1:1").is_err());
    }
}
