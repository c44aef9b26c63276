//! `aws-roles-anywhere`: an X.509-SVID (key generated here, never sent) signs
//! IAM Roles Anywhere `CreateSession` ([`crate::cloud::roles_anywhere`]); the
//! temporary credentials are kept fresh in a profile of a shared credentials
//! file. Optionally the SVID is also written to a directory, switched as a whole
//! like the `x509-svid` output.

use super::cloud_files::{self, rfc3339_unix};
use super::issue::{self, Target};
use super::x509_svid::write_svid_dir;
use super::{Output, OutputError};
use crate::config::AwsRolesAnywhereOutput;
use crate::schedule::Lifetime;
use crate::session::Session;
use crate::cloud::roles_anywhere::{self, SessionParams};
use crate::cloud::sigv4_x509::{CertificateChain, SigningKey, X509Credential};
use sigil_core::safe_fs::Access;
use async_trait::async_trait;

/// Default session length.
pub const DEFAULT_DURATION_SECONDS: u32 = 3600;

/// The aws-roles-anywhere output.
#[derive(Debug, Clone)]
pub struct AwsRolesAnywhere {
    cfg: AwsRolesAnywhereOutput,
    access: Access,
}

impl AwsRolesAnywhere {
    /// From config.
    pub fn new(cfg: AwsRolesAnywhereOutput, access: Access) -> Self {
        Self { cfg, access }
    }

    fn params(&self) -> SessionParams {
        SessionParams {
            endpoint: self.cfg.endpoint.clone(),
            region: self.cfg.region.clone(),
            trust_anchor_arn: self.cfg.trust_anchor_arn.clone(),
            profile_arn: self.cfg.profile_arn.clone(),
            role_arn: self.cfg.role_arn.clone(),
            duration_seconds: self.cfg.duration_seconds.unwrap_or(DEFAULT_DURATION_SECONDS),
            role_session_name: self.cfg.role_session_name.clone(),
        }
    }
}

#[async_trait]
impl Output for AwsRolesAnywhere {
    fn name(&self) -> String {
        format!("aws-roles-anywhere:{}[{}]", self.cfg.credentials_file.display(), self.cfg.profile)
    }

    fn carries_bundle(&self) -> bool {
        self.cfg.dir.is_some()
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let target = Target { spiffe_id: &self.cfg.spiffe_id, workload_identity: &self.cfg.workload_identity, ttl: self.cfg.ttl };
        let (kp, svid) = issue::x509(session, target).await?;
        let received_at = session.now();
        let key_pem = kp.serialize_pem();
        let cred = X509Credential::new(CertificateChain::from_pem(&svid.certificate_pem, None)?, SigningKey::from_pem(&key_pem)?)?;
        let client = super::http_client(&self.cfg.ca_file)?;
        let creds = roles_anywhere::create_session(&client, &cred, &self.params(), session.now()).await?;
        if let Some(dir) = &self.cfg.dir {
            write_svid_dir(dir, &svid.certificate_pem, &key_pem, &svid.bundle_pem, self.access).await?;
        }
        cloud_files::upsert_ini(&self.cfg.credentials_file, &self.cfg.profile, &creds.credentials_profile(), self.access).await?;
        let creds_expire = rfc3339_unix(&creds.expiration).unwrap_or(svid.expires_at);
        Ok(Lifetime { received_at, expires_at: creds_expire.min(svid.expires_at) })
    }
}
