//! The one Sigil API client: address parsing, mTLS channel, typed calls.
//!
//! Used by the `sigil` CLI, the agent and the Terraform provider so that nothing
//! talks to the broker API twice.
//!
//! **Failover.** An address may name several brokers, comma-separated
//! (`a:8443,b:8443`), and a DNS name may resolve to several addresses. The client
//! tries them in order, each with the connect timeout ([`Timeouts::connect`],
//! default [`CONNECT_TIMEOUT`]) for TCP, TLS and HTTP/2 set-up together, and
//! moves on only when the connection cannot be set up. Once a
//! connection stands, an answer of the broker (for example PermissionDenied) is
//! final: calls are never repeated on another broker.
//!
//! **Bounds.** Nothing waits unbounded: name resolution and each address's
//! set-up get the connect timeout, each call the call timeout
//! ([`Timeouts::call`], default [`CALL_TIMEOUT`]). So a command fails at most
//! `connect x addresses tried + call` after it starts (a single broker that
//! is frozen: 5 s; refusing connections: at once), with an error naming each
//! address and the phase that timed out.

use crate::identity::Identity;
use crate::sigil::v1::sigil_client::SigilClient;
use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Why a connection to the broker could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker address is malformed.
    #[error("invalid broker address {0:?}: expected HOST:PORT or https://HOST:PORT (several separated by commas)")]
    InvalidAddress(String),
    /// More broker addresses than [`MAX_BROKERS`].
    #[error("too many broker addresses ({0}); at most {MAX_BROKERS}")]
    TooManyAddresses(usize),
    /// TLS or connection set-up failed.
    #[error("cannot connect to broker at {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// No address could be connected to; every attempt and its reason, in order.
    #[error("cannot connect to any broker address: {}", render_attempts(.0))]
    Unreachable(Vec<Attempt>),
}

/// One failed connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The address as configured, with the resolved IP when it differs.
    pub addr: String,
    /// Why it failed (connection-level only).
    pub reason: String,
}

fn render_attempts(attempts: &[Attempt]) -> String {
    attempts.iter().map(|a| format!("{} ({})", a.addr, a.reason)).collect::<Vec<_>>().join("; ")
}

/// Largest message the client accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Time allowed per address for TCP connect, TLS handshake and HTTP/2 set-up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for one call (unary RPC), from sending the request to the
/// whole response, once the connection stands.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The time bounds of every broker call made through this client (CLI, agent,
/// provider). Set by `--connect-timeout`/`--call-timeout` (CLI),
/// `SIGIL_CONNECT_TIMEOUT`/`SIGIL_CALL_TIMEOUT` (CLI and provider),
/// `broker_timeouts` (agent config), `connect_timeout`/`call_timeout` (provider block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Per address: TCP connect, TLS handshake and HTTP/2 set-up together.
    pub connect: Duration,
    /// Per call, once connected: request sent to whole response.
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: CONNECT_TIMEOUT, call: CALL_TIMEOUT }
    }
}

/// Longest timeout accepted from a setting (one hour).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Parses a timeout setting: a whole number with unit `ms`, `s` or `m`
/// (`500ms`, `5s`, `2m`); between 1 ms and [`MAX_TIMEOUT`].
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 5s or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("invalid duration {text:?}: expected e.g. 500ms, 5s or 2m")),
    };
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!("invalid duration {text:?}: must be between 1ms and {}s", MAX_TIMEOUT.as_secs()));
    }
    Ok(d)
}

/// Most broker addresses in one list.
pub const MAX_BROKERS: usize = 16;

/// Most addresses one DNS name is expanded to.
pub const MAX_ADDRS_PER_NAME: usize = 8;

/// Normalizes `HOST:PORT` to `https://HOST:PORT`. A comma-separated list is
/// checked entry by entry and returned normalized, still comma-separated.
pub fn normalize_addr(addr: &str) -> Result<String, ClientError> {
    Ok(parse_addrs(addr)?.join(","))
}

/// Splits a comma-separated broker list and normalizes each entry.
pub fn parse_addrs(list: &str) -> Result<Vec<String>, ClientError> {
    let out = list.split(',').map(normalize_one).collect::<Result<Vec<_>, _>>()?;
    if out.len() > MAX_BROKERS {
        return Err(ClientError::TooManyAddresses(out.len()));
    }
    Ok(out)
}

fn normalize_one(addr: &str) -> Result<String, ClientError> {
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
    let uri = url.parse::<http::Uri>().map_err(|_| ClientError::InvalidAddress(addr.to_string()))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(ClientError::InvalidAddress(addr.to_string()));
    }
    Ok(url)
}

/// One dial target: the URL to connect to and, for a resolved DNS name, the
/// name the broker's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    label: String,
    url: String,
    server_name: Option<String>,
}

/// The targets for one normalized `https://HOST[:PORT]` URL: itself when HOST is
/// an IP literal, else each address HOST resolves to (verified against HOST).
async fn targets(url: &str, timeouts: Timeouts) -> Result<Vec<Target>, String> {
    let uri: http::Uri = url.parse().map_err(|_| "invalid address".to_string())?;
    let host = uri.host().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(vec![Target { label: url.to_string(), url: url.to_string(), server_name: None }]);
    }
    let port = uri.port_u16().unwrap_or(443);
    let resolved = tokio::time::timeout(timeouts.connect, tokio::net::lookup_host((bare, port)))
        .await
        .map_err(|_| format!("name resolution timed out after {}", human(timeouts.connect)))?
        .map_err(|e| format!("cannot resolve {bare}: {e}"))?;
    let mut seen: Vec<SocketAddr> = Vec::new();
    for a in resolved {
        if !seen.contains(&a) && seen.len() < MAX_ADDRS_PER_NAME {
            seen.push(a);
        }
    }
    Ok(seen
        .into_iter()
        .map(|a| Target {
            label: format!("{url} [{a}]"),
            url: format!("https://{a}"),
            server_name: Some(bare.to_string()),
        })
        .collect())
}

/// The error and its causes, `: `-separated (tonic's own Display says only "transport error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Seconds (or milliseconds below one second) for messages.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Dials one target. The TCP connect is made here (not by tonic) so that a
/// timeout can say which phase hung: no TCP connection (a firewall dropping
/// packets, a dead host), or TCP up but no TLS/HTTP/2 answer (a frozen or
/// overloaded broker, a black-holed load balancer). The whole set-up is
/// bounded by `timeouts.connect`; every call on the channel by `timeouts.call`
/// (and a reconnect of the channel by `timeouts.connect` again).
async fn dial(t: &Target, ca_pem: &str, identity: Option<&Identity>, timeouts: Timeouts) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(name) = &t.server_name {
        tls = tls.domain_name(name.clone());
    }
    if let Some(id) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(&id.cert_pem, id.key_pem()));
    }
    let endpoint = Endpoint::from_shared(t.url.clone())
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| chain(&e))?
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.call);
    let tcp_up = Arc::new(AtomicBool::new(false));
    let connector = {
        let tcp_up = tcp_up.clone();
        tower::service_fn(move |uri: http::Uri| {
            let tcp_up = tcp_up.clone();
            async move {
                let addr = socket_addr(&uri)?;
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                tcp_up.store(true, Ordering::SeqCst);
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        })
    };
    match tokio::time::timeout(timeouts.connect, endpoint.connect_with_connector(connector)).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) if is_elapsed(&e) => Err(phase_timeout(&tcp_up, timeouts.connect)),
        Ok(Err(e)) => Err(chain(&e)),
        Err(_) => Err(phase_timeout(&tcp_up, timeouts.connect)),
    }
}

/// The dial targets are IP literals (names are resolved before dialling).
fn socket_addr(uri: &http::Uri) -> Result<SocketAddr, std::io::Error> {
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not an IP address: {host}")))?;
    Ok(SocketAddr::new(ip, uri.port_u16().unwrap_or(443)))
}

/// Whether tonic's own connect timeout fired (it races ours).
fn is_elapsed(e: &tonic::transport::Error) -> bool {
    let mut cur = e.source();
    while let Some(c) = cur {
        if c.to_string().contains("deadline has elapsed") || c.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        cur = c.source();
    }
    false
}

fn phase_timeout(tcp_up: &AtomicBool, limit: Duration) -> String {
    if tcp_up.load(Ordering::SeqCst) {
        format!(
            "TLS/HTTP/2 set-up timed out after {}: the TCP connection was accepted but the broker did not answer (frozen, overloaded, or not a Sigil broker)",
            human(limit)
        )
    } else {
        format!("TCP connect timed out after {} (host down, or packets dropped on the way)", human(limit))
    }
}

/// Whether a call failed because the broker did not answer within the call
/// timeout ([`Timeouts::call`]).
pub fn is_call_timeout(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Cancelled
        && (status.message() == "Timeout expired"
            || status.source().is_some_and(|s| s.is::<tonic::TimeoutExpired>()))
}

/// Connects to the first reachable broker of `addrs` (a comma-separated list, see
/// the module comment). `ca_pem` is the CA that signs the brokers' TLS
/// certificates; `identity`, when given, authenticates the caller (mTLS).
pub async fn connect(
    addrs: &str,
    ca_pem: &str,
    identity: Option<&Identity>,
) -> Result<SigilClient<Channel>, ClientError> {
    connect_with_timeouts(addrs, ca_pem, identity, Timeouts::default()).await
}

/// [`connect`] with explicit [`Timeouts`].
pub async fn connect_with_timeouts(
    addrs: &str,
    ca_pem: &str,
    identity: Option<&Identity>,
    timeouts: Timeouts,
) -> Result<SigilClient<Channel>, ClientError> {
    let urls = parse_addrs(addrs)?;
    let mut failed = Vec::new();
    for url in &urls {
        let ts = match targets(url, timeouts).await {
            Ok(ts) => ts,
            Err(reason) => {
                failed.push(Attempt { addr: url.clone(), reason });
                continue;
            }
        };
        for t in ts {
            match dial(&t, ca_pem, identity, timeouts).await {
                Ok(channel) => {
                    if !failed.is_empty() {
                        tracing::warn!(connected = %t.label, skipped = %render_attempts(&failed), "broker failover: earlier addresses unreachable");
                    }
                    return Ok(SigilClient::new(channel)
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES));
                }
                Err(reason) => failed.push(Attempt { addr: t.label, reason }),
            }
        }
    }
    Err(ClientError::Unreachable(failed))
}

/// Connects with an identity file's own CA and credentials.
pub async fn connect_with_identity(
    addrs: &str,
    identity: &Identity,
) -> Result<SigilClient<Channel>, ClientError> {
    connect(addrs, &identity.ca_pem.clone(), Some(identity)).await
}

/// [`connect_with_identity`] with explicit [`Timeouts`].
pub async fn connect_with_identity_timeouts(
    addrs: &str,
    identity: &Identity,
    timeouts: Timeouts,
) -> Result<SigilClient<Channel>, ClientError> {
    connect_with_timeouts(addrs, &identity.ca_pem.clone(), Some(identity), timeouts).await
}

/// Whether a failed call never got an answer from a broker: the status was made
/// by the client's transport (connection reset, broken pipe, TLS EOF), not sent
/// by a broker. Only such failures may be retried; a broker's answer is final.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    status.source().is_some() && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
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

    #[test]
    fn a_comma_separated_list_is_normalized_entry_by_entry() {
        assert_eq!(parse_addrs(" a:1, https://b:2 ").unwrap(), vec!["https://a:1", "https://b:2"]);
        assert_eq!(normalize_addr("a:1,b:2").unwrap(), "https://a:1,https://b:2");
    }

    #[test]
    fn an_empty_entry_or_plaintext_entry_in_a_list_is_refused() {
        assert!(parse_addrs("a:1,,b:2").is_err());
        assert!(parse_addrs("a:1,http://b:2").is_err());
    }

    #[test]
    fn a_list_longer_than_the_cap_is_refused() {
        let list = vec!["a:1"; MAX_BROKERS + 1].join(",");
        assert!(matches!(parse_addrs(&list), Err(ClientError::TooManyAddresses(n)) if n == MAX_BROKERS + 1));
    }

    #[tokio::test]
    async fn a_dns_name_becomes_one_target_per_address_verified_against_the_name() {
        let ts = targets("https://localhost:8443", Timeouts::default()).await.unwrap();
        assert!(!ts.is_empty() && ts.len() <= MAX_ADDRS_PER_NAME, "{ts:?}");
        for t in &ts {
            assert_eq!(t.server_name.as_deref(), Some("localhost"));
            assert!(t.url.ends_with(":8443") && !t.url.contains("localhost"), "{t:?}");
            assert!(t.label.starts_with("https://localhost:8443 ["), "{t:?}");
        }
    }

    #[tokio::test]
    async fn an_ip_literal_is_dialled_as_given() {
        let ts = targets("https://[::1]:1", Timeouts::default()).await.unwrap();
        assert_eq!(ts, vec![Target { label: "https://[::1]:1".into(), url: "https://[::1]:1".into(), server_name: None }]);
    }

    #[test]
    fn only_a_status_made_by_the_transport_counts_as_a_transport_failure() {
        assert!(!is_transport_failure(&tonic::Status::unavailable("broker says: try later")));
        assert!(!is_transport_failure(&tonic::Status::permission_denied("no")));
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe")));
        assert!(is_transport_failure(&broken), "{broken:?}");
    }

    #[tokio::test]
    async fn a_listener_that_accepts_but_never_answers_times_out_in_the_tls_phase_within_the_bound() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        // Accept and hold every connection, never writing a byte (a frozen broker).
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = l.accept().await {
                conns.push(c);
            }
        });
        let timeouts = Timeouts { connect: Duration::from_millis(300), call: Duration::from_secs(1) };
        let start = std::time::Instant::now();
        let err = connect_with_timeouts(&format!("127.0.0.1:{port}"), "", None, timeouts).await.unwrap_err().to_string();
        let took = start.elapsed();
        held.abort();
        assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(3), "{took:?}");
        assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("TLS/HTTP/2 set-up timed out after 300ms"), "{err}");
    }

    #[test]
    fn timeouts_parse_with_a_unit_and_within_bounds() {
        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout(" 5s ").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_timeout("2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "5", "0s", "61m", "-1s", "5 s", "1h", "s"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_tonics_timeout_status_is_a_call_timeout() {
        assert!(is_call_timeout(&tonic::Status::cancelled("Timeout expired")));
        assert!(!is_call_timeout(&tonic::Status::cancelled("client went away")));
        assert!(!is_call_timeout(&tonic::Status::deadline_exceeded("Timeout expired")));
    }

    #[tokio::test]
    async fn when_no_broker_answers_the_error_names_every_address_tried() {
        let dead = |_: ()| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (a, b) = (dead(()), dead(()));
        let err = connect(&format!("127.0.0.1:{a},127.0.0.1:{b}"), "", None).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{a}")) && text.contains(&format!("127.0.0.1:{b}")), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
