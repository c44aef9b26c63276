//! Public HTTPS endpoints: OIDC discovery, JWKS, SPIFFE bundle, health.

use crate::service::Broker;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// Path of the OIDC JWKS.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Path of the SPIFFE bundle (https_web profile).
pub const BUNDLE_PATH: &str = "/.well-known/spiffe-bundle";

/// The HTTP routes.
pub fn router(broker: Arc<Broker>) -> Router {
    let ready = super::ops::Readiness::new(broker.store.clone());
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route(JWKS_PATH, get(jwks))
        .route(BUNDLE_PATH, get(bundle))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || super::ops::readyz(ready.clone())))
        .with_state(broker)
}

async fn discovery(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    let issuer = &b.settings.public_url;
    let algs: Vec<&str> = {
        let mut v: Vec<&str> = b.authority.current().jwt_public.iter().map(|(_, alg, _)| alg.jws_alg()).collect();
        v.sort();
        v.dedup();
        v
    };
    cached(Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti"],
    })))
}

async fn jwks(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    cached(Json(b.authority.current().oidc_jwks()))
}

async fn bundle(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    cached(Json(b.authority.current().spiffe_bundle(1, b.settings.refresh_hint)))
}

fn cached(body: impl IntoResponse) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=60")], body)
}
