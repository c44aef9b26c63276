//! Public HTTPS endpoints: OIDC discovery, JWKS, SPIFFE bundle, health.

use crate::service::Broker;
use axum::extract::{Path, State};
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

/// The published SSH user CA keys, one authorized_keys line each (sshd `TrustedUserCAKeys`).
pub const SSH_USER_CA_PATH: &str = "/ssh/user_ca.pub";
/// The published SSH host CA keys, one line each (`@cert-authority` in known_hosts).
pub const SSH_HOST_CA_PATH: &str = "/ssh/host_ca.pub";

/// The OpenSSH KRL of every published SSH CA key (sshd `RevokedKeys`, ssh
/// `RevokedHostKeys`, `ssh-keygen -Q -f`).
pub const SSH_KRL_PATH: &str = "/ssh/revoked_keys.krl";

/// The published database CA certificates, PEM (PostgreSQL `ssl_ca_file`,
/// MariaDB `ssl_ca`, a client's `sslrootcert` for database-server certificates).
pub const DATABASE_CA_PATH: &str = "/ca/database.pem";
/// The published Kubernetes CA certificates, PEM (the API server's `--client-ca-file`).
pub const KUBERNETES_CA_PATH: &str = "/ca/kubernetes.pem";

/// The HTTP routes.
pub fn router(broker: Arc<Broker>) -> Router {
    let ready = super::ops::Readiness::new(broker.store.clone());
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route(JWKS_PATH, get(jwks))
        .route(BUNDLE_PATH, get(bundle))
        .route("/crl/{file}", get(crl))
        .route(SSH_USER_CA_PATH, get(ssh_user_ca))
        .route(SSH_HOST_CA_PATH, get(ssh_host_ca))
        .route(SSH_KRL_PATH, get(ssh_krl))
        .route(DATABASE_CA_PATH, get(|State(b): State<Arc<Broker>>| async move { ca_pem(b.authority.current().database.bundle_pem.clone()) }))
        .route(KUBERNETES_CA_PATH, get(|State(b): State<Arc<Broker>>| async move { ca_pem(b.authority.current().kubernetes.bundle_pem.clone()) }))
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
    let ca = b.authority.current();
    cached(Json(ca.spiffe_bundle(ca.sequence(), b.settings.refresh_hint)))
}

fn ssh_lines(lines: Vec<String>) -> impl IntoResponse {
    let body: String = lines.into_iter().map(|l| l + "\n").collect();
    cached(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body))
}

fn ca_pem(pem: String) -> impl IntoResponse {
    cached(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}

async fn ssh_user_ca(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    ssh_lines(b.ssh_ca_public_keys().0)
}

async fn ssh_host_ca(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    ssh_lines(b.ssh_ca_public_keys().1)
}

/// `GET /ssh/revoked_keys.krl`: from this replica's cache
/// (`service::revocation`), rebuilt only when the revocations or the
/// published SSH CA keys changed.
async fn ssh_krl(State(b): State<Arc<Broker>>) -> axum::response::Response {
    match b.ssh_krl().await {
        Ok(k) => ([(header::CONTENT_TYPE, "application/octet-stream"), (header::CACHE_CONTROL, "no-cache")], k.bytes.clone()).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the SSH KRL");
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "SSH KRL temporarily unavailable\n").into_response()
        }
    }
}

/// `GET /crl/index.json`: every served CRL, with its CA key's purpose.
pub const CRL_INDEX: &str = "index.json";

fn crl_index(b: &Broker) -> impl IntoResponse {
    let base = &b.settings.public_url;
    let crls: Vec<serde_json::Value> = b
        .authority
        .current()
        .crl_issuers()
        .into_iter()
        .map(|(purpose, ca)| {
            json!({
                "key_id": ca.key_id,
                "purpose": purpose,
                "url": crate::ca::crl_url(base, &ca.key_id),
                "pem_url": format!("{base}/crl/{}.pem", ca.key_id),
            })
        })
        .collect();
    ([(header::CACHE_CONTROL, "no-cache")], Json(json!({ "crls": crls })))
}

/// Longest CRL file name accepted (`<key id>.crl`; key ids are 32 hex digits).
const MAX_CRL_NAME: usize = 80;

/// `GET /crl/<key-id>.crl` (DER, `application/pkix-crl`) or
/// `/crl/<key-id>.pem`: the CRL of that CA key, from this replica's cache
/// (`service::revocation`). Unknown keys are 404.
async fn crl(State(b): State<Arc<Broker>>, Path(file): Path<String>) -> axum::response::Response {
    use axum::http::StatusCode;
    if file == CRL_INDEX {
        return crl_index(&b).into_response();
    }
    let parsed = if file.len() > MAX_CRL_NAME {
        None
    } else if let Some(id) = file.strip_suffix(".crl") {
        Some((id, false))
    } else {
        file.strip_suffix(".pem").map(|id| (id, true))
    };
    let Some((id, pem)) = parsed.filter(|(id, _)| !id.is_empty() && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')) else {
        return (StatusCode::NOT_FOUND, "no such CRL: use /crl/<CA key id>.crl or .pem\n").into_response();
    };
    match b.crl(id).await {
        Ok(Some(c)) => {
            let no_cache = (header::CACHE_CONTROL, "no-cache");
            if pem {
                let body = sigil_schemas::identity::to_pem("X509 CRL", &c.der);
                ([(header::CONTENT_TYPE, "application/x-pem-file"), no_cache], body).into_response()
            } else {
                ([(header::CONTENT_TYPE, "application/pkix-crl"), no_cache], c.der.clone()).into_response()
            }
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no CA with this key id\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build a CRL");
            (StatusCode::SERVICE_UNAVAILABLE, "CRL temporarily unavailable\n").into_response()
        }
    }
}

fn cached(body: impl IntoResponse) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=60")], body)
}
