//! `identity`: a copy of the bot identity (certificate, key, broker CA) for admin
//! tools and the Terraform provider (`SIGIL_IDENTITY`). Rewritten at every renewal.

use super::{ensure_parent, Output, OutputError};
use crate::agent::files;
use crate::agent::schedule::Lifetime;
use crate::agent::session::{Session, SessionError};
use async_trait::async_trait;
use std::path::PathBuf;

/// The identity output.
#[derive(Debug, Clone)]
pub struct IdentityFile {
    path: PathBuf,
}

impl IdentityFile {
    /// From config.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

#[async_trait]
impl Output for IdentityFile {
    fn name(&self) -> String {
        format!("identity:{}", self.path.display())
    }

    fn follows_identity(&self) -> bool {
        true
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let held = session.held().await.ok_or_else(|| SessionError::NoIdentity("not joined yet".into()))?;
        ensure_parent(&self.path)?;
        files::remove_stale_temps_for(&self.path);
        files::write_atomic(&self.path, held.identity.to_pem().as_bytes())?;
        Ok(held.life)
    }
}
