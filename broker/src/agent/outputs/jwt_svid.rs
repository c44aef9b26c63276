//! `jwt-svid`: a token file for fixed audiences (what the AWS, Azure and GCP SDKs read).

use super::issue::{self, Target};
use super::{ensure_parent, Output, OutputError};
use crate::agent::config::JwtOutput;
use crate::agent::files;
use crate::agent::schedule::Lifetime;
use crate::agent::session::Session;
use async_trait::async_trait;

/// The jwt-svid output.
#[derive(Debug, Clone)]
pub struct JwtSvidFile {
    cfg: JwtOutput,
}

impl JwtSvidFile {
    /// From config.
    pub fn new(cfg: JwtOutput) -> Self {
        Self { cfg }
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
        ensure_parent(&self.cfg.path)?;
        files::remove_stale_temps_for(&self.cfg.path);
        files::write_atomic(&self.cfg.path, s.token.as_bytes())?;
        Ok(Lifetime { received_at: session.now(), expires_at: s.expires_at })
    }
}
