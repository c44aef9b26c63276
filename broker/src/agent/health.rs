//! `/readyz` (200 when every credential is issued and unexpired, 503 with the
//! reasons otherwise), `/livez`, and Prometheus `/metrics` on an optional address.

use super::metrics::Metrics;
use crate::ca::clock::Clock;
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

/// The router.
pub fn router(metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Router {
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
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready:\n{}\n", why.join("\n"))),
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

/// Serves until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) {
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "health endpoint stopped");
    }
}
