//! GitHub Actions join: the workflow's OIDC ID token (`ACTIONS_ID_TOKEN_REQUEST_URL`
//! with `audience=...`), issued by `https://token.actions.githubusercontent.com`,
//! or by a GitHub Enterprise Server at `https://HOST/_services/token`.
//!
//! Config: `audience` (required), `enterprise_host` (GHES), `enterprise_slug`
//! (GitHub Enterprise Cloud customised issuer), plus the common OIDC keys.

use super::tenant::{self, Names};
use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};

/// github.com's issuer.
pub const ISSUER: &str = "https://token.actions.githubusercontent.com";
/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::GITHUB as FIELDS;

/// The issuer the token must come from.
pub fn issuer(t: &JoinToken) -> Result<String, JoinError> {
    let default = if t.config.contains_key("enterprise_host") {
        format!("https://{}/_services/token", oidc::host(t, "enterprise_host", None)?)
    } else if t.config.contains_key("enterprise_slug") {
        format!("{ISSUER}/{}", oidc::host(t, "enterprise_slug", None)?)
    } else {
        ISSUER.to_string()
    };
    Ok(oidc::issuer_or(t, default))
}

/// What the join token must say, whatever the credential: known settings,
/// rule fields, and on github.com a tenant pinned by every rule.
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::required(t, "audience")?;
    tenant::check(t, &issuer(t)?, Names::Attributes)
}

/// Verifies a GitHub Actions ID token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let claims = oidc::verify_bearer(t, input, env.now, &issuer(t)?, oidc::required(t, "audience")?).await?;
    let attrs = oidc::pick_same(&claims, FIELDS);
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}
