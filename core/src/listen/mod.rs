//! Accepting connections under caps and deadlines, shared by the broker's TLS
//! port and the agent's plain health listener.
//!
//! Every connection is admitted by [`conns::Connections`] (per-peer and total
//! caps) and bounded in time (see [`limits::ConnLimits`]): hyper gets a timer,
//! without which its HTTP/1 header-read timeout and HTTP/2 keep-alive silently
//! do nothing.

pub mod conns;
pub mod limits;

use crate::peer::PeerKey;
use conns::{Activity, Connections};
use limits::ConnLimits;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// How long a closing connection may finish its requests.
const GRACE: Duration = Duration::from_secs(5);

/// Binds a listening TCP socket on `addr` (`HOST:PORT`; the first address it
/// resolves to that binds) with a kernel accept queue of `backlog`. tokio's own
/// `bind` asks for 128: a fleet reconnecting at once overflows that, and the
/// kernel then drops connection attempts that clients retry only after 1 s, 3 s...
pub async fn bind(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        let bound = socket.set_reuseaddr(true).and_then(|()| socket.bind(a));
        match bound.and_then(|()| socket.listen(backlog.max(1))) {
            Ok(l) => {
                let cap = somaxconn();
                if cap.is_some_and(|c| c < backlog) {
                    tracing::warn!(backlog, somaxconn = ?cap, "the kernel caps the listen backlog at net.core.somaxconn");
                }
                return Ok(l);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr} resolves to no address"))))
}

/// `net.core.somaxconn` (Linux), the kernel's cap on any listen backlog.
fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// The next connection `registry` admits, or `None` once `shutdown` resolves. A failed
/// accept (out of descriptors, say) is retried after 50 ms; a refused connection is closed.
pub async fn next_admitted<F: Future<Output = ()>>(
    listener: &TcpListener,
    registry: &Arc<Connections>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> Option<(tokio::net::TcpStream, SocketAddr, conns::Slot)> {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.as_mut() => return None,
        };
        match registry.admit(PeerKey::of(Some(peer.ip()))) {
            Ok(slot) => return Some((tcp, peer, slot)),
            Err(why) => tracing::debug!(%peer, %why, "connection refused"),
        }
    }
}

/// Serves plain HTTP (no TLS; the agent's health and metrics listener) until
/// `shutdown` resolves, with the same per-connection deadlines and the counts
/// of `registry`: every connection is anonymous there, and when the share is
/// full a new one closes the oldest idle connection of the peer holding the
/// most (its own peer's if that is the one), so a flood of idle connections
/// cannot lock out a probe.
pub async fn serve_plain(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    registry: Arc<Connections>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    while let Some((tcp, peer, slot)) = next_admitted(&listener, &registry, &mut shutdown).await {
        let app = app.clone();
        tokio::spawn(async move {
            // Admitted waiting: no request is read before its turn (bounded).
            let turn = tokio::time::timeout(limits.handshake_timeout(), slot.turn());
            tokio::select! {
                r = turn => if r.is_err() { return },
                _ = slot.activity.close.notified() => return,
            }
            let activity = slot.activity.clone();
            let svc = tower::service_fn(move |req: ::http::Request<hyper::body::Incoming>| {
                let busy = Busy::start(&activity);
                let call = app.clone().oneshot(req);
                async move {
                    let r = call.await;
                    drop(busy);
                    r
                }
            });
            serve_connection(tcp, svc, &limits, &slot.activity, peer).await;
            drop(slot);
        });
    }
}

/// Serves one connection until it ends, is idle for the idle timeout, or is evicted.
pub async fn serve_connection<I, S>(
    stream: I,
    svc: S,
    limits: &ConnLimits,
    activity: &Arc<Activity>,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<::http::Request<hyper::body::Incoming>, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive())
        .keep_alive_timeout(limits.keepalive())
        .max_concurrent_streams(limits.max_streams_per_connection);
    let conn = builder.serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(svc));
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = idle(activity, limits.idle_timeout()) => None,
        _ = activity.close.notified() => None,
    };
    let r = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// Resolves once no request has been in flight for `timeout`.
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        tokio::time::sleep_until(activity.quiet_since() + timeout).await;
        if activity.in_flight.load(Ordering::SeqCst) > 0 {
            // Busy: look again a period later (the end of the request moves
            // `quiet_since`).
            tokio::time::sleep(timeout).await;
        } else if activity.quiet_since() + timeout <= tokio::time::Instant::now() {
            return;
        }
    }
}

/// Marks one request in flight on a connection, until dropped.
pub struct Busy(Arc<Activity>);

impl Busy {
    pub fn start(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.mark_done();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
