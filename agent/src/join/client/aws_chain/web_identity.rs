//! Source 3: a web identity token exchanged at STS
//! (`AssumeRoleWithWebIdentity`): `AWS_WEB_IDENTITY_TOKEN_FILE` +
//! `AWS_ROLE_ARN` (+ `AWS_ROLE_SESSION_NAME`). EKS IAM roles for service
//! accounts (IRSA) set exactly these in the pod. The token file is re-read on
//! every fetch: the kubelet rotates it.

use super::{read_token_file, region, sts, ChainError, Env, Fetched, Outcome, Source};
use async_trait::async_trait;
use sigil_core::clock::Clock;
use std::path::Path;
use std::sync::Arc;

/// Largest token file read.
pub const MAX_TOKEN_BYTES: u64 = 16 * 1024;

/// The environment's web identity source.
#[derive(Clone)]
pub struct WebIdentity {
    env: Env,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebIdentity")
    }
}

impl WebIdentity {
    /// Reads `env`; `clock` names default sessions.
    pub fn new(env: Env, clock: Arc<dyn Clock>) -> Self {
        Self { env, clock }
    }
}

/// Exchanges the token in `token_file` for `role_arn`'s credentials at the
/// STS endpoint `env` names (also used by profiles with `web_identity_token_file`).
pub async fn exchange(env: &Env, token_file: &Path, role_arn: &str, session_name: &str) -> Result<Fetched, String> {
    let token = read_token_file(token_file, MAX_TOKEN_BYTES)?;
    let url = sts::endpoint(env, &region(env))?;
    sts::assume_role_with_web_identity(&url, role_arn, session_name, &token).await
}

#[async_trait]
impl Source for WebIdentity {
    fn name(&self) -> String {
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)".into()
    }

    async fn fetch(&self) -> Result<Outcome, ChainError> {
        let (Some(file), Some(role)) = (self.env.get("AWS_WEB_IDENTITY_TOKEN_FILE"), self.env.get("AWS_ROLE_ARN")) else {
            return Ok(Outcome::Absent("AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN not both set".into()));
        };
        let session = self.env.get("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| sts::default_session_name(self.clock.now()));
        exchange(&self.env, Path::new(&file), &role, &session).await.map(Outcome::Found).map_err(|e| ChainError::failed(self.name(), e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sigil_core::clock::ManualClock;

    #[tokio::test]
    async fn needs_both_variables_and_a_readable_token() {
        let src = |vars: &[(&str, &str)]| WebIdentity::new(Env::from_pairs(vars), Arc::new(ManualClock::new(0)));
        assert!(matches!(src(&[("AWS_ROLE_ARN", "arn:aws:iam::1:role/r")]).fetch().await.unwrap(), Outcome::Absent(_)));
        let e = src(&[("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"), ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token")]).fetch().await.unwrap_err().to_string();
        assert!(e.contains("web identity") && e.contains("/nonexistent/token"), "{e}");
    }
}
