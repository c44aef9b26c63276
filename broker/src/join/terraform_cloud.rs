//! HCP Terraform / Terraform Enterprise join: the run's workload identity token
//! (`TFC_WORKLOAD_IDENTITY_TOKEN`), issued by `https://app.terraform.io` or
//! `https://HOSTNAME` for Terraform Enterprise.
//!
//! Config: `audience` (required; the `TFC_WORKLOAD_IDENTITY_AUDIENCE` of the
//! workspace), `hostname` (default `app.terraform.io`), plus the common OIDC keys.

use super::tenant::{self, Names};
use super::{oidc, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};

/// Claims usable in allow rules and exposed as `join.*` attributes.
pub use sigil_core::domain::join_method::fields::TERRAFORM_CLOUD as FIELDS;
const CLAIMS: &[(&str, &str)] = &[
    ("sub", "sub"),
    ("organization", "terraform_organization_name"),
    ("organization_id", "terraform_organization_id"),
    ("project", "terraform_project_name"),
    ("project_id", "terraform_project_id"),
    ("workspace", "terraform_workspace_name"),
    ("workspace_id", "terraform_workspace_id"),
    ("full_workspace", "terraform_full_workspace"),
    ("run_id", "terraform_run_id"),
    ("run_phase", "terraform_run_phase"),
];

fn issuer(t: &JoinToken) -> Result<String, JoinError> {
    Ok(oidc::issuer_or(t, format!("https://{}", oidc::host(t, "hostname", Some("app.terraform.io"))?)))
}

/// What the join token must say, whatever the credential: known settings,
/// rule fields, and on app.terraform.io an organization pinned by every rule.
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    oidc::required(t, "audience")?;
    tenant::check(t, &issuer(t)?, Names::Attributes)
}

/// Verifies a Terraform Cloud/Enterprise workload identity token.
pub async fn verify(t: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    check_token(t)?;
    let issuer = issuer(t)?;
    let claims = oidc::verify_bearer(t, input, env.now, &issuer, oidc::required(t, "audience")?).await?;
    let attrs = oidc::pick(&claims, CLAIMS);
    oidc::allow(t, &attrs)?;
    Ok(attrs)
}
