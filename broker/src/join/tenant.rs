//! Shared multi-tenant issuers: github.com Actions, gitlab.com and HCP
//! Terraform (`app.terraform.io`) sign the tokens of every customer with one
//! issuer, and each job picks its own audience. A rule that does not name the
//! tenant (`{ref: refs/heads/main}`) therefore admits any repository,
//! project or organization on the platform: `mallory/anything` included.
//!
//! Every rule of a join token trusting such an issuer must pin the tenant with
//! a field whose pattern fixes it literally (`repository: octo-org/*` pins the
//! owner `octo-org`; `repository: octo-*` or `*/web` do not), unless the token
//! sets `config.allow_any_tenant: "true"`. Checked at creation, at update and
//! at every join (tokens stored before this rule existed stop joining).
//!
//! Issuers that are per tenant already pin it through the issuer URL, which
//! the join token configures and `iss` must equal: CircleCI
//! (`/org/ORGANIZATION_ID`), Bitbucket (`/workspaces/WORKSPACE/`), Azure DevOps
//! (`vstoken.dev.azure.com/ORGANIZATION_ID`), Spacelift (`ACCOUNT.app.spacelift.io`),
//! GitHub Enterprise (`enterprise_host`, `enterprise_slug`), self-managed
//! GitLab and Terraform Enterprise hosts. The generic `oidc` method is held to
//! the same rule when its issuer is one of the shared ones.

use super::JoinError;
use sigil_core::domain::join_token::AllowRule;
use sigil_core::domain::JoinToken;

/// The config key that accepts rules not naming a tenant.
pub const OPT_OUT: &str = "allow_any_tenant";

/// How a field's pattern must look to pin the tenant.
#[derive(Debug, Clone, Copy)]
enum Pin {
    /// The whole pattern is literal (no `*`): an id or an owner name.
    Exact,
    /// The pattern is literal, or starts with `lead`, a non-empty literal
    /// tenant, then `sep` (`repo:` `octo-org` `/` ...).
    Leading(&'static str, char),
}

/// A shared issuer and the fields (by the names its rules use) that pin a tenant.
struct Shared {
    issuer: &'static str,
    platform: &'static str,
    /// Pins by the method's attribute names.
    pins: &'static [(&'static str, Pin)],
    /// Pins by raw claim names (generic `oidc` method).
    claim_pins: &'static [(&'static str, Pin)],
}

const GITHUB_PINS: &[(&str, Pin)] = &[
    ("repository", Pin::Leading("", '/')),
    ("repository_owner", Pin::Exact),
    ("repository_owner_id", Pin::Exact),
    ("repository_id", Pin::Exact),
    ("workflow_ref", Pin::Leading("", '/')),
    ("enterprise", Pin::Exact),
    ("sub", Pin::Leading("repo:", '/')),
];
const GITLAB_PINS: &[(&str, Pin)] = &[
    ("project_path", Pin::Leading("", '/')),
    ("namespace_path", Pin::Leading("", '/')),
    ("project_id", Pin::Exact),
    ("namespace_id", Pin::Exact),
    ("sub", Pin::Leading("project_path:", '/')),
];
const TFC_PINS: &[(&str, Pin)] = &[
    ("organization", Pin::Exact),
    ("organization_id", Pin::Exact),
    ("workspace_id", Pin::Exact),
    ("project_id", Pin::Exact),
    ("full_workspace", Pin::Leading("organization:", ':')),
    ("sub", Pin::Leading("organization:", ':')),
];
const TFC_CLAIM_PINS: &[(&str, Pin)] = &[
    ("terraform_organization_name", Pin::Exact),
    ("terraform_organization_id", Pin::Exact),
    ("terraform_workspace_id", Pin::Exact),
    ("terraform_project_id", Pin::Exact),
    ("terraform_full_workspace", Pin::Leading("organization:", ':')),
    ("sub", Pin::Leading("organization:", ':')),
];

const SHARED: &[Shared] = &[
    Shared { issuer: super::github::ISSUER, platform: "GitHub Actions on github.com", pins: GITHUB_PINS, claim_pins: GITHUB_PINS },
    Shared { issuer: "https://gitlab.com", platform: "gitlab.com", pins: GITLAB_PINS, claim_pins: GITLAB_PINS },
    Shared { issuer: "https://app.terraform.io", platform: "HCP Terraform (app.terraform.io)", pins: TFC_PINS, claim_pins: TFC_CLAIM_PINS },
];

/// Which names the join token's rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// The method's attribute names (`github`, `gitlab`, `terraform_cloud`).
    Attributes,
    /// Raw claim names (generic `oidc`).
    Claims,
}

fn shared(issuer: &str) -> Option<&'static Shared> {
    let issuer = issuer.trim().trim_end_matches('/');
    SHARED.iter().find(|s| s.issuer.eq_ignore_ascii_case(issuer))
}

fn pins(pattern: &str, pin: Pin) -> bool {
    let literal = |s: &str| !s.is_empty() && !s.contains('*');
    match pin {
        Pin::Exact => literal(pattern),
        Pin::Leading(lead, sep) => {
            literal(pattern) || pattern.strip_prefix(lead).and_then(|rest| rest.split_once(sep)).is_some_and(|(tenant, _)| literal(tenant))
        }
    }
}

fn rule_pins(rule: &AllowRule, table: &[(&str, Pin)]) -> bool {
    table.iter().any(|(field, pin)| rule.get(*field).is_some_and(|p| pins(p, *pin)))
}

/// Whether the token opted out with `allow_any_tenant: "true"`.
fn opted_out(t: &JoinToken) -> Result<bool, JoinError> {
    match t.config.get(OPT_OUT).map(|v| v.trim()) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(JoinError::invalid(format!("config.{OPT_OUT}"), "must be \"true\" or \"false\"")),
    }
}

/// Refuses a join token trusting a shared issuer when one of its rules does
/// not pin the tenant (unless `allow_any_tenant` is `"true"`).
pub fn check(t: &JoinToken, issuer: &str, names: Names) -> Result<(), JoinError> {
    let opted_out = opted_out(t)?;
    let Some(s) = shared(issuer) else { return Ok(()) };
    if opted_out {
        return Ok(());
    }
    let table = if names == Names::Claims { s.claim_pins } else { s.pins };
    for (i, rule) in t.allow.iter().enumerate() {
        if !rule_pins(rule, table) {
            let fields: Vec<&str> = table.iter().map(|(f, _)| *f).collect();
            return Err(JoinError::invalid(
                format!("allow[{i}]"),
                format!(
                    "{} signs the tokens of every customer: each rule must pin yours with a literal {} (e.g. \"octo-org/*\", not \"*\" or \"octo-*\"), \
                     or set config.{OPT_OUT} = \"true\" to accept any tenant's tokens",
                    s.platform,
                    fields.join(" / ")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn token(method: &str, config: &[(&str, &str)], rules: &[&[(&str, &str)]]) -> JoinToken {
        JoinToken::for_test(method, config, rules)
    }

    const GH: &str = "https://token.actions.githubusercontent.com";

    #[test]
    fn a_rule_pins_the_tenant_only_with_a_literal_owner_or_id() {
        for rule in [
            &[("repository", "octo-org/web")][..],
            &[("repository", "octo-org/*"), ("ref", "refs/heads/main")],
            &[("repository_owner", "octo-org")],
            &[("repository_id", "74")],
            &[("sub", "repo:octo-org/*")],
            &[("workflow_ref", "octo-org/web/.github/workflows/*")],
        ] {
            assert!(check(&token("github", &[], &[rule]), GH, Names::Attributes).is_ok(), "{rule:?}");
        }
        for rule in [
            &[("ref", "refs/heads/main")][..],
            &[("repository", "*")],
            &[("repository", "octo-*")],
            &[("repository", "*/web")],
            &[("repository_owner", "octo*")],
            &[("sub", "repo:*")],
            &[("sub", "*:octo-org/*")],
            &[("repository_owner", "")],
        ] {
            let e = check(&token("github", &[], &[rule]), GH, Names::Attributes).unwrap_err();
            assert!(e.to_string().contains("allow_any_tenant"), "{rule:?}: {e}");
        }
    }

    #[test]
    fn every_rule_must_pin_and_the_opt_out_is_explicit() {
        let pinned: &[(&str, &str)] = &[("repository_owner", "octo-org")];
        let loose: &[(&str, &str)] = &[("ref", "refs/heads/main")];
        let e = check(&token("github", &[], &[pinned, loose]), GH, Names::Attributes).unwrap_err();
        assert!(e.to_string().contains("allow[1]"), "{e}");
        assert!(check(&token("github", &[(OPT_OUT, "true")], &[loose]), GH, Names::Attributes).is_ok());
        assert!(check(&token("github", &[(OPT_OUT, "yes")], &[pinned]), GH, Names::Attributes).is_err());
    }

    #[test]
    fn only_shared_issuers_need_a_pin() {
        let loose: &[(&str, &str)] = &[("ref", "refs/heads/main")];
        assert!(check(&token("github", &[], &[loose]), "https://ghes.example.com/_services/token", Names::Attributes).is_ok());
        assert!(check(&token("gitlab", &[], &[loose]), "https://gitlab.com/", Names::Attributes).is_err());
        assert!(check(&token("gitlab", &[], &[&[("project_path", "my-group/*")]]), "https://gitlab.com", Names::Attributes).is_ok());
        assert!(check(&token("terraform_cloud", &[], &[&[("workspace", "prod")]]), "https://app.terraform.io", Names::Attributes).is_err());
        assert!(check(&token("terraform_cloud", &[], &[&[("organization", "acme"), ("workspace", "prod")]]), "https://app.terraform.io", Names::Attributes).is_ok());
        // Generic OIDC against a shared issuer uses raw claim names.
        assert!(check(&token("oidc", &[], &[&[("terraform_workspace_name", "prod")]]), "https://app.terraform.io", Names::Claims).is_err());
        assert!(check(&token("oidc", &[], &[&[("terraform_organization_name", "acme")]]), "https://app.terraform.io", Names::Claims).is_ok());
    }
}
