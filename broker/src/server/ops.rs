//! The operator listener (`metrics_listen`, plain HTTP, off by default):
//! `/metrics` (Prometheus text), `/readyz`, `/healthz`; and the readiness
//! decision the public port's `/readyz` shares.
//!
//! Why not the public TLS port: `/metrics` counts requests per RPC and joins
//! per method, which tells an outsider how the broker is used and whether an
//! attack works (refusals per join method). It is served on its own listener,
//! meant for 127.0.0.1 or a monitoring network; see docs/security.md.
//!
//! Readiness is a store round-trip bounded by [`READY_TIMEOUT`], at most one
//! in flight and its answer reused for [`READY_CACHE`]: anyone who can reach
//! `/readyz` (the public port has one too) costs the store at most one probe
//! per second, however often they ask.

use crate::metrics::Metrics;
use crate::store::Store;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a readiness probe waits for the store.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a probe's answer is reused.
pub const READY_CACHE: Duration = Duration::from_secs(1);
/// Most open connections to the operator listener.
pub const MAX_CONNECTIONS: usize = 64;
/// Of which idle ones (every connection here is anonymous): beyond, a new
/// connection closes the oldest idle one of the peer holding the most.
pub const MAX_IDLE_SHARE: usize = 48;

/// Why the operator listener cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// Binding failed.
    #[error("cannot listen on {addr} for metrics (metrics_listen): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The readiness decision: the store answers a round-trip in time.
pub struct Readiness {
    store: Arc<dyn Store>,
    last: Mutex<Option<(Instant, bool)>>,
    /// Held by the one probe in flight, until the store answers (even after
    /// the caller stopped waiting).
    probe: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Readiness")
    }
}

impl Readiness {
    /// Readiness of `store`.
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self { store, last: Mutex::new(None), probe: Default::default() })
    }

    fn cached(&self) -> Option<bool> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.filter(|(at, _)| at.elapsed() < READY_CACHE).map(|(_, ok)| ok)
    }

    fn remember(&self, ok: bool) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
    }

    /// The last answer, without probing (for the `sigil_broker_ready` gauge).
    pub fn last(&self) -> bool {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|(_, ok)| ok)
    }

    /// True when the store answered a round-trip within [`READY_TIMEOUT`].
    pub async fn check(self: &Arc<Self>) -> bool {
        if let Some(ok) = self.cached() {
            return ok;
        }
        let Ok(guard) = tokio::time::timeout(READY_TIMEOUT, self.probe.clone().lock_owned()).await else {
            return false;
        };
        // Another caller may have probed while this one waited.
        if let Some(ok) = self.cached() {
            return ok;
        }
        let me = self.clone();
        let probe = tokio::spawn(async move {
            let ok = me.store.ping().await.is_ok();
            me.remember(ok);
            drop(guard);
            ok
        });
        match tokio::time::timeout(READY_TIMEOUT, probe).await {
            Ok(Ok(ok)) => ok,
            _ => {
                self.remember(false);
                false
            }
        }
    }
}

/// `/readyz`: 200 "ready" or 503 (no detail: anyone may ask).
pub async fn readyz(ready: Arc<Readiness>) -> impl IntoResponse {
    if ready.check().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the store did not answer in time\n")
    }
}

/// The operator router.
pub fn router(metrics: Arc<Metrics>, ready: Arc<Readiness>) -> Router {
    let r = ready.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || readyz(r.clone())))
        .route(
            "/metrics",
            get(move || {
                let (m, r) = (metrics.clone(), ready.clone());
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render(r.check().await)).into_response() }
            }),
        )
}

/// Binds the operator listener.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, OpsError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| OpsError::Bind { addr: addr.to_string(), source })
}

/// Serves until `shutdown` resolves, bounded like the broker port
/// (`sigil_core::listen::serve_plain`): [`MAX_CONNECTIONS`], header read 10 s, idle 60 s.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: impl std::future::Future<Output = ()> + Send) {
    use sigil_core::listen::{conns::Connections, limits};
    let counts = limits::Effective { total: MAX_CONNECTIONS, per_peer: MAX_CONNECTIONS, anonymous: MAX_IDLE_SHARE, anonymous_per_peer: MAX_CONNECTIONS };
    sigil_core::listen::serve_plain(listener, app, limits::ConnLimits::default(), Connections::new(counts), shutdown).await
}

/// Serves the operator endpoints of `broker` on `listener` in the background,
/// for as long as the process runs.
pub fn spawn(listener: tokio::net::TcpListener, broker: &crate::service::Broker) -> tokio::task::JoinHandle<()> {
    let app = router(broker.metrics.clone(), Readiness::new(broker.store.clone()));
    tokio::spawn(serve(listener, app, std::future::pending()))
}
