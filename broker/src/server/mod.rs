//! The broker's network front: one TLS port serving gRPC (h2) and HTTPS.

pub mod convert;
pub mod grpc;
pub mod http;
pub mod tls;

use crate::service::Broker;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// The verified client certificate of a connection (leaf DER), if any.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<std::sync::Arc<[u8]>>);

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: rustls::ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let grpc = tonic::service::Routes::new(grpc::Api::new(broker.clone()).into_service()).into_axum_router();
    let app = http::router(broker).merge(grpc);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::pin!(shutdown);
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
            _ = &mut shutdown => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| std::sync::Arc::<[u8]>::from(c.as_ref()));
            let peer_cert = PeerCert(cert);
            let svc = tower::service_fn(move |mut req: ::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer_cert.clone());
                app.clone().oneshot(req)
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(io, hyper_util::service::TowerToHyperService::new(svc))
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        });
    }
}
