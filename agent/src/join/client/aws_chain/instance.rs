//! Source 5: the EC2 instance role's credentials over IMDSv2
//! ([`crate::join::client::imds`]): a session token, then
//! `GET /latest/meta-data/iam/security-credentials/` (the role name) and
//! `.../<role>` (the credentials, `Code: Success`).
//!
//! As the SDKs do, an instance metadata service that does not answer at its
//! default address means "not on EC2" and the chain reports nothing found;
//! one named by `AWS_EC2_METADATA_SERVICE_ENDPOINT` that fails is an error.
//! On EC2 (the token step answered), a missing role is "nothing found" and any
//! later failure is an error.

use super::{json, ChainError, Env, Outcome, Source};
use crate::join::client::imds::Imds;
use async_trait::async_trait;

/// Where role names are listed.
pub const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";

/// The instance role source.
#[derive(Debug, Clone)]
pub struct InstanceRole {
    env: Env,
}

impl InstanceRole {
    /// Reads `env`.
    pub fn new(env: Env) -> Self {
        Self { env }
    }
}

#[async_trait]
impl Source for InstanceRole {
    fn name(&self) -> String {
        "EC2 instance metadata (IMDSv2)".into()
    }

    async fn fetch(&self) -> Result<Outcome, ChainError> {
        let fail = |e: String| ChainError::failed(self.name(), e);
        let Some(imds) = Imds::from_lookup(|k| self.env.get(k)) else {
            return Ok(Outcome::Absent("disabled by AWS_EC2_METADATA_DISABLED".into()));
        };
        let explicit = self.env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT").is_some();
        let token = match imds.session_token().await {
            Ok(t) => t,
            Err(e) if explicit => return Err(fail(format!("AWS_EC2_METADATA_SERVICE_ENDPOINT: {e}"))),
            Err(e) => return Ok(Outcome::Absent(format!("not on EC2? {e}"))),
        };
        let roles = match imds.get_text(&token, CREDENTIALS_PATH).await {
            Ok(r) => r,
            Err(e) => return Ok(Outcome::Absent(format!("no instance role: {e}"))),
        };
        let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Ok(Outcome::Absent("no IAM role attached to this instance".into()));
        };
        if role.contains(['/', '?', '#', '%']) || role.len() > 128 {
            return Err(fail("IMDS returned an invalid role name".into()));
        }
        let body = imds.get(&token, &format!("{CREDENTIALS_PATH}{role}")).await.map_err(|e| fail(e.to_string()))?;
        let (f, v) = json::parse(&body, "Token").map_err(|e| fail(format!("role {role}: {e}")))?;
        match v.get("Code").and_then(|c| c.as_str()) {
            None | Some("Success") => Ok(Outcome::Found(f)),
            Some(code) => Err(fail(format!("role {role}: IMDS answered Code {:?}", code.chars().take(64).collect::<String>()))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn disabled_or_explicit_and_unreachable() {
        let disabled = InstanceRole::new(Env::from_pairs(&[("AWS_EC2_METADATA_DISABLED", "true")]));
        assert!(matches!(disabled.fetch().await.unwrap(), Outcome::Absent(w) if w.contains("AWS_EC2_METADATA_DISABLED")));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let url = format!("http://127.0.0.1:{port}");
        let e = InstanceRole::new(Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url)])).fetch().await.unwrap_err().to_string();
        assert!(e.contains("AWS_EC2_METADATA_SERVICE_ENDPOINT") && e.contains("IMDS"), "{e}");
    }
}
