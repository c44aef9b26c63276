//! The small HTTP(S) client the cloud exchanges use: one request per connection,
//! no redirects, bounded body and time. Plain `http://` is accepted only for
//! loopback hosts (local emulators and tests); everything else is HTTPS with the
//! web PKI roots plus any CA the caller adds.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use rustls::pki_types::{CertificateDer, ServerName};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
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

/// A parsed request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `true` for https.
    pub tls: bool,
    /// Host name or IP (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// `Host` header value: host, plus `:port` when not the scheme default.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path_and_query: String,
}

impl Target {
    /// Parses `url`, refusing plain HTTP to anything but loopback.
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |why| HttpError::InvalidUrl(url.to_string(), why);
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("scheme must be https")),
        };
        let auth = uri.authority().ok_or(bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("user info is not allowed"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let default_port = if tls { 443 } else { 80 };
        let port = auth.port_u16().unwrap_or(default_port);
        if !tls && !is_loopback(&host) {
            return Err(bad("plain http is only allowed to loopback (127.0.0.1, ::1, localhost)"));
        }
        let authority = if port == default_port { auth.host().to_string() } else { format!("{}:{port}", auth.host()) };
        let path_and_query = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        Ok(Self { tls, host, port, authority, path_and_query })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// The client: a TLS configuration and a time limit.
#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").field("timeout", &self.timeout).finish()
    }
}

/// Parses every `CERTIFICATE` block of a PEM text.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let p = p.map_err(|e| format!("bad PEM: {e}"))?;
        if p.label == "CERTIFICATE" {
            out.push(p.contents);
        }
    }
    Ok(out)
}

impl HttpClient {
    /// A client trusting the web PKI roots plus the certificates in `extra_ca_pem`.
    pub fn new(extra_ca_pem: Option<&str>) -> Result<Self, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = extra_ca_pem {
            let certs = pem_certificates(pem).map_err(HttpError::InvalidCa)?;
            if certs.is_empty() {
                return Err(HttpError::InvalidCa("no CERTIFICATE block found".into()));
            }
            for der in certs {
                roots.add(CertificateDer::from(der)).map_err(|e| HttpError::InvalidCa(e.to_string()))?;
            }
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::InvalidCa(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { tls: Arc::new(cfg), timeout: DEFAULT_TIMEOUT })
    }

    /// Sets the per-request time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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
        let t = Target::parse(url)?;
        let host = t.authority.clone();
        match tokio::time::timeout(self.timeout, self.exchange(&t, method, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(host)),
        }
    }

    /// Connects to the target over TLS and returns the certificate chain the server presents.
    pub async fn peer_chain(&self, url: &str) -> Result<Vec<Vec<u8>>, HttpError> {
        let t = Target::parse(url)?;
        if !t.tls {
            return Err(HttpError::InvalidUrl(url.into(), "the TLS chain needs an https URL"));
        }
        let fut = async {
            let tcp = self.connect(&t).await?;
            let tls = self.handshake(&t, tcp).await?;
            let (_, conn) = tls.get_ref();
            Ok(conn.peer_certificates().map(|c| c.iter().map(|d| d.to_vec()).collect()).unwrap_or_default())
        };
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| HttpError::Timeout(t.authority.clone()))?
    }

    async fn connect(&self, t: &Target) -> Result<tokio::net::TcpStream, HttpError> {
        tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|error| HttpError::Connect { host: t.authority.clone(), error })
    }

    async fn handshake(
        &self,
        t: &Target,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, HttpError> {
        let name = ServerName::try_from(t.host.clone())
            .map_err(|_| HttpError::InvalidUrl(t.host.clone(), "not a valid TLS server name"))?;
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|error| HttpError::Tls { host: t.authority.clone(), error })
    }

    async fn exchange(&self, t: &Target, method: &str, headers: &[(String, String)], body: Vec<u8>) -> Result<Response, HttpError> {
        let tcp = self.connect(t).await?;
        if t.tls {
            let tls = self.handshake(t, tcp).await?;
            request_on(hyper_util::rt::TokioIo::new(tls), t, method, headers, body).await
        } else {
            request_on(hyper_util::rt::TokioIo::new(tcp), t, method, headers, body).await
        }
    }
}

async fn request_on<IO>(io: IO, t: &Target, method: &str, headers: &[(String, String)], body: Vec<u8>) -> Result<Response, HttpError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let proto = |detail: String| HttpError::Protocol { host: t.authority.clone(), detail };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| proto(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder().method(method).uri(t.path_and_query.as_str()).header(http::header::HOST, t.authority.as_str());
    let mut has_type = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("host") {
            continue;
        }
        has_type |= k.eq_ignore_ascii_case("content-type");
        req = req.header(k.as_str(), v.as_str());
    }
    if !has_type && !body.is_empty() {
        req = req.header(http::header::CONTENT_TYPE, "application/octet-stream");
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| proto(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| proto(e.to_string()))?;
    let status = resp.status().as_u16();
    let collected = Limited::new(resp.into_body(), MAX_BODY_BYTES).collect().await;
    driver.abort();
    let bytes = collected.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            HttpError::TooLarge(t.authority.clone())
        } else {
            proto(e.to_string())
        }
    })?;
    Ok(Response { status, body: bytes.to_bytes().to_vec() })
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
        assert!(Target::parse("http://127.0.0.1:5000/").is_ok());
        assert!(Target::parse("http://[::1]:5000/").is_ok());
        assert!(Target::parse("http://localhost/").is_ok());
        assert!(Target::parse("http://sts.amazonaws.com/").is_err());
        assert!(Target::parse("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn authority_keeps_non_default_port_only() {
        let t = Target::parse("https://rolesanywhere.us-east-1.amazonaws.com/sessions").unwrap();
        assert_eq!((t.authority.as_str(), t.port, t.path_and_query.as_str()), ("rolesanywhere.us-east-1.amazonaws.com", 443, "/sessions"));
        let t = Target::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!((t.authority.as_str(), t.path_and_query.as_str()), ("127.0.0.1:8443", "/"));
    }

    #[test]
    fn user_info_in_url_is_refused() {
        assert!(Target::parse("https://evil@sts.amazonaws.com/").is_err());
    }

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(form_encode(&[("a b", "x=y&z"), ("t", "e.J-_~")]), "a+b=x%3Dy%26z&t=e.J-_%7E");
    }
}
