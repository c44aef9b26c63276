//! Each join method's `config` settings as a typed struct, parsed at the API
//! edge (creation and update of a join token) and again at each join.
//!
//! The stored form stays a map of strings (existing stores load unchanged);
//! these structs say which keys a method knows, which it requires, and which
//! are flags. The struct is the list: an unknown key is refused with its name
//! and the known ones, a missing required key is named, and a flag that is
//! not `"true"` or `"false"` is named, all as data ([`ConfigError`]), never
//! by reading an error's text.

use super::config_de::{fields_of, from_map};
use super::Method;
use crate::domain::DomainError;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Why a join token's `config` does not fit its method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key the method does not know (a typo would otherwise be silently ignored).
    #[error("config.{key}: unknown setting (known: {})", known.join(", "))]
    Unknown {
        /// The key.
        key: String,
        /// Every key the method knows.
        known: &'static [&'static str],
    },
    /// A key the method requires is absent.
    #[error("config.{key}: required")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A value the method cannot use.
    #[error("config.{key}: {message}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Anything else (not tied to one key).
    #[error("config: {0}")]
    Other(String),
}

impl ConfigError {
    /// The attribute path of the culprit: `config.KEY`, or `config`.
    pub fn field(&self) -> String {
        match self {
            ConfigError::Unknown { key, .. } | ConfigError::Invalid { key, .. } => format!("config.{key}"),
            ConfigError::Missing { key } => format!("config.{key}"),
            ConfigError::Other(_) => "config".into(),
        }
    }

    /// What is wrong, for an administrator writing a join token of `method`.
    pub fn message(&self, method: Method) -> String {
        match self {
            ConfigError::Unknown { known, .. } => format!("unknown setting for join method {:?} (known: {})", method.name(), known.join(", ")),
            ConfigError::Missing { key } => format!("join method {:?} requires config.{key}", method.name()),
            ConfigError::Invalid { message, .. } | ConfigError::Other(message) => message.clone(),
        }
    }

    /// As a validation error of a join token of `method`.
    pub fn into_domain(self, method: Method) -> DomainError {
        DomainError::invalid(self.field(), self.message(method))
    }
}

/// A setting that must be present and not blank (surrounding whitespace trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required(pub String);

impl<'de> Deserialize<'de> for Required {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        if t.is_empty() {
            return Err(serde::de::Error::custom("must not be empty"));
        }
        Ok(Required(t.to_string()))
    }
}

/// An opt-in: `"true"` or `"false"` (surrounding whitespace trimmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.trim() {
            "true" => Ok(Flag(true)),
            "false" => Ok(Flag(false)),
            _ => Err(serde::de::Error::custom("must be \"true\" or \"false\"")),
        }
    }
}

/// Declares a settings struct refusing unknown keys; OIDC ones get the keys
/// every OIDC method shares (how the issuer's keys are found).
macro_rules! settings {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name { $($(#[$fdoc])* pub $field: $ty,)* }
    };
    (oidc $(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        settings! {
            $(#[$doc])*
            $name {
                $($(#[$fdoc])* $field: $ty,)*
                /// `jwks`: a static JWKS document (JSON); no network fetch at all.
                jwks: Option<String>,
                /// `jwks_uri`: explicit JWKS URL (else from discovery, on the issuer's host).
                jwks_uri: Option<String>,
                /// `ca_pem`: CA certificates trusted for the issuer's TLS (replace the public roots).
                ca_pem: Option<String>,
                /// `allow_private_network`: issuers on loopback/private addresses.
                allow_private_network: Option<Flag>,
            }
        }
    };
}

settings! {
    /// `token`: no settings.
    TokenSettings {}
}
settings! {
    /// `iam`.
    IamSettings {
        /// Extra STS endpoint URLs, comma-separated (e.g. a local STS in tests).
        sts_endpoints: Option<String>,
    }
}
settings! {
    /// `tpm`.
    TpmSettings {
        /// CA certificates (PEM) the EK certificate may chain to.
        ek_ca: Option<String>,
    }
}
settings! {
    oidc
    /// `gcp`.
    GcpSettings {
        /// The instance identity token's audience.
        audience: Required,
        /// Issuer override.
        issuer: Option<String>,
    }
}
settings! {
    oidc
    /// `azure`.
    AzureSettings {
        /// Access token audience (default: the management endpoint).
        audience: Option<String>,
        /// Issuer override.
        issuer: Option<String>,
        /// The tenant GUID.
        tenant_id: Required,
        /// CA certificates (PEM) the attested document's signer chains to.
        attested_ca: Required,
        /// Accepted signer names, comma-separated.
        signer_names: Option<String>,
        /// Accept rules and attributes read from the access token only.
        allow_unattested_fields: Option<Flag>,
    }
}
settings! {
    oidc
    /// `github`.
    GithubSettings {
        /// `aud` must contain it.
        audience: Required,
        /// Issuer override.
        issuer: Option<String>,
        /// GitHub Enterprise Server host.
        enterprise_host: Option<String>,
        /// GitHub Enterprise Cloud customised issuer slug.
        enterprise_slug: Option<String>,
        /// Accept rules not naming a tenant.
        allow_any_tenant: Option<Flag>,
    }
}
settings! {
    oidc
    /// `gitlab`.
    GitlabSettings {
        /// `aud` must contain it.
        audience: Required,
        /// Issuer override.
        issuer: Option<String>,
        /// Self-managed host (default gitlab.com).
        domain: Option<String>,
        /// Accept rules not naming a tenant.
        allow_any_tenant: Option<Flag>,
    }
}
settings! {
    oidc
    /// `circleci`.
    CircleciSettings {
        /// Audience (default: the organization id).
        audience: Option<String>,
        /// Issuer override.
        issuer: Option<String>,
        /// The CircleCI organization id.
        organization_id: Required,
    }
}
settings! {
    oidc
    /// `bitbucket`.
    BitbucketSettings {
        /// `aud` must contain it.
        audience: Required,
        /// Issuer (else built from `workspace`).
        issuer: Option<String>,
        /// Workspace name.
        workspace: Option<String>,
    }
}
settings! {
    oidc
    /// `azure_devops`.
    AzureDevopsSettings {
        /// Audience (default: `api://AzureADTokenExchange`).
        audience: Option<String>,
        /// Issuer override.
        issuer: Option<String>,
        /// The organization id.
        organization_id: Required,
    }
}
settings! {
    oidc
    /// `terraform_cloud`.
    TerraformCloudSettings {
        /// `aud` must contain it.
        audience: Required,
        /// Issuer override.
        issuer: Option<String>,
        /// Terraform Enterprise host (default app.terraform.io).
        hostname: Option<String>,
        /// Accept rules not naming a tenant.
        allow_any_tenant: Option<Flag>,
    }
}
settings! {
    oidc
    /// `spacelift`.
    SpaceliftSettings {
        /// Audience (default: the host name).
        audience: Option<String>,
        /// Issuer override.
        issuer: Option<String>,
        /// The account's Spacelift host.
        hostname: Required,
    }
}
settings! {
    oidc
    /// `oidc` (any issuer).
    OidcSettings {
        /// `aud` must contain it.
        audience: Required,
        /// The exact `iss`.
        issuer: Required,
        /// Accept rules not naming a tenant (shared issuers).
        allow_any_tenant: Option<Flag>,
    }
}
settings! {
    oidc
    /// `kubernetes`.
    KubernetesSettings {
        /// `aud` must contain it (jwks), or the TokenReview must confirm it (tokenreview).
        audience: Required,
        /// How tokens are verified: `jwks` (default: the issuer's keys) or
        /// `tokenreview` (the cluster's TokenReview API).
        mode: Option<KubernetesMode>,
        /// The cluster's service-account issuer (required in `jwks` mode).
        issuer: Option<String>,
        /// The broker's `kubernetes_clusters` entry asked (required in `tokenreview` mode).
        cluster: Option<String>,
        /// Longest token lifetime accepted.
        max_token_lifetime: Option<String>,
        /// Accept tokens not bound to a pod.
        allow_unbound_tokens: Option<Flag>,
        /// Accept legacy secret-based tokens (`tokenreview` mode; they never expire).
        allow_legacy_tokens: Option<Flag>,
    }
}
/// `kubernetes` `config.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KubernetesMode {
    /// The token's signature, against the issuer's JWKS.
    #[default]
    Jwks,
    /// The cluster's TokenReview API, with the broker's own credentials.
    TokenReview,
}

impl<'de> Deserialize<'de> for KubernetesMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.trim() {
            "jwks" => Ok(Self::Jwks),
            "tokenreview" => Ok(Self::TokenReview),
            _ => Err(serde::de::Error::custom("must be \"jwks\" or \"tokenreview\"")),
        }
    }
}

impl KubernetesSettings {
    /// Checks what depends on the mode: `issuer` in `jwks` mode, `cluster` in
    /// `tokenreview` mode (whether the broker knows the cluster is its own check).
    pub fn check_mode(&self) -> Result<KubernetesMode, ConfigError> {
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
        let mode = self.mode.unwrap_or_default();
        match mode {
            KubernetesMode::Jwks if blank(&self.issuer) => Err(ConfigError::Missing { key: "issuer" }),
            KubernetesMode::Jwks if !blank(&self.cluster) => {
                Err(ConfigError::Invalid { key: "cluster".into(), message: "is for mode \"tokenreview\" (set config.mode)".into() })
            }
            KubernetesMode::Jwks if self.allow_legacy_tokens.is_some_and(|f| f.0) => Err(ConfigError::Invalid {
                key: "allow_legacy_tokens".into(),
                message: "is for mode \"tokenreview\" (JWKS verification needs an exp, which legacy tokens lack)".into(),
            }),
            KubernetesMode::TokenReview if blank(&self.cluster) => Err(ConfigError::Missing { key: "cluster" }),
            _ => Ok(mode),
        }
    }
}

settings! {
    /// `bound_keypair`.
    BoundKeypairSettings {
        /// A pre-registered public key (else the registration secret binds the agent's key).
        public_key: Option<String>,
    }
}

settings! {
    /// `ec2`.
    Ec2Settings {
        /// Certificates (PEM) whose keys may sign the identity document (replace the shipped AWS ones).
        signing_certificates: Option<String>,
        /// Accept a second join from an instance already bound to a bot instance.
        allow_rejoin: Option<Flag>,
        /// Oldest instance launch accepted, seconds since `pendingTime` (unset: any).
        max_instance_age: Option<String>,
    }
}

/// Builds [`Settings`] and the per-method dispatch from one table, so a
/// method without settings is a compile error.
macro_rules! registry {
    ($($method:ident => $ty:ident),* $(,)?) => {
        /// A join token's parsed `config`, per method.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Settings {
            $(
                #[doc = concat!("`", stringify!($method), "` settings.")]
                $method($ty),
            )*
        }

        impl Method {
            /// Parses `config` as this method's settings.
            pub fn parse_config(self, config: &BTreeMap<String, String>) -> Result<Settings, ConfigError> {
                match self {
                    $(Method::$method => from_map::<$ty>(config).map(Settings::$method),)*
                }
                .and_then(Settings::checked)
            }

            /// Every `config` key the method knows.
            pub fn config_keys(self) -> &'static [&'static str] {
                match self {
                    $(Method::$method => fields_of::<$ty>(),)*
                }
            }
        }
    };
}

registry! {
    Token => TokenSettings,
    Iam => IamSettings,
    Tpm => TpmSettings,
    Gcp => GcpSettings,
    Azure => AzureSettings,
    Github => GithubSettings,
    Gitlab => GitlabSettings,
    Circleci => CircleciSettings,
    Bitbucket => BitbucketSettings,
    AzureDevops => AzureDevopsSettings,
    TerraformCloud => TerraformCloudSettings,
    Spacelift => SpaceliftSettings,
    Oidc => OidcSettings,
    Kubernetes => KubernetesSettings,
    BoundKeypair => BoundKeypairSettings,
    Ec2 => Ec2Settings,
}

impl Settings {
    /// Checks that span several keys (one method's keys only).
    fn checked(self) -> Result<Self, ConfigError> {
        if let Settings::Kubernetes(k) = &self {
            k.check_mode()?;
        }
        Ok(self)
    }
}

impl Method {
    /// The `config` keys the method requires, in the order they are asked
    /// for: found by parsing, so the settings struct stays the only list.
    pub fn required_config(self) -> Vec<&'static str> {
        let mut config = BTreeMap::new();
        let mut required = Vec::new();
        while let Err(ConfigError::Missing { key }) = self.parse_config(&config) {
            if config.insert(key.to_string(), "x".to_string()).is_some() {
                break;
            }
            required.push(key);
        }
        required
    }
}

/// The `config` keys every OIDC-family method knows.
pub const OIDC_COMMON: &[&str] = &["audience", "issuer", "jwks", "jwks_uri", "ca_pem", "allow_private_network"];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_name_and_the_known_ones() {
        let e = Method::Github.parse_config(&map(&[("audience", "sigil"), ("audiance", "x")])).unwrap_err();
        assert_eq!(e.field(), "config.audiance");
        let ConfigError::Unknown { known, .. } = &e else { panic!("{e:?}") };
        assert!(known.contains(&"enterprise_host") && known.contains(&"jwks"), "{known:?}");
        assert!(e.message(Method::Github).contains("unknown setting for join method \"github\""), "{e}");
        // Methods without settings refuse any key too.
        assert_eq!(Method::Token.parse_config(&map(&[("audience", "x")])).unwrap_err().field(), "config.audience");
    }

    #[test]
    fn a_missing_or_blank_required_key_is_named() {
        let e = Method::Oidc.parse_config(&map(&[("issuer", "https://ci.example")])).unwrap_err();
        assert_eq!(e, ConfigError::Missing { key: "audience" });
        assert_eq!(e.message(Method::Oidc), "join method \"oidc\" requires config.audience");
        let blank = Method::Github.parse_config(&map(&[("audience", "  ")])).unwrap_err();
        assert_eq!(blank.field(), "config.audience");
    }

    #[test]
    fn a_flag_that_is_not_a_boolean_is_named() {
        let e = Method::Github.parse_config(&map(&[("audience", "a"), ("allow_any_tenant", "yes")])).unwrap_err();
        assert_eq!(e, ConfigError::Invalid { key: "allow_any_tenant".into(), message: "must be \"true\" or \"false\"".into() });
        let ok = Method::Github.parse_config(&map(&[("audience", " sigil "), ("allow_any_tenant", "true ")])).unwrap();
        let Settings::Github(s) = ok else { panic!() };
        assert_eq!((s.audience.0.as_str(), s.allow_any_tenant), ("sigil", Some(Flag(true))));
    }

    #[test]
    fn required_keys_come_from_the_structs() {
        assert_eq!(Method::Oidc.required_config(), ["audience", "issuer"]);
        assert_eq!(Method::Azure.required_config(), ["tenant_id", "attested_ca"]);
        assert!(Method::Token.required_config().is_empty());
        for m in Method::ALL {
            let keys = m.config_keys();
            for r in m.required_config() {
                assert!(keys.contains(&r), "{m}: {r}");
            }
        }
    }

    #[test]
    fn kubernetes_requires_the_issuer_in_jwks_mode_and_the_cluster_in_tokenreview_mode() {
        let parse = |pairs: &[(&str, &str)]| Method::Kubernetes.parse_config(&map(pairs));
        assert_eq!(Method::Kubernetes.required_config(), ["audience", "issuer"], "jwks is the default mode");
        let Settings::Kubernetes(s) = parse(&[("audience", "sigil"), ("issuer", "https://k8s.example")]).unwrap() else { panic!() };
        assert_eq!(s.check_mode(), Ok(KubernetesMode::Jwks));
        assert_eq!(parse(&[("audience", "sigil"), ("mode", "jwks")]).unwrap_err(), ConfigError::Missing { key: "issuer" });
        assert_eq!(parse(&[("audience", "sigil"), ("mode", "tokenreview")]).unwrap_err(), ConfigError::Missing { key: "cluster" });
        assert_eq!(parse(&[("audience", "sigil"), ("mode", "tokenreview"), ("cluster", "  ")]).unwrap_err(), ConfigError::Missing { key: "cluster" });
        let Settings::Kubernetes(s) = parse(&[("audience", "sigil"), ("mode", " tokenreview "), ("cluster", "prod"), ("allow_legacy_tokens", "true")]).unwrap() else {
            panic!()
        };
        assert_eq!((s.mode, s.cluster.as_deref(), s.allow_legacy_tokens, s.issuer), (Some(KubernetesMode::TokenReview), Some("prod"), Some(Flag(true)), None));
        assert_eq!(parse(&[("audience", "sigil"), ("mode", "review")]).unwrap_err().field(), "config.mode");
        assert_eq!(parse(&[("audience", "sigil"), ("issuer", "https://k"), ("cluster", "prod")]).unwrap_err().field(), "config.cluster");
        assert_eq!(parse(&[("audience", "sigil"), ("issuer", "https://k"), ("allow_legacy_tokens", "true")]).unwrap_err().field(), "config.allow_legacy_tokens");
        assert_eq!(parse(&[("issuer", "https://k")]).unwrap_err(), ConfigError::Missing { key: "audience" });
    }

    #[test]
    fn every_oidc_family_method_knows_the_common_keys() {
        use Method as M;
        for m in [M::Gcp, M::Azure, M::Github, M::Gitlab, M::Circleci, M::Bitbucket, M::AzureDevops, M::TerraformCloud, M::Spacelift, M::Oidc, M::Kubernetes] {
            for k in OIDC_COMMON {
                assert!(m.config_keys().contains(k), "{m} lacks {k}");
            }
        }
    }
}
