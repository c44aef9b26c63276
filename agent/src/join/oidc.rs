//! The OIDC-family join methods (`github`, `gitlab`, `circleci`, `bitbucket`,
//! `azure_devops`, `terraform_cloud`, `spacelift`, `oidc`, `kubernetes`): the
//! platform's ID token, read from a file or an environment variable at every
//! join (CI platforms and projected service-account tokens rotate it), is sent
//! as the bearer credential with the name of the join token whose rules apply.

use super::{JoinError, JoinMethod};
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::PathBuf;
use tonic::transport::Channel;

/// Where the ID token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file, read at each join.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl TokenSource {
    /// Where `c` says the token comes from (validated: exactly one is set).
    pub fn of(c: &crate::config::OidcJoinConfig) -> Self {
        match (&c.id_token_file, &c.id_token_env) {
            (Some(f), _) => Self::File(f.clone()),
            (None, Some(v)) => Self::Env(v.clone()),
            (None, None) => Self::Env(String::new()),
        }
    }
}

/// Joins with a bearer ID token.
#[derive(Debug, Clone)]
pub struct OidcJoin {
    method: &'static str,
    token_name: String,
    source: TokenSource,
}

impl OidcJoin {
    /// A join with `method` (one of the broker's OIDC-family method names).
    pub fn new(method: &'static str, token_name: String, source: TokenSource) -> Self {
        Self { method, token_name, source }
    }

    /// Reads the token; `env` looks variables up (the process environment in production).
    pub fn id_token(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, JoinError> {
        let method = self.method;
        let raw = match &self.source {
            TokenSource::File(p) => std::fs::read_to_string(p).map_err(|source| JoinError::ReadCredential { method, path: p.display().to_string(), source })?,
            TokenSource::Env(v) => env(v).ok_or_else(|| JoinError::NoCredential {
                method,
                message: format!("environment variable {v} is not set (expected the platform's OIDC ID token)"),
            })?,
        };
        let t = raw.trim();
        if t.is_empty() {
            let from = match &self.source {
                TokenSource::File(p) => format!("file {}", p.display()),
                TokenSource::Env(v) => format!("environment variable {v}"),
            };
            return Err(JoinError::NoCredential { method, message: format!("the ID token in {from} is empty") });
        }
        if t.split('.').count() != 3 {
            return Err(JoinError::NoCredential { method, message: "the ID token is not a compact JWT (header.payload.signature)".into() });
        }
        Ok(t.to_string())
    }
}

#[async_trait]
impl JoinMethod for OidcJoin {
    fn method(&self) -> &'static str {
        self.method
    }

    async fn join(&self, client: &mut SigilClient<Channel>, csr: Vec<u8>, ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError> {
        let token = self.id_token(|v| std::env::var(v).ok())?;
        let req = pb::JoinRequest { method: self.method.into(), token, token_name: self.token_name.clone(), csr, ttl_seconds, ..Default::default() };
        client.join(req).await.map(|r| r.into_inner()).map_err(|s| JoinError::from_status(self.method, &s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comes_from_the_named_variable_and_is_trimmed() {
        let j = OidcJoin::new("github", "gh".into(), TokenSource::Env("CI_ID_TOKEN".into()));
        let t = j.id_token(|v| (v == "CI_ID_TOKEN").then(|| " a.b.c\n".to_string())).unwrap();
        assert_eq!(t, "a.b.c");
        let err = j.id_token(|_| None).unwrap_err().to_string();
        assert!(err.contains("CI_ID_TOKEN is not set") && err.contains("github"), "{err}");
    }

    #[test]
    fn file_token_is_reread_and_garbage_is_refused_before_the_broker() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        let j = OidcJoin::new("kubernetes", "k8s".into(), TokenSource::File(p.clone()));
        assert!(j.id_token(|_| None).unwrap_err().to_string().contains(&p.display().to_string()));
        std::fs::write(&p, "not-a-jwt").unwrap();
        assert!(j.id_token(|_| None).unwrap_err().to_string().contains("compact JWT"));
        std::fs::write(&p, "x.y.z").unwrap();
        assert_eq!(j.id_token(|_| None).unwrap(), "x.y.z");
    }
}
