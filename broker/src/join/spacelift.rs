//! Spacelift join: the run's `SPACELIFT_OIDC_TOKEN`, issued by
//! `https://ACCOUNT.app.spacelift.io` with that host name as audience.
//!
//! Config: `hostname` (required, e.g. `acme.app.spacelift.io`), `audience`
//! (default: the host name), plus the common OIDC keys.

use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};

/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::SPACELIFT as FIELDS;
const CLAIMS: &[(&str, &str)] = &[
    ("sub", "sub"),
    ("space_id", "spaceId"),
    ("caller_type", "callerType"),
    ("caller_id", "callerId"),
    ("run_type", "runType"),
    ("run_id", "runId"),
    ("scope", "scope"),
];

/// What the join token must say, whatever the credential. The account is the
/// tenant and is pinned by the issuer host `ACCOUNT.app.spacelift.io` (see [`super::tenant`]).
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::host(t, "hostname", None).map(|_| ())
}

/// Verifies a Spacelift run token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let host = oidc::host(t, "hostname", None)?;
    let issuer = oidc::issuer_or(t, format!("https://{host}"));
    let audience = t.config.get("audience").cloned().unwrap_or(host);
    let claims = oidc::verify_bearer(t, input, env.now, &issuer, &audience).await?;
    let attrs = oidc::pick(&claims, CLAIMS);
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}
