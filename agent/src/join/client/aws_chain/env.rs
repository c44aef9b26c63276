//! Source 1: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and the optional
//! `AWS_SESSION_TOKEN`. A key id without its secret is an error (the SDKs'
//! partial-credentials error), not a reason to look elsewhere.

use super::{AwsCredentials, ChainError, Env, Fetched, Outcome, Source};
use async_trait::async_trait;

/// The environment source.
#[derive(Debug, Clone)]
pub struct Environment {
    env: Env,
}

impl Environment {
    /// Reads `env`.
    pub fn new(env: Env) -> Self {
        Self { env }
    }
}

#[async_trait]
impl Source for Environment {
    fn name(&self) -> String {
        "environment".into()
    }

    async fn fetch(&self) -> Result<Outcome, ChainError> {
        let Some(id) = self.env.get("AWS_ACCESS_KEY_ID") else {
            return Ok(Outcome::Absent("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set".into()));
        };
        let Some(secret) = self.env.get("AWS_SECRET_ACCESS_KEY") else {
            return Err(ChainError::failed(self.name(), "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"));
        };
        Ok(Outcome::Found(Fetched { credentials: AwsCredentials::new(id, secret, self.env.get("AWS_SESSION_TOKEN")), expires_at: None }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn fetch(vars: &[(&str, &str)]) -> Result<Outcome, ChainError> {
        Environment::new(Env::from_pairs(vars)).fetch().await
    }

    #[tokio::test]
    async fn keys_from_the_environment() {
        let Outcome::Found(f) = fetch(&[("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_SECRET_ACCESS_KEY", "s"), ("AWS_SESSION_TOKEN", "t")]).await.unwrap() else { panic!() };
        assert_eq!(f.credentials.access_key_id(), "AKID");
        assert!(f.credentials.session_token().is_some() && f.expires_at.is_none());
        assert!(matches!(fetch(&[("AWS_SECRET_ACCESS_KEY", "s")]).await.unwrap(), Outcome::Absent(w) if w.contains("AWS_ACCESS_KEY_ID")));
        let e = fetch(&[("AWS_ACCESS_KEY_ID", "AKID")]).await.unwrap_err().to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY is not"), "{e}");
    }
}
