//! The broker's network front: one TLS port serving gRPC (h2) and HTTPS.
//!
//! Every connection is admitted by [`conns::Connections`] (per-peer and total
//! caps, headroom for callers with a client certificate) and bounded in time
//! (see [`limits::ConnLimits`]): hyper gets a timer, without which its HTTP/1
//! header-read timeout and HTTP/2 keep-alive silently do nothing.

pub mod client_auth;
pub mod convert;
pub mod grpc;
pub mod http;
pub mod ops;
pub mod serving_cert;
pub mod tls;
#[cfg(test)]
mod tls_tests;

use crate::service::Broker;
pub use sigil_core::listen::{conns, limits};
use sigil_core::listen::{next_admitted, serve_connection, Busy};
use conns::Connections;
use limits::ConnLimits;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// The verified client certificate of a connection (leaf DER), if any.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<std::sync::Arc<[u8]>>);

/// The remote address of a connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

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
    // Stops with the server (the task holds the broker weakly; aborted on return).
    let sweeper = AbortOnDrop(crate::service::instances::spawn_sweeper(&broker));
    // CA reload watcher and rotation schedule; stopped with the server.
    let ca_tasks = crate::service::ca::spawn(&broker);
    let grpc = tonic::service::Routes::new(grpc::Api::new(broker.clone()).into_service()).into_axum_router();
    let metrics = broker.metrics.clone();
    let app = http::router(broker).merge(grpc);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let registry = Connections::new(limits.effective(fd_limit));
    let e = registry.limits();
    tracing::info!(max = e.total, per_peer = e.per_peer, anonymous = e.anonymous, anonymous_per_peer = e.anonymous_per_peer, "connection limits");
    tokio::pin!(shutdown);
    while let Some((tcp, peer, slot)) = next_admitted(&listener, &registry, &mut shutdown).await {
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // The deadline counts from accept: waiting for the peer's turn
            // (see `conns`) and the handshake itself.
            let handshake = tokio::time::timeout(limits.handshake_timeout(), async {
                slot.turn().await;
                acceptor.accept(tcp).await
            });
            let stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                // Evicted while waiting or stalled in the handshake.
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
                let rpc = grpc.then(|| crate::metrics::rpc::of_path(req.uri().path()));
                let call = tokio::time::timeout(limits.request_timeout(), app.clone().oneshot(req));
                let (metrics, start) = (metrics.clone(), std::time::Instant::now());
                async move {
                    let r = call.await.unwrap_or_else(|_| Ok(timed_out(grpc)));
                    drop(busy);
                    if let (Some(slot), Ok(resp)) = (rpc, &r) {
                        metrics.rpc(slot, resp.headers().get("grpc-status").map(|v| v.as_bytes()), start.elapsed());
                    }
                    r
                }
            });
            serve_connection(stream, svc, &limits, &slot.activity, peer).await;
            drop(slot);
        });
    }
    drop(sweeper);
    for t in ca_tasks {
        t.abort();
    }
    Ok(())
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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

