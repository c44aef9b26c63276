//! GitLab CI join: the job's `id_tokens:` ID token, issued by `https://gitlab.com`
//! or a self-managed instance at `https://DOMAIN`.
//!
//! Config: `audience` (required; the `aud:` of the job's `id_tokens` entry),
//! `domain` (self-managed host, default `gitlab.com`), plus the common OIDC keys.

use super::tenant::{self, Names};
use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};

/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::GITLAB as FIELDS;

fn issuer(t: &JoinToken) -> Result<String, JoinError> {
    Ok(oidc::issuer_or(t, format!("https://{}", oidc::host(t, "domain", Some("gitlab.com"))?)))
}

/// What the join token must say, whatever the credential: known settings,
/// rule fields, and on gitlab.com a tenant pinned by every rule.
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::required(t, "audience")?;
    tenant::check(t, &issuer(t)?, Names::Attributes)
}

/// Verifies a GitLab CI ID token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let issuer = issuer(t)?;
    let claims = oidc::verify_bearer(t, input, env.now, &issuer, oidc::required(t, "audience")?).await?;
    let attrs = oidc::pick_same(&claims, FIELDS);
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}
