//! The `token` join method: a secret created with `sigil token create`.

use secrecy::{ExposeSecret, SecretString};
use super::{JoinError, JoinMethod};
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::PathBuf;
use tonic::transport::Channel;

const METHOD: &str = sigil_core::domain::Method::Token.name();

/// Joins with a token secret, given inline or read from a file at every join
/// (so a rotated token file is picked up).
#[derive(Debug, Clone)]
pub struct TokenJoin {
    token: Option<SecretString>,
    token_file: Option<PathBuf>,
}

impl TokenJoin {
    /// A token join; the file wins when both are set.
    pub fn new(token: Option<SecretString>, token_file: Option<PathBuf>) -> Self {
        Self { token, token_file }
    }

    fn secret(&self) -> Result<SecretString, JoinError> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|source| JoinError::ReadCredential {
                method: METHOD,
                path: path.display().to_string(),
                source,
            })?;
            let t = text.trim();
            if t.is_empty() {
                return Err(JoinError::NoCredential { method: METHOD, message: format!("token file {} is empty", path.display()) });
            }
            return Ok(SecretString::from(t.to_string()));
        }
        self.token.clone().filter(|t| !t.expose_secret().is_empty()).ok_or_else(|| JoinError::NoCredential {
            method: METHOD,
            message: "no token: set join.token_file (or join.token) in the config, or env SIGIL_TOKEN".into(),
        })
    }
}

#[async_trait]
impl JoinMethod for TokenJoin {
    fn method(&self) -> &'static str {
        METHOD
    }

    async fn join(&self, client: &mut SigilClient<Channel>, csr: Vec<u8>, ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError> {
        let secret = self.secret()?;
        let req = pb::JoinRequest { method: METHOD.into(), token: secret.expose_secret().to_string(), csr, ttl_seconds, ..Default::default() };
        client.join(req).await.map(|r| r.into_inner()).map_err(|s| JoinError::from_status(METHOD, &s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_says_how_to_configure_it() {
        let err = TokenJoin::new(None, None).secret().unwrap_err().to_string();
        assert!(err.contains("token_file") && err.contains("SIGIL_TOKEN"), "{err}");
    }

    #[test]
    fn token_file_is_trimmed_and_wins_over_inline() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        std::fs::write(&p, "abc\n").unwrap();
        let j = TokenJoin::new(Some(SecretString::from("inline")), Some(p));
        assert_eq!(j.secret().unwrap().expose_secret(), "abc");
    }

    #[test]
    fn unreadable_token_file_is_named() {
        let j = TokenJoin::new(None, Some("/nonexistent/token".into()));
        assert!(j.secret().unwrap_err().to_string().contains("/nonexistent/token"));
    }
}
