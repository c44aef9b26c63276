//! `jwt-svid`: a token file for fixed audiences (what the AWS, Azure and GCP SDKs read).

use super::{broker_err, ensure_parent, Output, OutputError};
use crate::agent::config::{Dur, JwtOutput};
use crate::agent::files;
use crate::agent::schedule::Lifetime;
use crate::agent::session::Session;
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;

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
        let mut c = session.client().await?;
        let what = self.cfg.spiffe_id.clone().or_else(|| self.cfg.workload_identity.clone().map(|w| format!("workload identity {w}"))).unwrap_or_default();
        let s = c
            .issue_jwt_svid(pb::IssueJwtSvidRequest {
                spiffe_id: self.cfg.spiffe_id.clone().unwrap_or_default(),
                workload_identity: self.cfg.workload_identity.clone().unwrap_or_default(),
                audiences: self.cfg.audiences.clone(),
                ttl_seconds: Dur::secs(self.cfg.ttl),
                ..Default::default()
            })
            .await
            .map_err(|s| broker_err(format!("JWT-SVID for {what}"), s))?
            .into_inner();
        ensure_parent(&self.cfg.path)?;
        files::remove_stale_temps_for(&self.cfg.path);
        files::write_atomic(&self.cfg.path, s.token.as_bytes())?;
        Ok(Lifetime { received_at: session.now(), expires_at: s.expires_at })
    }
}
