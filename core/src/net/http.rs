//! The outbound HTTP/1.1 client. One request per connection; every step is
//! checked against the caller's [`Policy`]:
//!
//! 1. the URL and scheme ([`Target::parse`]);
//! 2. DNS: the host is resolved here and every address checked
//!    ([`check_addresses`]); the connection goes to a checked address, so a
//!    second lookup cannot rebind the name to another one;
//! 3. TLS against the policy's [`Trust`], SNI = the URL's host;
//! 4. the `Host` header ([`host_header`]), `Content-Length` computed here;
//! 5. redirects ([`Redirects`]): returned as they are, or followed within the
//!    first URL's origin ([`same_origin_hop`]), GET and HEAD only;
//! 6. the body, read up to `max_body_bytes`;
//!
//! all under one deadline (`timeout`).

use super::policy::{check_addresses, host_header, same_origin_hop, Policy, PolicyError, Redirects, Target};
use super::trust::{Trust, TrustError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpStream;

/// Why an outbound request failed. Messages name the URL or server (operator
/// configuration), never request or response bodies.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Refused by the policy before or instead of sending.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The trust anchors could not be built.
    #[error("invalid CA certificate: {0}")]
    Trust(#[from] TrustError),
    /// DNS gave no address.
    #[error("cannot resolve {host}")]
    Resolve {
        /// Host name.
        host: String,
        /// `host[:port]`.
        authority: String,
    },
    /// TCP connect failed.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// Host name.
        host: String,
        /// `host[:port]`.
        authority: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, ...).
    #[error("TLS handshake with {authority} failed: {source}")]
    Tls {
        /// Host name.
        host: String,
        /// `host[:port]`.
        authority: String,
        /// The I/O error carrying the TLS alert.
        source: std::io::Error,
    },
    /// The HTTP exchange itself failed.
    #[error("HTTP request to {url} failed: {detail}")]
    Protocol {
        /// URL of the failed request (after redirects).
        url: String,
        /// `host[:port]`.
        authority: String,
        /// What went wrong.
        detail: String,
    },
    /// The deadline passed.
    #[error("{url} did not answer within the deadline")]
    Timeout {
        /// URL first requested.
        url: String,
        /// Its `host[:port]`.
        authority: String,
    },
    /// The body exceeds `max_body_bytes`.
    #[error("{url} returned more than {max} bytes")]
    TooLarge {
        /// URL of the request (after redirects).
        url: String,
        /// `host[:port]`.
        authority: String,
        /// The cap.
        max: usize,
        /// The response status.
        status: u16,
    },
    /// A redirect the policy does not follow, or too many.
    #[error("{url} redirects to {location:?}, which the policy does not follow")]
    Redirect {
        /// URL that answered the redirect.
        url: String,
        /// Its `Location` header (or a note when there were too many).
        location: String,
    },
}

/// One request. `Host` is derived from the URL (a caller value is kept only
/// when it names the same server); `Content-Length` is always computed.
#[derive(Clone)]
pub struct Request {
    /// Method.
    pub method: http::Method,
    /// Absolute URL.
    pub url: String,
    /// Header names and values, sent in order.
    pub headers: Vec<(String, String)>,
    /// Body (may hold credentials: Debug shows only its size).
    pub body: Vec<u8>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Request").field("method", &self.method).field("url", &self.url).field("headers", &names).field("body_len", &self.body.len()).finish()
    }
}

impl Request {
    /// A GET of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self { method: http::Method::GET, url: url.into(), headers: Vec::new(), body: Vec::new() }
    }

    /// A POST of `body` to `url`.
    pub fn post(url: impl Into<String>, body: Vec<u8>) -> Self {
        Self { method: http::Method::POST, url: url.into(), headers: Vec::new(), body }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds headers.
    pub fn headers<K: AsRef<str>, V: AsRef<str>>(mut self, headers: &[(K, V)]) -> Self {
        self.headers.extend(headers.iter().map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())));
        self
    }
}

/// A response. The body may hold credentials: Debug shows only its size.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Body, at most the policy's `max_body_bytes`.
    pub body: Vec<u8>,
    /// URL that gave this answer (differs from the request after a redirect).
    pub url: String,
    /// DER certificates the server presented (`None` over plain HTTP).
    pub peer_chain: Option<Vec<Vec<u8>>>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response").field("status", &self.status).field("url", &self.url).field("body_len", &self.body.len()).finish()
    }
}

/// An outbound HTTP client bound to one [`Policy`].
#[derive(Debug, Clone)]
pub struct Client {
    policy: Policy,
}

/// What one hop produced: a final answer or a redirect to take.
enum Hop {
    Answer(Response),
    Redirect(String),
}

impl Client {
    /// A client that sends every request under `policy`.
    pub fn new(policy: Policy) -> Self {
        Self { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// GET `url` with `headers`.
    pub async fn get<K: AsRef<str>, V: AsRef<str>>(&self, url: &str, headers: &[(K, V)]) -> Result<Response, NetError> {
        self.send(Request::get(url).headers(headers)).await
    }

    /// POST `body` to `url` with `headers`.
    pub async fn post<K: AsRef<str>, V: AsRef<str>>(&self, url: &str, headers: &[(K, V)], body: Vec<u8>) -> Result<Response, NetError> {
        self.send(Request::post(url, body).headers(headers)).await
    }

    /// Sends `req` under the policy, following redirects as the policy says.
    pub async fn send(&self, req: Request) -> Result<Response, NetError> {
        let first = Target::parse(&req.url, self.policy.schemes)?;
        let timeout = NetError::Timeout { url: req.url.clone(), authority: first.authority.clone() };
        tokio::time::timeout(self.policy.timeout, self.follow(req, first)).await.map_err(|_| timeout)?
    }

    /// Connects to `url` (https only) and returns the certificate chain the
    /// server presents, without sending a request.
    pub async fn peer_chain(&self, url: &str) -> Result<Vec<Vec<u8>>, NetError> {
        let t = Target::parse(url, self.policy.schemes)?;
        if !t.tls {
            return Err(PolicyError::SchemeRefused { url: url.into(), why: "the TLS chain needs an https URL" }.into());
        }
        let timeout = NetError::Timeout { url: url.into(), authority: t.authority.clone() };
        let fut = async {
            let tcp = self.connect(&t).await?;
            let tls = handshake(&self.policy.trust, url, &t, tcp).await?;
            Ok(chain_of(&tls))
        };
        tokio::time::timeout(self.policy.timeout, fut).await.map_err(|_| timeout)?
    }

    async fn follow(&self, req: Request, first: Target) -> Result<Response, NetError> {
        let max = match self.policy.redirects {
            Redirects::SameOrigin { max } if req.method == http::Method::GET || req.method == http::Method::HEAD => max,
            _ => 0,
        };
        let (mut url, mut target) = (req.url.clone(), first.clone());
        for _ in 0..=max {
            match self.once(&req, &url, &target).await? {
                Hop::Answer(r) => return Ok(r),
                Hop::Redirect(location) => match same_origin_hop(&first, &location, self.policy.schemes) {
                    Some((next, t)) if max > 0 => (url, target) = (next, t),
                    _ => return Err(NetError::Redirect { url, location }),
                },
            }
        }
        Err(NetError::Redirect { url, location: "(too many redirects)".into() })
    }

    async fn once(&self, req: &Request, url: &str, t: &Target) -> Result<Hop, NetError> {
        let request = build(req, url, t)?;
        let tcp = self.connect(t).await?;
        if t.tls {
            let tls = handshake(&self.policy.trust, url, t, tcp).await?;
            let chain = chain_of(&tls);
            self.exchange(TokioIo::new(tls), request, url, t, Some(chain)).await
        } else {
            self.exchange(TokioIo::new(tcp), request, url, t, None).await
        }
    }

    /// Resolves the host, checks every address, connects to a checked one.
    async fn connect(&self, t: &Target) -> Result<TcpStream, NetError> {
        let resolve_err = || NetError::Resolve { host: t.host.clone(), authority: t.authority.clone() };
        let addrs: Vec<SocketAddr> = match t.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, t.port)],
            Err(_) => tokio::net::lookup_host((t.host.as_str(), t.port)).await.map_err(|_| resolve_err())?.collect(),
        };
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        check_addresses(&t.host, &ips, self.policy.network)?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(source) => Err(NetError::Connect { host: t.host.clone(), authority: t.authority.clone(), source }),
            None => Err(resolve_err()),
        }
    }

    async fn exchange<IO>(&self, io: IO, request: http::Request<Full<Bytes>>, url: &str, t: &Target, chain: Option<Vec<Vec<u8>>>) -> Result<Hop, NetError>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let proto = |detail: String| NetError::Protocol { url: url.to_string(), authority: t.authority.clone(), detail };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| proto(with_sources(&e)))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = async {
            let resp = sender.send_request(request).await.map_err(|e| proto(with_sources(&e)))?;
            let status = resp.status().as_u16();
            if resp.status().is_redirection() && matches!(self.policy.redirects, Redirects::SameOrigin { .. }) {
                let location = resp.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
                return Ok(Hop::Redirect(location.to_string()));
            }
            let (parts, body) = resp.into_parts();
            let max = self.policy.max_body_bytes;
            let collected = Limited::new(body, max).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    NetError::TooLarge { url: url.to_string(), authority: t.authority.clone(), max, status }
                } else {
                    proto(e.to_string())
                }
            })?;
            Ok(Hop::Answer(Response { status, headers: parts.headers, body: collected.to_bytes().to_vec(), url: url.to_string(), peer_chain: chain }))
        }
        .await;
        driver.abort();
        result
    }
}

/// An error's text followed by its sources' (hyper's own text is often just
/// "connection error"; the TLS alert that caused it, e.g. a server refusing
/// our client certificate, is in the source chain). Transport errors only:
/// no request or response bodies are in them.
fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        next = s.source();
    }
    text
}

/// The hyper request for `req` aimed at `t`.
fn build(req: &Request, url: &str, t: &Target) -> Result<http::Request<Full<Bytes>>, NetError> {
    let given: Vec<&str> = req.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("host")).map(|(_, v)| v.as_str()).collect();
    if given.len() > 1 {
        return Err(PolicyError::HostMismatch { given: given.join(", "), expected: t.authority.clone() }.into());
    }
    let host = host_header(t, given.first().copied())?;
    let mut b = http::Request::builder().method(req.method.clone()).uri(t.path_and_query.as_str()).header(http::header::HOST, host);
    for (k, v) in &req.headers {
        if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("content-length") {
            continue;
        }
        b = b.header(k.as_str(), v.as_str());
    }
    let sends_body = !req.body.is_empty() || matches!(req.method, http::Method::POST | http::Method::PUT | http::Method::PATCH);
    if sends_body {
        b = b.header(http::header::CONTENT_LENGTH, req.body.len());
    }
    b.body(Full::new(Bytes::from(req.body.clone())))
        .map_err(|e| NetError::Protocol { url: url.to_string(), authority: t.authority.clone(), detail: e.to_string() })
}

async fn handshake(trust: &Trust, url: &str, t: &Target, tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>, NetError> {
    let name = ServerName::try_from(t.host.clone()).map_err(|_| PolicyError::BadUrl { url: url.to_string(), why: "not a valid TLS server name" })?;
    tokio_rustls::TlsConnector::from(trust.client_config())
        .connect(name, tcp)
        .await
        .map_err(|source| NetError::Tls { host: t.host.clone(), authority: t.authority.clone(), source })
}

fn chain_of(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<Vec<u8>> {
    let (_, conn) = tls.get_ref();
    conn.peer_certificates().map(|c| c.iter().map(|d| d.to_vec()).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::net::policy::{Network, Schemes};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[derive(Debug, thiserror::Error)]
    #[error("connection error")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_transport_error_names_its_cause_not_only_connection_error() {
        let alert = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: CertificateRequired");
        assert_eq!(with_sources(&Outer(alert)), "connection error: received fatal alert: CertificateRequired");
        let same = std::io::Error::new(std::io::ErrorKind::Other, "connection error");
        assert_eq!(with_sources(&Outer(same)), "connection error", "a source repeating the text is not added twice");
    }

    fn plain(redirects: Redirects, max_body_bytes: usize) -> Client {
        Client::new(Policy {
            schemes: Schemes::HttpsOrLoopbackHttp,
            network: Network::PrivateAllowed,
            redirects,
            max_body_bytes,
            timeout: Duration::from_secs(5),
            trust: Trust::public().unwrap(),
        })
    }

    /// A loopback HTTP/1.1 server answering each connection with the next of
    /// `answers`; returns its base URL and the requests it received.
    async fn server(answers: Vec<String>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let h = tokio::spawn(async move {
            let mut seen = Vec::new();
            for a in answers {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap())).unwrap_or(0);
                        if got.len() >= end + 4 + len || n == 0 {
                            break;
                        }
                    }
                }
                seen.push(String::from_utf8_lossy(&got).to_string());
                s.write_all(a.as_bytes()).await.unwrap();
                s.shutdown().await.ok();
            }
            seen
        });
        (base, h)
    }

    fn answer(status: &str, headers: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
    }

    #[tokio::test]
    async fn post_sends_host_content_length_and_headers_and_returns_the_answer() {
        let (base, h) = server(vec![answer("200 OK", "x-a: 1\r\n", "hello")]).await;
        let r = plain(Redirects::Returned, 100).post(&format!("{base}/p?q=1"), &[("X-Test", "yes"), ("Content-Length", "999")], b"body".to_vec()).await.unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.peer_chain.is_none()), (200, &b"hello"[..], true));
        assert_eq!(r.headers.get("x-a").unwrap(), "1");
        let seen = h.await.unwrap().join("").to_ascii_lowercase();
        assert!(seen.starts_with("post /p?q=1 http/1.1\r\n"), "{seen}");
        assert!(seen.contains(&format!("host: {}\r\n", base.trim_start_matches("http://"))), "{seen}");
        assert!(seen.contains("content-length: 4\r\n") && !seen.contains("999") && seen.contains("x-test: yes"), "{seen}");
    }

    #[tokio::test]
    async fn body_longer_than_the_cap_is_an_error_carrying_the_status() {
        let (base, _h) = server(vec![answer("500 Internal Server Error", "", &"x".repeat(101))]).await;
        let err = plain(Redirects::Returned, 100).get(&base, &[("a", "b")]).await.unwrap_err();
        assert!(matches!(err, NetError::TooLarge { max: 100, status: 500, .. }), "{err}");
    }

    #[tokio::test]
    async fn redirects_are_returned_as_they_are_when_not_followed() {
        let (base, _h) = server(vec![answer("302 Found", "location: /elsewhere\r\n", "")]).await;
        let r = plain(Redirects::Returned, 100).get(&base, &[("a", "b")]).await.unwrap();
        assert_eq!((r.status, r.headers.get("location").unwrap().to_str().unwrap()), (302, "/elsewhere"));
    }

    #[tokio::test]
    async fn same_origin_redirects_are_followed_and_others_refused() {
        let (base, h) = server(vec![answer("302 Found", "location: /next\r\n", ""), answer("200 OK", "", "done")]).await;
        let r = plain(Redirects::SameOrigin { max: 3 }, 100).get(&format!("{base}/first"), &[("a", "b")]).await.unwrap();
        assert_eq!((r.body.as_slice(), r.url.ends_with("/next")), (&b"done"[..], true));
        assert!(h.await.unwrap()[1].starts_with("GET /next "));
        let (base, _h) = server(vec![answer("302 Found", "location: http://169.254.169.254/\r\n", "")]).await;
        let err = plain(Redirects::SameOrigin { max: 3 }, 100).get(&base, &[("a", "b")]).await.unwrap_err();
        assert!(matches!(&err, NetError::Redirect { location, .. } if location == "http://169.254.169.254/"), "{err}");
    }

    #[tokio::test]
    async fn redirect_loops_stop_after_the_maximum() {
        let loops = (0..3).map(|_| answer("302 Found", "location: /again\r\n", "")).collect();
        let (base, _h) = server(loops).await;
        let err = plain(Redirects::SameOrigin { max: 2 }, 100).get(&base, &[("a", "b")]).await.unwrap_err();
        assert!(matches!(&err, NetError::Redirect { location, .. } if location.contains("too many")), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_hits_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let mut c = plain(Redirects::Returned, 100);
        c.policy.timeout = Duration::from_millis(200);
        let err = c.get(&url, &[("a", "b")]).await.unwrap_err();
        assert!(matches!(err, NetError::Timeout { .. }), "{err}");
        drop(l);
    }

    #[tokio::test]
    async fn private_destinations_are_refused_before_connecting() {
        let (base, h) = server(vec![answer("200 OK", "", "reached")]).await;
        let mut c = plain(Redirects::Returned, 100);
        c.policy.network = Network::PublicOnly;
        let err = c.get(&base, &[("a", "b")]).await.unwrap_err();
        assert!(matches!(err, NetError::Policy(PolicyError::PrivateAddress { .. })), "{err}");
        assert!(!h.is_finished());
        h.abort();
    }

    #[tokio::test]
    async fn caller_host_header_must_name_the_same_server() {
        let (base, _h) = server(vec![]).await;
        let err = plain(Redirects::Returned, 100).get(&base, &[("Host", "evil.example")]).await.unwrap_err();
        assert!(matches!(err, NetError::Policy(PolicyError::HostMismatch { .. })), "{err}");
    }
}
