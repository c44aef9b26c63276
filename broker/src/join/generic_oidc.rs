//! Generic OIDC join (method `oidc`): any issuer with discovery + JWKS, or a
//! static JWKS. Jenkins (OpenID Connect Provider plugin), Buildkite, Drone,
//! self-hosted runners ... join this way. Allow rules may name any top-level
//! claim with a string, number or boolean value.
//!
//! Config: `issuer` and `audience` (both required), plus the common OIDC keys.

use super::tenant::{self, Names};
use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};

/// Most claims turned into attributes.
pub const MAX_ATTRIBUTES: usize = 64;
/// Registered claims that are checked, not exposed.
const NOT_ATTRIBUTES: &[&str] = &["aud", "exp", "nbf", "iat", "jti"];

/// What the join token must say, whatever the credential: known settings,
/// issuer and audience, and for a shared issuer (github.com, gitlab.com,
/// app.terraform.io) a tenant pinned by every rule, as the dedicated methods require.
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::required(t, "audience")?;
    tenant::check(t, oidc::required(t, "issuer")?, Names::Claims)
}

/// Verifies an ID token from the configured issuer.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let issuer = oidc::required(t, "issuer")?;
    let claims = oidc::verify_bearer(t, input, env.now, issuer, oidc::required(t, "audience")?).await?;
    let attrs: Attributes = claims
        .iter()
        .filter(|(k, _)| !NOT_ATTRIBUTES.contains(&k.as_str()))
        .filter_map(|(k, v)| oidc::scalar(v).map(|v| (k.clone(), v)))
        .take(MAX_ATTRIBUTES)
        .collect();
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}
