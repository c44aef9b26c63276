//! The sources in the SDKs' order; the first that finds credentials wins, the
//! first configured one that fails stops the search (see the module docs of
//! [`super`]).

use super::container::Container;
use super::env::Environment;
use super::instance::InstanceRole;
use super::profile::Profile;
use super::web_identity::WebIdentity;
use super::{ChainError, Env, Fetched, Outcome, Provide, Source};
use async_trait::async_trait;
use sigil_core::clock::Clock;
use std::sync::Arc;

/// An ordered list of sources.
#[derive(Debug)]
pub struct Chain {
    sources: Vec<Box<dyn Source>>,
}

impl Chain {
    /// `sources`, asked in order.
    pub fn new(sources: Vec<Box<dyn Source>>) -> Self {
        Self { sources }
    }

    /// The SDKs' chain over `env`: environment, profile, web identity,
    /// container, instance role.
    pub fn standard(env: Env, clock: Arc<dyn Clock>) -> Self {
        Self::new(vec![
            Box::new(Environment::new(env.clone())),
            Box::new(Profile::new(env.clone(), clock.clone())),
            Box::new(WebIdentity::new(env.clone(), clock)),
            Box::new(Container::new(env.clone())),
            Box::new(InstanceRole::new(env)),
        ])
    }
}

#[async_trait]
impl Provide for Chain {
    async fn provide(&self) -> Result<Fetched, ChainError> {
        let mut tried = Vec::new();
        for s in &self.sources {
            match s.fetch().await? {
                Outcome::Found(f) => {
                    tracing::info!(source = %s.name(), access_key_id = %f.credentials.access_key_id(), expires_at = ?f.expires_at, "AWS credentials found");
                    return Ok(f);
                }
                Outcome::Absent(why) => tried.push(format!("{}: {why}", s.name())),
            }
        }
        Err(ChainError::NotFound { tried })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sigil_core::clock::ManualClock;

    #[tokio::test]
    async fn nothing_found_names_every_source_tried() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::from_pairs(&[("HOME", dir.path().to_str().unwrap()), ("AWS_EC2_METADATA_DISABLED", "true")]);
        let e = Chain::standard(env, Arc::new(ManualClock::new(0))).provide().await.unwrap_err().to_string();
        for want in ["AWS_ACCESS_KEY_ID", "shared profile \"default\"", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_EC2_METADATA_DISABLED"] {
            assert!(e.contains(want), "{want} missing in {e}");
        }
    }

    #[tokio::test]
    async fn the_environment_wins_and_a_broken_later_source_is_not_reached() {
        let env = Env::from_pairs(&[
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.9.9.9/"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]);
        let f = Chain::standard(env, Arc::new(ManualClock::new(0))).provide().await.unwrap();
        assert_eq!(f.credentials.access_key_id(), "ENVKEY");
    }

    #[tokio::test]
    async fn a_configured_source_that_fails_stops_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::from_pairs(&[("HOME", dir.path().to_str().unwrap()), ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.9.9.9/"), ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")]);
        let e = Chain::standard(env, Arc::new(ManualClock::new(0))).provide().await.unwrap_err().to_string();
        assert!(e.starts_with("AWS credentials from container credentials:"), "{e}");
    }
}
