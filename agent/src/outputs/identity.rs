//! `identity`: a copy of the bot identity (certificate, key, broker CA) for admin
//! tools and the Terraform provider (`SIGIL_IDENTITY`). Rewritten at every renewal.

use super::{cloud_files, Output, OutputError};
use crate::schedule::Lifetime;
use crate::session::{Session, SessionError};
use sigil_core::safe_fs::Access;
use async_trait::async_trait;
use std::path::PathBuf;

/// The identity output.
#[derive(Debug, Clone)]
pub struct IdentityFile {
    path: PathBuf,
    access: Access,
}

impl IdentityFile {
    /// From config.
    pub fn new(path: PathBuf, access: Access) -> Self {
        Self { path, access }
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
        cloud_files::write(&self.path, held.identity.to_pem().as_bytes(), self.access).await?;
        Ok(held.life)
    }
}
