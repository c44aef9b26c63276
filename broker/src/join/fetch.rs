//! Bounded HTTPS GET for issuer discovery documents and JWKS.
//!
//! Outbound fetches are a classic SSRF and resource-exhaustion surface, so this
//! client does exactly one thing: GET an `https://` URL with a size cap and a
//! deadline. It resolves the host itself and refuses loopback, private and
//! link-local addresses (cloud metadata endpoints live there) unless the join
//! token allows them, then connects to the address it checked (no second DNS
//! lookup to rebind). Redirects are followed only within the same origin.

use http_body_util::BodyExt;
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
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
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| Arc::new(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })).clone()
}

/// A root store holding only the CA certificates in `pem`.
pub fn roots_from_pem(pem: &str) -> Result<Arc<RootCertStore>, FetchError> {
    use rustls::pki_types::pem::PemObject;
    let mut store = RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| FetchError::BadCa(e.to_string()))?;
        store.add(cert).map_err(|e| FetchError::BadCa(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(FetchError::BadCa("no CERTIFICATE block".into()));
    }
    Ok(Arc::new(store))
}

/// Whether `ip` is loopback, private, link-local, CGNAT, unspecified or multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::BadUrl(url.into()))?;
    if uri.scheme_str() != Some("https") {
        return Err(FetchError::NotHttps(url.into()));
    }
    let auth = uri.authority().ok_or_else(|| FetchError::BadUrl(url.into()))?;
    if auth.as_str().contains('@') {
        return Err(FetchError::BadUrl(url.into()));
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_string();
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    Ok(Target { host, port: auth.port_u16().unwrap_or(443), path })
}

fn origin(t: &Target) -> String {
    if t.host.contains(':') {
        format!("https://[{}]:{}", t.host, t.port)
    } else {
        format!("https://{}:{}", t.host, t.port)
    }
}

async fn resolve(t: &Target, allow_private: bool) -> Result<SocketAddr, FetchError> {
    let addrs: Vec<SocketAddr> = match t.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, t.port)],
        Err(_) => tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|_| FetchError::Resolve(t.host.clone()))?
            .collect(),
    };
    // Every address must pass: otherwise a name with one public and one
    // private record would pick either.
    if !allow_private {
        if let Some(a) = addrs.iter().find(|a| is_private(a.ip())) {
            return Err(FetchError::PrivateAddress { host: t.host.clone(), ip: a.ip() });
        }
    }
    addrs.first().copied().ok_or_else(|| FetchError::Resolve(t.host.clone()))
}

enum Answer {
    Body(Vec<u8>),
    Redirect(String),
}

async fn get_once(url: &str, t: &Target, policy: &Policy) -> Result<Answer, FetchError> {
    let addr = resolve(t, policy.allow_private).await?;
    let conn_err = |m: String| FetchError::Connect { host: t.host.clone(), message: m };
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| conn_err(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| conn_err(e.to_string()))?
        .with_root_certificates(policy.roots.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(t.host.clone()).map_err(|_| FetchError::BadUrl(url.into()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.map_err(|e| conn_err(e.to_string()))?;
    let http_err = |m: String| FetchError::Http { url: url.into(), message: m };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| http_err(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let host_header = if t.port == 443 { t.host.clone() } else { format!("{}:{}", t.host, t.port) };
    let req = http::Request::get(t.path.as_str())
        .header(http::header::HOST, host_header)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, concat!("sigil/", env!("CARGO_PKG_VERSION")))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| http_err(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| http_err(e.to_string()))?;
    let status = resp.status();
    let result = if status.is_redirection() {
        let loc = resp.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        Ok(Answer::Redirect(loc.to_string()))
    } else if status != http::StatusCode::OK {
        Err(FetchError::Status { url: url.into(), status: status.as_u16() })
    } else {
        read_capped(url, resp.into_body(), policy.max_bytes).await.map(Answer::Body)
    };
    driver.abort();
    result
}

async fn read_capped(url: &str, mut body: hyper::body::Incoming, max: usize) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FetchError::Http { url: url.into(), message: e.to_string() })?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > max {
                return Err(FetchError::TooLarge { url: url.into(), max });
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

/// GETs `url` under `policy`; returns the body of a 200 answer.
pub async fn get(url: &str, policy: &Policy) -> Result<Vec<u8>, FetchError> {
    tokio::time::timeout(policy.timeout, get_following(url, policy))
        .await
        .map_err(|_| FetchError::Timeout(url.into()))?
}

async fn get_following(url: &str, policy: &Policy) -> Result<Vec<u8>, FetchError> {
    let first = parse_url(url)?;
    let home = origin(&first);
    let (mut current, mut target) = (url.to_string(), first);
    for _ in 0..=MAX_REDIRECTS {
        match get_once(&current, &target, policy).await? {
            Answer::Body(b) => return Ok(b),
            Answer::Redirect(location) => {
                let next = if location.starts_with('/') && !location.starts_with("//") {
                    format!("{home}{location}")
                } else {
                    location.clone()
                };
                let t = parse_url(&next).ok().filter(|t| origin(t) == home);
                match t {
                    Some(t) => (current, target) = (next, t),
                    None => return Err(FetchError::Redirect { url: current, location }),
                }
            }
        }
    }
    Err(FetchError::Redirect { url: current, location: "(too many redirects)".into() })
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

    #[test]
    fn only_https_urls_without_credentials_are_fetched() {
        assert!(matches!(parse_url("http://example.com/x"), Err(FetchError::NotHttps(_))));
        assert!(matches!(parse_url("file:///etc/passwd"), Err(FetchError::NotHttps(_)) | Err(FetchError::BadUrl(_))));
        assert!(matches!(parse_url("https://user@example.com/"), Err(FetchError::BadUrl(_))));
        let t = parse_url("https://[::1]:8443/a?b=c").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 8443, "/a?b=c"));
    }

    #[tokio::test]
    async fn private_destinations_are_refused_before_connecting() {
        let p = Policy { roots: public_roots(), allow_private: false, max_bytes: 10, timeout: Duration::from_secs(2) };
        let err = get("https://169.254.169.254/latest/meta-data", &p).await.unwrap_err();
        assert!(matches!(err, FetchError::PrivateAddress { .. }), "{err}");
    }
}
