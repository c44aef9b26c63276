//! Bounded HTTPS GET for issuer discovery documents and JWKS.
//!
//! Outbound fetches are a classic SSRF and resource-exhaustion surface, so this
//! does exactly one thing: GET an `https://` URL with a size cap and a
//! deadline, through [`sigil_core::net::http`] under a policy that refuses loopback,
//! private and link-local addresses (cloud metadata endpoints live there)
//! unless the join token allows them, connects to the address it checked (no
//! second DNS lookup to rebind) and follows redirects only within the same
//! origin.

use sigil_core::net::http::{Client, NetError, Request};
use sigil_core::net::policy::{self as net_policy, Network, PolicyError, Redirects, Schemes};
use sigil_core::net::trust::{self, Trust};
use rustls::RootCertStore;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Most redirects followed (same origin only).
pub const MAX_REDIRECTS: usize = 3;

/// Why a fetch failed. Messages name the URL (operator configuration), never
/// response bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL does not parse or has no host.
    #[error("invalid URL {0:?}")]
    BadUrl(String),
    /// Only `https://` is fetched.
    #[error("{0:?} is not an https:// URL")]
    NotHttps(String),
    /// The host resolves to an address the token does not allow.
    #[error("{host} resolves to {ip}, a loopback/private/link-local address; set config allow_private_network = \"true\" on the join token to allow it")]
    PrivateAddress {
        /// Host.
        host: String,
        /// Address.
        ip: IpAddr,
    },
    /// DNS failed.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// TCP or TLS failed.
    #[error("cannot connect to {host}: {message}")]
    Connect {
        /// Host.
        host: String,
        /// Cause.
        message: String,
    },
    /// The deadline passed.
    #[error("{0} did not answer within the deadline")]
    Timeout(String),
    /// A non-200 status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// A redirect to another origin, or too many redirects.
    #[error("{url} redirects to {location:?}; only same-origin redirects are followed (at most {MAX_REDIRECTS}): configure the final URL")]
    Redirect {
        /// URL.
        url: String,
        /// Location header.
        location: String,
    },
    /// The body exceeds the cap.
    #[error("{url} returned more than {max} bytes")]
    TooLarge {
        /// URL.
        url: String,
        /// Cap.
        max: usize,
    },
    /// HTTP protocol failure.
    #[error("HTTP error from {url}: {message}")]
    Http {
        /// URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// A configured CA bundle is unusable.
    #[error("invalid CA bundle: {0}")]
    BadCa(String),
}

/// Limits and trust for one fetch.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Trust anchors for the server certificate.
    pub roots: Arc<RootCertStore>,
    /// Allow loopback/private/link-local destinations.
    pub allow_private: bool,
    /// Body size cap.
    pub max_bytes: usize,
    /// Deadline for the whole fetch, redirects included.
    pub timeout: Duration,
}

/// The public Web PKI roots (built once).
pub fn public_roots() -> Arc<RootCertStore> {
    trust::public_roots()
}

/// A root store holding only the CA certificates in `pem`.
pub fn roots_from_pem(pem: &str) -> Result<Arc<RootCertStore>, FetchError> {
    trust::roots_from_pem(pem).map_err(|e| FetchError::BadCa(e.to_string()))
}

/// Whether `ip` is not globally reachable unicast (loopback, private, link-local,
/// special-purpose, or an IPv6 form embedding such an IPv4 address).
pub fn is_private(ip: IpAddr) -> bool {
    net_policy::is_private(ip)
}

impl Policy {
    fn net(&self) -> Result<net_policy::Policy, FetchError> {
        Ok(net_policy::Policy {
            schemes: Schemes::Https,
            network: if self.allow_private { Network::PrivateAllowed } else { Network::PublicOnly },
            redirects: Redirects::SameOrigin { max: MAX_REDIRECTS },
            max_body_bytes: self.max_bytes,
            timeout: self.timeout,
            trust: Trust::roots(self.roots.clone()).map_err(|e| FetchError::BadCa(e.to_string()))?,
        })
    }
}

/// GETs `url` under `policy`; returns the body of a 200 answer.
pub async fn get(url: &str, policy: &Policy) -> Result<Vec<u8>, FetchError> {
    let req = Request::get(url)
        .header(http::header::ACCEPT.as_str(), "application/json")
        .header(http::header::USER_AGENT.as_str(), concat!("sigil/", env!("CARGO_PKG_VERSION")));
    let resp = Client::new(policy.net()?).send(req).await.map_err(|e| from_net(url, e))?;
    if resp.status != 200 {
        return Err(FetchError::Status { url: resp.url, status: resp.status });
    }
    Ok(resp.body)
}

fn from_net(url: &str, e: NetError) -> FetchError {
    match e {
        NetError::Policy(PolicyError::SchemeRefused { url, .. }) => FetchError::NotHttps(url),
        NetError::Policy(PolicyError::PrivateAddress { host, ip }) => FetchError::PrivateAddress { host, ip },
        NetError::Policy(_) => FetchError::BadUrl(url.into()),
        NetError::Trust(e) => FetchError::BadCa(e.to_string()),
        NetError::Resolve { host, .. } => FetchError::Resolve(host),
        NetError::Connect { host, source, .. } | NetError::Tls { host, source, .. } => FetchError::Connect { host, message: source.to_string() },
        NetError::Protocol { url, detail, .. } => FetchError::Http { url, message: detail },
        NetError::Timeout { .. } => FetchError::Timeout(url.into()),
        // A non-200 answer is reported by its status, whatever its size.
        NetError::TooLarge { url, status, .. } if status != 200 => FetchError::Status { url, status },
        NetError::TooLarge { url, max, .. } => FetchError::TooLarge { url, max },
        NetError::Redirect { url, location } => FetchError::Redirect { url, location },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn metadata_private_and_loopback_addresses_are_private() {
        for ip in ["169.254.169.254", "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1"] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["140.82.112.3", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn only_https_urls_without_credentials_are_fetched() {
        let p = Policy { roots: public_roots(), allow_private: false, max_bytes: 10, timeout: Duration::from_secs(2) };
        assert!(matches!(get("http://example.com/x", &p).await, Err(FetchError::NotHttps(_))));
        assert!(matches!(get("file:///etc/passwd", &p).await, Err(FetchError::NotHttps(_)) | Err(FetchError::BadUrl(_))));
        assert!(matches!(get("https://user@example.com/", &p).await, Err(FetchError::BadUrl(_))));
    }

    #[tokio::test]
    async fn private_destinations_are_refused_before_connecting() {
        let p = Policy { roots: public_roots(), allow_private: false, max_bytes: 10, timeout: Duration::from_secs(2) };
        let err = get("https://169.254.169.254/latest/meta-data", &p).await.unwrap_err();
        assert!(matches!(err, FetchError::PrivateAddress { .. }), "{err}");
    }
}
