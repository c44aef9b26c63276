//! The small HTTP(S) client the cloud exchanges use: one request per connection,
//! no redirects, bounded body and time. Plain `http://` is accepted only for
//! loopback hosts (local emulators and tests); everything else is HTTPS with the
//! web PKI roots plus any CA the caller adds.
//!
//! A thin adapter over [`sigil_core::net::http`]: this file only fixes the policy
//! and keeps the API (and error messages) the cloud callers use.

use sigil_core::net::http::{Client, NetError, Request};
use sigil_core::net::policy::{self as net_policy, Network, Redirects, Schemes};
use sigil_core::net::trust::Trust;
use std::fmt;
use std::time::Duration;

/// Largest response body read.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default time limit for one request (connect + TLS + response).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL is not `https://HOST[:PORT]/PATH` (or `http://` on loopback).
    #[error("invalid URL {0:?}: {1}")]
    InvalidUrl(String, &'static str),
    /// A CA certificate given to trust could not be parsed.
    #[error("invalid CA certificate: {0}")]
    InvalidCa(String),
    /// TCP connect failed.
    #[error("cannot connect to {host}: {error}")]
    Connect {
        /// host:port dialled.
        host: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// TLS handshake failed (untrusted certificate, wrong name, ...).
    #[error("TLS handshake with {host} failed: {error} (is the server certificate trusted? pass --ca-file)")]
    Tls {
        /// Host.
        host: String,
        /// The I/O error carrying the TLS alert.
        error: std::io::Error,
    },
    /// The HTTP exchange itself failed.
    #[error("HTTP request to {host} failed: {detail}")]
    Protocol {
        /// Host.
        host: String,
        /// What went wrong.
        detail: String,
    },
    /// No answer within the time limit.
    #[error("no answer from {0} within the time limit")]
    Timeout(String),
    /// The response body was larger than [`MAX_BODY_BYTES`].
    #[error("response from {0} is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge(String),
}

/// An HTTP response. The body may hold credentials: Debug shows only its size.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response").field("status", &self.status).field("body_len", &self.body.len()).finish()
    }
}

impl Response {
    /// The body as text (lossy), for error messages that carry no secret.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A parsed request target (the shared outbound-HTTP type).
pub type Target = net_policy::Target;

/// Parses `url`, refusing plain HTTP to anything but loopback.
pub fn parse_target(url: &str) -> Result<Target, HttpError> {
    net_policy::Target::parse(url, SCHEMES).map_err(|e| from_net(url, e.into()))
}

/// HTTPS anywhere, plain HTTP only to loopback.
const SCHEMES: Schemes = Schemes::HttpsOrLoopbackHttp;

/// The client: a TLS configuration and a time limit.
#[derive(Clone)]
pub struct HttpClient {
    trust: Trust,
    timeout: Duration,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").field("timeout", &self.timeout).finish()
    }
}

impl HttpClient {
    /// A client trusting the web PKI roots plus the certificates in `extra_ca_pem`.
    pub fn new(extra_ca_pem: Option<&str>) -> Result<Self, HttpError> {
        let trust = Trust::public_plus_pem(extra_ca_pem).map_err(|e| HttpError::InvalidCa(e.to_string()))?;
        Ok(Self { trust, timeout: DEFAULT_TIMEOUT })
    }

    /// Sets the per-request time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn client(&self) -> Client {
        Client::new(net_policy::Policy {
            schemes: SCHEMES,
            network: Network::PrivateAllowed,
            redirects: Redirects::Returned,
            max_body_bytes: MAX_BODY_BYTES,
            timeout: self.timeout,
            trust: self.trust.clone(),
        })
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Result<Response, HttpError> {
        self.send("GET", url, &[], Vec::new()).await
    }

    /// POST `body` to `url` with `headers` (Host and Content-Length are added).
    pub async fn post(&self, url: &str, headers: &[(String, String)], body: Vec<u8>) -> Result<Response, HttpError> {
        self.send("POST", url, headers, body).await
    }

    /// Sends one request; redirects are returned as they are, never followed.
    pub async fn send(&self, method: &str, url: &str, headers: &[(String, String)], body: Vec<u8>) -> Result<Response, HttpError> {
        let t = parse_target(url)?;
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|e| HttpError::Protocol { host: t.authority.clone(), detail: e.to_string() })?;
        // The Host header always comes from the URL (the signers use the same authority).
        let mut headers: Vec<(String, String)> = headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")).cloned().collect();
        if !body.is_empty() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.push(("content-type".into(), "application/octet-stream".into()));
        }
        let req = Request { method, url: url.to_string(), headers, body };
        let r = self.client().send(req).await.map_err(|e| from_net(url, e))?;
        Ok(Response { status: r.status, body: r.body })
    }

    /// Connects to the target over TLS and returns the certificate chain the server presents.
    pub async fn peer_chain(&self, url: &str) -> Result<Vec<Vec<u8>>, HttpError> {
        self.client().peer_chain(url).await.map_err(|e| from_net(url, e))
    }
}

fn from_net(url: &str, e: NetError) -> HttpError {
    use net_policy::PolicyError as P;
    match e {
        NetError::Policy(P::BadUrl { url, why } | P::SchemeRefused { url, why }) => HttpError::InvalidUrl(url, why),
        NetError::Trust(e) => HttpError::InvalidCa(e.to_string()),
        NetError::Resolve { authority, .. } => {
            HttpError::Connect { host: authority, error: std::io::Error::new(std::io::ErrorKind::NotFound, "cannot resolve the host name") }
        }
        NetError::Connect { authority, source, .. } => HttpError::Connect { host: authority, error: source },
        NetError::Tls { authority, source, .. } => HttpError::Tls { host: authority, error: source },
        NetError::Protocol { authority, detail, .. } => HttpError::Protocol { host: authority, detail },
        NetError::Timeout { authority, .. } => HttpError::Timeout(authority),
        NetError::TooLarge { authority, .. } => HttpError::TooLarge(authority),
        // Not produced under this policy (private networks allowed, redirects
        // returned, Host never passed), reported as protocol failures all the same.
        other => HttpError::Protocol { host: url.to_string(), detail: other.to_string() },
    }
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v))).collect::<Vec<_>>().join("&")
}

fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_only_for_loopback() {
        assert!(parse_target("http://127.0.0.1:5000/").is_ok());
        assert!(parse_target("http://[::1]:5000/").is_ok());
        assert!(parse_target("http://localhost/").is_ok());
        assert!(parse_target("http://sts.amazonaws.com/").is_err());
        assert!(parse_target("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn authority_keeps_non_default_port_only() {
        let t = parse_target("https://rolesanywhere.us-east-1.amazonaws.com/sessions").unwrap();
        assert_eq!((t.authority.as_str(), t.port, t.path_and_query.as_str()), ("rolesanywhere.us-east-1.amazonaws.com", 443, "/sessions"));
        let t = parse_target("https://127.0.0.1:8443").unwrap();
        assert_eq!((t.authority.as_str(), t.path_and_query.as_str()), ("127.0.0.1:8443", "/"));
    }

    #[test]
    fn user_info_in_url_is_refused() {
        assert!(parse_target("https://evil@sts.amazonaws.com/").is_err());
    }

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(form_encode(&[("a b", "x=y&z"), ("t", "e.J-_~")]), "a+b=x%3Dy%26z&t=e.J-_%7E");
    }
}
