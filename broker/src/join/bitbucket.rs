//! Bitbucket Pipelines join: the step's `$BITBUCKET_STEP_OIDC_TOKEN` (with
//! `oidc: true`), issued by
//! `https://api.bitbucket.org/2.0/workspaces/WORKSPACE/pipelines-config/identity/oidc`.
//!
//! Config: `workspace` (the workspace slug, builds the issuer), `audience`
//! (required; Bitbucket's is `ari:cloud:bitbucket::workspace/{WORKSPACE_UUID}`),
//! plus the common OIDC keys.

use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};

/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::BITBUCKET as FIELDS;
const CLAIMS: &[(&str, &str)] = &[
    ("sub", "sub"),
    ("workspace_uuid", "workspaceUuid"),
    ("repository_uuid", "repositoryUuid"),
    ("deployment_environment_uuid", "deploymentEnvironmentUuid"),
    ("branch_name", "branchName"),
    ("pipeline_uuid", "pipelineUuid"),
    ("step_uuid", "stepUuid"),
    ("account_uuid", "accountUuid"),
];

/// What the join token must say, whatever the credential. The workspace is
/// the tenant and is pinned by the issuer URL (see [`super::tenant`]).
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::required(t, "audience")?;
    if !t.config.contains_key("issuer") {
        oidc::host(t, "workspace", None)?;
    }
    Ok(())
}

/// Verifies a Bitbucket Pipelines ID token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let issuer = match t.config.get("issuer") {
        Some(_) => oidc::issuer_or(t, String::new()),
        None => format!("https://api.bitbucket.org/2.0/workspaces/{}/pipelines-config/identity/oidc", oidc::host(t, "workspace", None)?),
    };
    let claims = oidc::verify_bearer(t, input, env.now, &issuer, oidc::required(t, "audience")?).await?;
    let attrs = oidc::pick(&claims, CLAIMS);
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}
