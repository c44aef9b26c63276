//! Azure DevOps Pipelines join: the pipeline's OIDC token (`System.OidcRequestUri`),
//! issued by `https://vstoken.dev.azure.com/ORGANIZATION_ID`, subject
//! `p://ORGANIZATION/PROJECT/PIPELINE`.
//!
//! Config: `organization_id` (required, the organization GUID), `audience`
//! (default `api://AzureADTokenExchange`), plus the common OIDC keys.

use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};

/// Azure DevOps' default audience for federated pipeline tokens.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::AZURE_DEVOPS as FIELDS;
const CLAIMS: &[(&str, &str)] = &[
    ("sub", "sub"),
    ("organization_id", "org_id"),
    ("project_id", "prj_id"),
    ("definition_id", "def_id"),
    ("repository_id", "rpo_id"),
    ("repository_uri", "rpo_uri"),
    ("repository_version", "rpo_ver"),
    ("repository_ref", "rpo_ref"),
    ("run_id", "run_id"),
];

/// Splits `p://org/project/pipeline` (pipeline names may contain `/`).
fn subject_parts(sub: &str) -> Option<(&str, &str, &str)> {
    let rest = sub.strip_prefix("p://")?;
    let (org, rest) = rest.split_once('/')?;
    let (project, pipeline) = rest.split_once('/')?;
    (!org.is_empty() && !project.is_empty() && !pipeline.is_empty()).then_some((org, project, pipeline))
}

/// What the join token must say, whatever the credential. The organization is
/// the tenant and is pinned by the issuer URL and `org_id` (see [`super::tenant`]).
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::host(t, "organization_id", None).map(|_| ())
}

/// Verifies an Azure DevOps pipeline ID token against the join token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let org = oidc::host(t, "organization_id", None)?;
    let issuer = oidc::issuer_or(t, format!("https://vstoken.dev.azure.com/{org}"));
    let audience = t.config.get("audience").map(String::as_str).unwrap_or(DEFAULT_AUDIENCE);
    let claims = oidc::verify_bearer(t, input, env.now, &issuer, audience).await?;
    let mut attrs = oidc::pick(&claims, CLAIMS);
    if attrs.get("organization_id").is_some_and(|o| !o.eq_ignore_ascii_case(&org)) {
        return Err(JoinError::Rejected("azure_devops ID token: org_id is not the configured organization_id".into()));
    }
    let sub = attrs.get("sub").cloned().unwrap_or_default();
    let (o, p, pl) = subject_parts(&sub)
        .ok_or_else(|| JoinError::Rejected(format!("azure_devops ID token: subject {sub:?} is not p://ORGANIZATION/PROJECT/PIPELINE")))?;
    for (k, v) in [("organization_name", o), ("project_name", p), ("pipeline_name", pl)] {
        attrs.insert(k.into(), v.into());
    }
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pipeline_subjects_split_into_organization_project_and_pipeline() {
        assert_eq!(super::subject_parts("p://acme/web/deploy/prod"), Some(("acme", "web", "deploy/prod")));
        assert_eq!(super::subject_parts("sc://acme/web/conn"), None);
        assert_eq!(super::subject_parts("p://acme/web"), None);
    }
}
