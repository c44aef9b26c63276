//! The broker's network front: one TLS port serving gRPC (h2) and HTTPS.
//!
//! Every connection is admitted by [`conns::Connections`] (per-peer and total
//! caps, headroom for callers with a client certificate) and bounded in time
//! (see [`limits::ConnLimits`]): hyper gets a timer, without which its HTTP/1
//! header-read timeout and HTTP/2 keep-alive silently do nothing.

pub mod conns;
pub mod convert;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod tls;

use crate::peer::PeerKey;
use crate::service::Broker;
use conns::{Activity, Connections};
use limits::ConnLimits;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// The verified client certificate of a connection (leaf DER), if any.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<std::sync::Arc<[u8]>>);

/// The remote address of a connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// How long a closing connection may finish its requests.
const GRACE: Duration = Duration::from_secs(5);

/// Serves until `shutdown` resolves, with the default limits fitted to the
/// current open-files limit.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: rustls::ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with(listener, broker, tls, ConnLimits::default(), limits::fd_limit(), shutdown).await
}

/// Serves until `shutdown` resolves, enforcing `limits` fitted to `fd_limit`.
pub async fn serve_with(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: rustls::ServerConfig,
    limits: ConnLimits,
    fd_limit: Option<u64>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let grpc = tonic::service::Routes::new(grpc::Api::new(broker.clone()).into_service()).into_axum_router();
    let app = http::router(broker).merge(grpc);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let registry = Connections::new(limits.effective(fd_limit));
    let e = registry.limits();
    tracing::info!(max = e.total, per_peer = e.per_peer, anonymous = e.anonymous, "connection limits");
    tokio::pin!(shutdown);
    while let Some((tcp, peer, slot)) = next_admitted(&listener, &registry, &mut shutdown).await {
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(limits.handshake_timeout(), acceptor.accept(tcp));
            let stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                // Evicted while stalled in the handshake.
                _ = slot.activity.close.notified() => return,
            };
            let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| std::sync::Arc::<[u8]>::from(c.as_ref()));
            if cert.is_some() {
                slot.identified();
            }
            let peer_cert = PeerCert(cert);
            let activity = slot.activity.clone();
            let svc = tower::service_fn(move |mut req: ::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer_cert.clone());
                req.extensions_mut().insert(PeerAddr(peer));
                let busy = Busy::start(&activity);
                let grpc = is_grpc(&req);
                let call = tokio::time::timeout(limits.request_timeout(), app.clone().oneshot(req));
                async move {
                    let r = call.await.unwrap_or_else(|_| Ok(timed_out(grpc)));
                    drop(busy);
                    r
                }
            });
            serve_connection(stream, svc, &limits, &slot.activity, peer).await;
            drop(slot);
        });
    }
    Ok(())
}

/// The next connection `registry` admits, or `None` once `shutdown` resolves. A failed
/// accept (out of descriptors, say) is retried after 50 ms; a refused connection is closed.
async fn next_admitted<F: Future<Output = ()>>(
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
async fn serve_connection<I, S>(
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

fn is_grpc<B>(req: &::http::Request<B>) -> bool {
    req.headers().get(::http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The answer to a request that did not complete in time (e.g. a body that
/// never ends): gRPC's DEADLINE_EXCEEDED, or HTTP 408.
fn timed_out(grpc: bool) -> axum::response::Response {
    if grpc {
        tonic::Status::deadline_exceeded("request not completed in time").into_http()
    } else {
        use axum::response::IntoResponse;
        (::http::StatusCode::REQUEST_TIMEOUT, "request not completed in time\n").into_response()
    }
}

/// Marks one request in flight on a connection, until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(a: &Arc<Activity>) -> Self {
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
