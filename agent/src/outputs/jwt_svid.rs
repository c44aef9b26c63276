//! `jwt-svid`: a token file for fixed audiences (what the AWS, Azure and GCP SDKs read).

use super::issue::{self, Target};
use super::{cloud_files, Output, OutputError};
use crate::config::JwtOutput;
use crate::schedule::Lifetime;
use crate::session::Session;
use sigil_core::safe_fs::Access;
use async_trait::async_trait;

/// The jwt-svid output.
#[derive(Debug, Clone)]
pub struct JwtSvidFile {
    cfg: JwtOutput,
    access: Access,
}

impl JwtSvidFile {
    /// From config.
    pub fn new(cfg: JwtOutput, access: Access) -> Self {
        Self { cfg, access }
    }
}

#[async_trait]
impl Output for JwtSvidFile {
    fn name(&self) -> String {
        format!("jwt-svid:{}", self.cfg.path.display())
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let target = Target { spiffe_id: &self.cfg.spiffe_id, workload_identity: &self.cfg.workload_identity, ttl: self.cfg.ttl };
        let s = issue::jwt(session, target, self.cfg.audiences.clone()).await?;
        cloud_files::write(&self.cfg.path, s.token.as_bytes(), self.access).await?;
        Ok(Lifetime { received_at: session.now(), expires_at: s.expires_at })
    }
}
