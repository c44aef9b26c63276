//! `x509-svid`: `svid.pem` (leaf), `svid.key` (PKCS#8), `bundle.pem` in a 0700 directory.
//!
//! Each file is replaced atomically. The key is written before the certificate so
//! a reader that reloads on a change of `svid.pem` finds the matching key.

use super::{broker_err, Output, OutputError};
use crate::agent::config::{Dur, X509Output};
use crate::agent::files;
use crate::agent::schedule::Lifetime;
use crate::agent::session::Session;
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;

/// The x509-svid output.
#[derive(Debug, Clone)]
pub struct X509SvidDir {
    cfg: X509Output,
}

impl X509SvidDir {
    /// From config.
    pub fn new(cfg: X509Output) -> Self {
        Self { cfg }
    }
}

#[async_trait]
impl Output for X509SvidDir {
    fn name(&self) -> String {
        format!("x509-svid:{}", self.cfg.dir.display())
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let (kp, csr) = crate::ca::x509::key_and_csr().map_err(|e| OutputError::Key(e.to_string()))?;
        let mut c = session.client().await?;
        let what = self.cfg.spiffe_id.clone().or_else(|| self.cfg.workload_identity.clone().map(|w| format!("workload identity {w}"))).unwrap_or_default();
        let s = c
            .issue_x509_svid(pb::IssueX509SvidRequest {
                csr,
                spiffe_id: self.cfg.spiffe_id.clone().unwrap_or_default(),
                workload_identity: self.cfg.workload_identity.clone().unwrap_or_default(),
                ttl_seconds: Dur::secs(self.cfg.ttl),
                ..Default::default()
            })
            .await
            .map_err(|s| broker_err(format!("X.509-SVID for {what}"), s))?
            .into_inner();
        let dir = &self.cfg.dir;
        files::private_dir(dir)?;
        files::remove_stale_temps(dir);
        files::write_atomic(&dir.join("bundle.pem"), s.bundle_pem.as_bytes())?;
        files::write_atomic(&dir.join("svid.key"), kp.serialize_pem().as_bytes())?;
        files::write_atomic(&dir.join("svid.pem"), s.certificate_pem.as_bytes())?;
        Ok(Lifetime { received_at: session.now(), expires_at: s.expires_at })
    }
}
