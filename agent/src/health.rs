//! `/readyz` (200 when every credential is issued and unexpired, 503 otherwise),
//! `/livez`, and Prometheus `/metrics` on an optional address.
//!
//! Any local user can ask `/readyz`, and the reasons a credential is missing
//! quote the broker's refusals (the bot's name, its roles and their patterns)
//! and the outputs' paths; they are shown only with `health.details: true`.

use super::metrics::Metrics;
use sigil_core::clock::Clock;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// Why the health endpoint cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// Binding failed.
    #[error("cannot listen on {addr} for health and metrics: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The body of `/readyz` when not ready: the reasons with `details`, else a count.
pub fn not_ready_text(why: &[String], details: bool) -> String {
    if details {
        format!("not ready:\n{}\n", why.join("\n"))
    } else {
        format!("not ready: {} credential(s) not issued or expired (details in the agent log)\n", why.len())
    }
}

/// The router; `details` shows on `/readyz` why each credential is not ready.
pub fn router(metrics: Arc<Metrics>, clock: Arc<dyn Clock>, details: bool) -> Router {
    let (m1, c1) = (metrics.clone(), clock.clone());
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let (m, c) = (m1.clone(), c1.clone());
                async move {
                    match m.readiness(c.now()) {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, not_ready_text(&why, details)),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let (m, c) = (metrics.clone(), clock.clone());
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render(c.now())).into_response() }
            }),
        )
}

/// Binds the health listener.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, HealthError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| HealthError::Bind { addr: addr.to_string(), source })
}

/// Most open connections to the health listener.
pub const MAX_CONNECTIONS: usize = 128;
/// Of which idle ones (every connection here is anonymous): beyond, a new
/// connection closes the oldest idle one of the peer holding the most, so
/// probes get through a flood of idle connections (from any local user: they
/// all come from 127.0.0.1).
pub const MAX_IDLE_SHARE: usize = 96;

/// Serves until the task is dropped, bounded as the broker port is
/// (`sigil_core::listen::serve_plain`): 128 connections, header read 10 s, idle 60 s.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) {
    use sigil_core::listen::{conns::Connections, limits};
    let counts = limits::Effective { total: MAX_CONNECTIONS, per_peer: MAX_CONNECTIONS, anonymous: MAX_IDLE_SHARE, anonymous_per_peer: MAX_CONNECTIONS };
    let registry = Connections::new(counts);
    sigil_core::listen::serve_plain(listener, app, limits::ConnLimits::default(), registry, std::future::pending()).await
}
