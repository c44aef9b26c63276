//! `gcp-external-account`: a JWT-SVID (audience = the workload identity
//! provider) in a token file, and the `external_account` credential
//! configuration whose `credential_source.file` points at it. Google's client
//! libraries (`GOOGLE_APPLICATION_CREDENTIALS`) read the token at each exchange.

use super::cloud_files::{self, absolute};
use super::issue::{self, Target};
use super::{Output, OutputError};
use crate::config::GcpExternalAccountOutput;
use crate::schedule::Lifetime;
use crate::session::Session;
use crate::cloud::gcp::{self, CredentialSource, ExternalAccountConfig};
use sigil_core::safe_fs::Access;
use async_trait::async_trait;

/// The gcp-external-account output.
#[derive(Debug, Clone)]
pub struct GcpExternalAccount {
    cfg: GcpExternalAccountOutput,
    access: Access,
}

impl GcpExternalAccount {
    /// From config.
    pub fn new(cfg: GcpExternalAccountOutput, access: Access) -> Self {
        Self { cfg, access }
    }

    /// The credential configuration this output writes.
    pub fn external_account(&self) -> ExternalAccountConfig {
        let c = &self.cfg;
        ExternalAccountConfig {
            audience: c.audience.clone(),
            token_url: c.token_url.clone().unwrap_or_else(|| gcp::DEFAULT_TOKEN_URL.into()),
            source: CredentialSource::File(absolute(&c.token_path)),
            service_account_impersonation_url: c.service_account_impersonation_url.clone().or_else(|| c.service_account.as_deref().map(gcp::impersonation_url)),
            token_lifetime_seconds: c.token_lifetime_seconds,
        }
    }
}

#[async_trait]
impl Output for GcpExternalAccount {
    fn name(&self) -> String {
        format!("gcp-external-account:{}", self.cfg.config_path.display())
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let ea = self.external_account();
        ea.validate()?;
        let target = Target { spiffe_id: &self.cfg.spiffe_id, workload_identity: &self.cfg.workload_identity, ttl: self.cfg.ttl };
        let s = issue::jwt(session, target, vec![self.cfg.audience.clone()]).await?;
        let received_at = session.now();
        // Token first: the config never points at a file that does not exist yet.
        cloud_files::write(&self.cfg.token_path, s.token.as_bytes(), self.access).await?;
        let json = serde_json::to_string_pretty(&ea.to_json()).map_err(|e| OutputError::Invalid(e.to_string()))? + "\n";
        cloud_files::write_if_changed(&self.cfg.config_path, json.as_bytes(), self.access).await?;
        Ok(Lifetime { received_at, expires_at: s.expires_at })
    }
}
