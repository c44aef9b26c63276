//! `azure-federated`: a JWT-SVID with audience `api://AzureADTokenExchange` in the
//! file `AZURE_FEDERATED_TOKEN_FILE` names; azure-identity's
//! `WorkloadIdentityCredential` re-reads it at each token request.

use super::cloud_files;
use super::issue::{self, Target};
use super::{Output, OutputError};
use crate::config::AzureFederatedOutput;
use crate::schedule::Lifetime;
use crate::session::Session;
use crate::cloud::azure;
use sigil_core::safe_fs::Access;
use async_trait::async_trait;

/// The azure-federated output.
#[derive(Debug, Clone)]
pub struct AzureFederated {
    cfg: AzureFederatedOutput,
    access: Access,
}

impl AzureFederated {
    /// From config.
    pub fn new(cfg: AzureFederatedOutput, access: Access) -> Self {
        Self { cfg, access }
    }
}

#[async_trait]
impl Output for AzureFederated {
    fn name(&self) -> String {
        format!("azure-federated:{}", self.cfg.token_path.display())
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let audience = self.cfg.audience.clone().unwrap_or_else(|| azure::AUDIENCE.into());
        let target = Target { spiffe_id: &self.cfg.spiffe_id, workload_identity: &self.cfg.workload_identity, ttl: self.cfg.ttl };
        let s = issue::jwt(session, target, vec![audience]).await?;
        let received_at = session.now();
        cloud_files::write(&self.cfg.token_path, s.token.as_bytes(), self.access).await?;
        Ok(Lifetime { received_at, expires_at: s.expires_at })
    }
}
