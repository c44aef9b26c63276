//! `aws-web-identity`: a JWT-SVID (`aud: sts.amazonaws.com`) in a token file and
//! an AWS config profile (`web_identity_token_file` + `role_arn`), so every AWS
//! SDK calls AssumeRoleWithWebIdentity itself and re-reads the file the agent
//! keeps fresh. With `assume_role: true` the agent makes that call
//! ([`crate::cloud::aws_web_identity::assume_role`]) and keeps a profile of the
//! shared credentials file fresh instead.

use secrecy::SecretString;
use super::cloud_files::{self, absolute, rfc3339_unix};
use super::issue::{self, Target};
use super::{Output, OutputError};
use crate::config::AwsWebIdentityOutput;
use crate::schedule::Lifetime;
use crate::session::Session;
use crate::cloud::aws_web_identity::{self as aws, AssumeRoleRequest, WebIdentityProfile};
use sigil_core::safe_fs::Access;
use async_trait::async_trait;

/// The aws-web-identity output.
#[derive(Debug, Clone)]
pub struct AwsWebIdentity {
    cfg: AwsWebIdentityOutput,
    access: Access,
}

impl AwsWebIdentity {
    /// From config.
    pub fn new(cfg: AwsWebIdentityOutput, access: Access) -> Self {
        Self { cfg, access }
    }

    fn profile(&self, token_file: &std::path::Path) -> WebIdentityProfile {
        WebIdentityProfile {
            name: self.cfg.profile.clone(),
            role_arn: self.cfg.role_arn.clone(),
            token_file: absolute(token_file),
            role_session_name: self.cfg.role_session_name.clone(),
            region: self.cfg.region.clone(),
            duration_seconds: self.cfg.duration_seconds,
        }
    }

    async fn assume_role(&self, session: &Session, token: SecretString, spiffe_id: &str) -> Result<i64, OutputError> {
        let Some(creds_file) = &self.cfg.credentials_file else {
            return Err(OutputError::Invalid("credentials_file is not set".into()));
        };
        let client = super::http_client(&self.cfg.ca_file)?;
        let req = AssumeRoleRequest {
            endpoint: self.cfg.sts_endpoint.clone().unwrap_or_else(|| aws::DEFAULT_ENDPOINT.into()),
            role_arn: self.cfg.role_arn.clone(),
            role_session_name: self.cfg.role_session_name.clone().unwrap_or_else(|| aws::session_name_for(spiffe_id)),
            duration_seconds: self.cfg.duration_seconds,
            token,
        };
        let creds = aws::assume_role(&client, &req).await?;
        cloud_files::upsert_ini(creds_file, &self.cfg.profile, &creds.credentials_profile(), self.access).await?;
        // Unparseable expiry: fall back to a short schedule rather than trusting it forever.
        Ok(rfc3339_unix(&creds.expiration).unwrap_or(session.now() + aws::DURATION_RANGE.0 as i64))
    }
}

#[async_trait]
impl Output for AwsWebIdentity {
    fn name(&self) -> String {
        match (&self.cfg.token_path, &self.cfg.credentials_file) {
            (Some(t), _) => format!("aws-web-identity:{}", t.display()),
            (None, Some(c)) => format!("aws-web-identity:{}[{}]", c.display(), self.cfg.profile),
            (None, None) => "aws-web-identity".into(),
        }
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let audience = self.cfg.audience.clone().unwrap_or_else(|| aws::DEFAULT_AUDIENCE.into());
        let target = Target { spiffe_id: &self.cfg.spiffe_id, workload_identity: &self.cfg.workload_identity, ttl: self.cfg.ttl };
        let s = issue::jwt(session, target, vec![audience]).await?;
        let received_at = session.now();
        if let Some(t) = &self.cfg.token_path {
            cloud_files::write(t, s.token.as_bytes(), self.access).await?;
        }
        if self.cfg.assume_role {
            let creds_expire = self.assume_role(session, SecretString::from(s.token), &s.spiffe_id).await?;
            // A token file written beside the credentials must not go stale either.
            let expires_at = if self.cfg.token_path.is_some() { creds_expire.min(s.expires_at) } else { creds_expire };
            return Ok(Lifetime { received_at, expires_at });
        }
        if let (Some(config), Some(t)) = (&self.cfg.config_file, &self.cfg.token_path) {
            let p = self.profile(t);
            cloud_files::upsert_ini(config, &p.header(), &p.lines(), self.access).await?;
        }
        Ok(Lifetime { received_at, expires_at: s.expires_at })
    }
}
