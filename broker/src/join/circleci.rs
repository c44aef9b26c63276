//! CircleCI join: the job's `$CIRCLE_OIDC_TOKEN_V2`, issued by
//! `https://oidc.circleci.com/org/ORGANIZATION_ID` with the organization id as
//! default audience.
//!
//! Config: `organization_id` (required), `audience` (default: the organization
//! id), plus the common OIDC keys. A rule on `context_id` matches when any of
//! the job's contexts matches.

use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};
use serde_json::Value;

/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::CIRCLECI as FIELDS;
const CONTEXTS: &str = "oidc.circleci.com/context-ids";

/// What the join token must say, whatever the credential. The organization is
/// the tenant and is pinned by the issuer URL (see [`super::tenant`]).
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::host(t, "organization_id", None).map(|_| ())
}

/// Verifies a CircleCI ID token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let org = oidc::host(t, "organization_id", None)?;
    let issuer = oidc::issuer_or(t, format!("https://oidc.circleci.com/org/{org}"));
    let audience = t.config.get("audience").cloned().unwrap_or_else(|| org.clone());
    let claims = oidc::verify_bearer(t, input, env.now, &issuer, &audience).await?;
    let mut attrs = oidc::pick(&claims, &[
        ("sub", "sub"),
        ("project_id", "oidc.circleci.com/project-id"),
        ("vcs_origin", "oidc.circleci.com/vcs-origin"),
        ("vcs_ref", "oidc.circleci.com/vcs-ref"),
        ("ssh_rerun", "oidc.circleci.com/ssh-rerun"),
    ]);
    // The issuer URL carries the organization, and `iss` was checked.
    attrs.insert("organization_id".into(), org);
    let contexts: Vec<String> = claims.get(CONTEXTS).and_then(Value::as_array).map(|l| l.iter().filter_map(oidc::scalar).collect()).unwrap_or_default();
    oidc::allow_any_of(t, &attrs, "context_id", &contexts)?;
    if !contexts.is_empty() {
        attrs.insert("context_ids".into(), contexts.join(","));
    }
    Ok(attrs)
}
