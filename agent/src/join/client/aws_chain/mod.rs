//! AWS credentials found the way the AWS SDKs find them, in their order
//! (see docs/join-methods/aws.md):
//!
//! 1. the environment ([`env`]): `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`;
//! 2. the shared config and credentials files ([`profile`]): static keys,
//!    `credential_process` ([`process`]), `web_identity_token_file`, `role_arn` + `source_profile`;
//! 3. a web identity token ([`web_identity`]): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//!    exchanged at STS (EKS IRSA);
//! 4. container credentials ([`container`]): ECS tasks and EKS Pod Identity;
//! 5. EC2 instance role credentials over IMDSv2 ([`instance`]).
//!
//! [`chain::Chain`] asks them in that order; a source that is not configured
//! passes to the next one, a source that is configured but fails stops the
//! chain with an error naming it (as the SDKs do: a broken configuration is
//! not silently replaced by another identity). [`cache::CachedCredentials`]
//! keeps what was found until 5 minutes before it expires.
//!
//! Why not the `aws-config` crate: aws-config 1.x needs Rust 1.94.1 while the
//! workspace's MSRV is 1.85, and it adds about 55 crates and 3.2 MB to the
//! agent binary, whose resident-set budget (15 MB, at about 12 MB today) has
//! no room for it. The chain here reuses what the agent already links
//! (`sigil_core::net::http`, `sigil_core::sigv4`, `sigil_core::xml`).

pub mod cache;
pub mod chain;
pub mod container;
pub mod env;
mod http;
mod ini;
pub mod instance;
mod json;
pub mod process;
pub mod profile;
pub mod sts;
pub mod web_identity;

use super::aws_iam::AwsCredentials;
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;

pub use cache::CachedCredentials;
pub use chain::Chain;

/// Credentials and when they stop working.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The credentials (Debug shows the access key id only).
    pub credentials: AwsCredentials,
    /// Unix seconds of their `Expiration`; `None` for long-term keys.
    pub expires_at: Option<i64>,
}

/// What one source found.
#[derive(Debug)]
pub enum Outcome {
    /// Credentials.
    Found(Fetched),
    /// The source is not configured here; why (for the "nothing found" error).
    Absent(String),
}

/// Why no credentials could be obtained. Messages name the source, variable
/// or file at fault, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A configured source failed.
    #[error("AWS credentials from {source_name}: {detail}")]
    Failed {
        /// The source (e.g. `container credentials`).
        source_name: String,
        /// What went wrong.
        detail: String,
    },
    /// No source is configured.
    #[error("no AWS credentials found; tried, in order: {}", .tried.join("; "))]
    NotFound {
        /// `source: why not`, one per source.
        tried: Vec<String>,
    },
}

impl ChainError {
    /// A failure of `source_name`.
    pub fn failed(source_name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Failed { source_name: source_name.into(), detail: detail.into() }
    }
}

/// One place credentials may come from.
#[async_trait]
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Name used in logs and errors.
    fn name(&self) -> String;
    /// Looks for credentials.
    async fn fetch(&self) -> Result<Outcome, ChainError>;
}

/// Anything that produces credentials (the chain; a fake in tests).
#[async_trait]
pub trait Provide: Send + Sync {
    /// Credentials, or why there are none.
    async fn provide(&self) -> Result<Fetched, ChainError>;
}

/// The environment variables the chain reads (tests pass a map).
#[derive(Clone)]
pub struct Env(Arc<dyn Fn(&str) -> Option<String> + Send + Sync>);

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env {
    /// This process's environment.
    pub fn process() -> Self {
        Self(Arc::new(|k| std::env::var(k).ok()))
    }

    /// A fixed set of variables.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let m: std::collections::HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self(Arc::new(move |k| m.get(k).cloned()))
    }

    /// Variable `k`, trimmed; `None` when unset or empty.
    pub fn get(&self, k: &str) -> Option<String> {
        (self.0)(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// Whether `k` is `true` (any case).
    pub fn is_true(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// A path from variable `k` (a leading `~/` is the home directory), else
    /// `default` under the home directory.
    pub fn path(&self, k: &str, default: &str) -> Option<PathBuf> {
        match self.get(k) {
            Some(p) => match p.strip_prefix("~/") {
                Some(rest) => self.get("HOME").map(|h| PathBuf::from(h).join(rest)),
                None => Some(PathBuf::from(p)),
            },
            None => self.get("HOME").map(|h| PathBuf::from(h).join(default)),
        }
    }
}

/// The region the chain and the `iam` join sign for when none is configured:
/// `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, then `us-east-1`.
pub fn region(env: &Env) -> String {
    env.get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .or_else(|| profile::Files::load(env).ok().and_then(|f| f.profile(&profile::selected(env)).and_then(|p| p.get("region").cloned())))
        .unwrap_or_else(|| "us-east-1".into())
}

/// Unix seconds of an RFC 3339 `Expiration`.
pub(crate) fn parse_expiration(v: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(v.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("Expiration {:?} is not an RFC 3339 time", v.chars().take(40).collect::<String>()))
}

/// Reads at most `limit` bytes of a token file (a projected service-account
/// token or an authorization token): plain read, since those files are
/// symlinks into a volume the platform owns; re-read on every call, as the
/// platform rotates them.
pub(crate) fn read_token_file(path: &std::path::Path, limit: u64) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 > limit {
        return Err(format!("{} is larger than {limit} bytes", path.display()));
    }
    let text = String::from_utf8(buf).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let t = text.trim().to_string();
    if t.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn expirations_are_rfc3339() {
        assert_eq!(parse_expiration("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000);
        assert_eq!(parse_expiration("2023-11-14T22:13:20.000Z").unwrap(), 1_700_000_000);
        assert!(parse_expiration("tomorrow").unwrap_err().contains("Expiration"));
    }

    #[test]
    fn paths_expand_home() {
        let e = Env::from_pairs(&[("HOME", "/h"), ("AWS_CONFIG_FILE", "~/c")]);
        assert_eq!(e.path("AWS_CONFIG_FILE", ".aws/config").unwrap(), PathBuf::from("/h/c"));
        assert_eq!(e.path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials").unwrap(), PathBuf::from("/h/.aws/credentials"));
    }

    #[test]
    fn the_region_follows_the_variables_then_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config");
        std::fs::write(&cfg, "[profile p]\nregion = eu-north-1\n").unwrap();
        let c = cfg.to_str().unwrap();
        assert_eq!(region(&Env::from_pairs(&[("AWS_CONFIG_FILE", c), ("AWS_PROFILE", "p")])), "eu-north-1");
        assert_eq!(region(&Env::from_pairs(&[("AWS_CONFIG_FILE", c), ("AWS_PROFILE", "p"), ("AWS_DEFAULT_REGION", "ap-south-1")])), "ap-south-1");
        assert_eq!(region(&Env::from_pairs(&[("AWS_CONFIG_FILE", c), ("AWS_REGION", "eu-west-3"), ("AWS_DEFAULT_REGION", "x")])), "eu-west-3");
        assert_eq!(region(&Env::from_pairs(&[("AWS_CONFIG_FILE", c)])), "us-east-1");
    }
}
