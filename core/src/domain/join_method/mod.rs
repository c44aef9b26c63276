//! The join methods: one registry that the broker (name -> verifier), the
//! agent and the CLI (name -> client) all key on.
//!
//! Before this module, the method names lived in three string lists (the
//! broker's dispatch, the token's validation, the client side), and the agent
//! reused constants from the broker's verifiers. A method added to one list
//! and not another was found at run time, if at all. Now:
//! - [`Method`] is the only list of names; parsing and printing round-trip.
//! - [`Spec`] says what a method is made of (rule fields, secret, challenge,
//!   whether a join token is named), so callers ask the registry, not a list.
//! - [`config`] holds each method's join-token settings as a typed struct,
//!   parsed at the API edge: an unknown key is refused with its name, a
//!   missing required key is named.
//! - The broker's verifier dispatch and the CLI's client dispatch are
//!   exhaustive `match`es on [`Method`]: a method without one is a compile error.
//!
//! Plain data: no I/O, imports only std, serde and thiserror (it belongs to
//! the neutral core both the broker and the agent link).

pub mod config;
mod config_de;
pub mod fields;

use std::fmt;
use std::str::FromStr;

/// A join method. Not `non_exhaustive` on purpose: the broker's verifiers
/// and the clients match on it exhaustively, in whichever crate they live, so
/// a new method is a compile error wherever it has no arm yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// A generated secret (`join/token.rs`).
    Token,
    /// AWS IAM: a signed `sts:GetCallerIdentity` (`join/aws_iam.rs`).
    Iam,
    /// TPM credential activation (`join/tpm.rs`).
    Tpm,
    /// GCE instance identity token (`join/gcp.rs`).
    Gcp,
    /// Azure attested document plus managed identity token (`join/azure.rs`).
    Azure,
    /// GitHub Actions ID token.
    Github,
    /// GitLab CI ID token.
    Gitlab,
    /// CircleCI OIDC token.
    Circleci,
    /// Bitbucket Pipelines OIDC token.
    Bitbucket,
    /// Azure DevOps OIDC token.
    AzureDevops,
    /// HCP Terraform / Terraform Enterprise workload identity token.
    TerraformCloud,
    /// Spacelift OIDC token.
    Spacelift,
    /// Any OIDC issuer.
    Oidc,
    /// Kubernetes projected service-account token.
    Kubernetes,
    /// The agent's own key, bound to the join token at its first join.
    BoundKeypair,
    /// EC2 instance identity document with its AWS signature (`join/ec2.rs`).
    Ec2,
}

/// Which claims a method's allow rules may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleFields {
    /// Any claim (the issuer chooses its claims).
    Any,
    /// Only these.
    Only(&'static [&'static str]),
    /// None: the method has no allow rules.
    NoRules,
}

/// Whether a join token of the method has a secret, shown once at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// Always: the secret is the credential.
    Always,
    /// Unless this config key holds a value (a pre-registered key).
    UnlessConfigured(&'static str),
    /// Never: the platform's credential is the proof, and a secret would be a way around it.
    Never,
}

/// What a method is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Claims usable in allow rules.
    pub rule_fields: RuleFields,
    /// Whether its join tokens have a secret.
    pub secret: SecretKind,
    /// Whether a join starts with `BeginJoin` (challenge-response).
    pub challenge: bool,
    /// Whether a join names its join token (every method but `token`, whose secret finds it).
    pub names_token: bool,
}

/// A method name that is not in the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown join method {name:?} (known: {})", Method::names().join(", "))]
pub struct UnknownMethod {
    /// The name given.
    pub name: String,
}

impl Method {
    /// Every method, in the order the documentation lists them.
    pub const ALL: [Method; 16] = [
        Method::Token,
        Method::Iam,
        Method::Tpm,
        Method::Gcp,
        Method::Azure,
        Method::Github,
        Method::Gitlab,
        Method::Circleci,
        Method::Bitbucket,
        Method::AzureDevops,
        Method::TerraformCloud,
        Method::Spacelift,
        Method::Oidc,
        Method::Kubernetes,
        Method::BoundKeypair,
        Method::Ec2,
    ];

    /// The name on the wire, in join tokens and in agent configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Token => "token",
            Method::Iam => "iam",
            Method::Tpm => "tpm",
            Method::Gcp => "gcp",
            Method::Azure => "azure",
            Method::Github => "github",
            Method::Gitlab => "gitlab",
            Method::Circleci => "circleci",
            Method::Bitbucket => "bitbucket",
            Method::AzureDevops => "azure_devops",
            Method::TerraformCloud => "terraform_cloud",
            Method::Spacelift => "spacelift",
            Method::Oidc => "oidc",
            Method::Kubernetes => "kubernetes",
            Method::BoundKeypair => "bound_keypair",
            Method::Ec2 => "ec2",
        }
    }

    /// Every method's name.
    pub fn names() -> Vec<&'static str> {
        Method::ALL.iter().map(|m| m.name()).collect()
    }

    /// The method named `name`.
    pub fn parse(name: &str) -> Result<Method, UnknownMethod> {
        Method::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| UnknownMethod { name: name.to_string() })
    }

    /// What the method is made of.
    pub const fn spec(self) -> Spec {
        use RuleFields::{Any, NoRules, Only};
        let (rule_fields, secret, challenge) = match self {
            Method::Token => (Any, SecretKind::Always, false),
            Method::Iam => (Any, SecretKind::Never, true),
            Method::Tpm => (Any, SecretKind::Never, true),
            Method::Gcp => (Only(fields::GCP), SecretKind::Never, false),
            Method::Azure => (Only(fields::AZURE), SecretKind::Never, true),
            Method::Github => (Only(fields::GITHUB), SecretKind::Never, false),
            Method::Gitlab => (Only(fields::GITLAB), SecretKind::Never, false),
            Method::Circleci => (Only(fields::CIRCLECI), SecretKind::Never, false),
            Method::Bitbucket => (Only(fields::BITBUCKET), SecretKind::Never, false),
            Method::AzureDevops => (Only(fields::AZURE_DEVOPS), SecretKind::Never, false),
            Method::TerraformCloud => (Only(fields::TERRAFORM_CLOUD), SecretKind::Never, false),
            Method::Spacelift => (Only(fields::SPACELIFT), SecretKind::Never, false),
            Method::Oidc => (Any, SecretKind::Never, false),
            Method::Kubernetes => (Only(fields::KUBERNETES), SecretKind::Never, false),
            Method::BoundKeypair => (NoRules, SecretKind::UnlessConfigured("public_key"), true),
            Method::Ec2 => (Only(fields::EC2), SecretKind::Never, false),
        };
        Spec { rule_fields, secret, challenge, names_token: !matches!(self, Method::Token) }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::parse(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_name_round_trips_and_is_listed_once() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name()), Ok(m));
            assert_eq!(m.to_string().parse::<Method>(), Ok(m));
        }
        let mut names = Method::names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Method::ALL.len(), "a name is listed twice");
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let e = Method::parse("magic").unwrap_err();
        assert_eq!(e.name, "magic");
        assert!(e.to_string().contains("github") && e.to_string().contains("bound_keypair"), "{e}");
        assert!(Method::parse("GitHub").is_err(), "names are exact");
    }

    #[test]
    fn only_token_and_bound_keypair_have_secrets_and_only_token_names_no_token() {
        for m in Method::ALL {
            let s = m.spec();
            assert_eq!(s.secret == SecretKind::Never, !matches!(m, Method::Token | Method::BoundKeypair), "{m}");
            assert_eq!(s.names_token, m != Method::Token, "{m}");
        }
        let challenged: Vec<_> = Method::ALL.into_iter().filter(|m| m.spec().challenge).collect();
        assert_eq!(challenged, [Method::Iam, Method::Tpm, Method::Azure, Method::BoundKeypair]);
    }
}
