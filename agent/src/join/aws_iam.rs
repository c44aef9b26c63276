//! The `iam` join method: the machine's AWS credentials, found as the AWS SDKs
//! find them ([`crate::join::client::aws_chain`]: environment, shared profile,
//! web identity, container, EC2 instance role), sign an `sts:GetCallerIdentity`
//! around the broker's challenge ([`crate::join::client::aws_iam`]); the secret
//! key never leaves the machine. One credential cache lives as long as the
//! agent, so a re-join hours later uses refreshed temporary credentials.

use super::{platform_err, JoinError, JoinMethod};
use crate::join::client::aws_chain::{CachedCredentials, Env};
use crate::join::client::aws_iam::{self, StsTarget};
use crate::join::client::{ClientJoinError, JoinParams};
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::sync::Arc;
use tonic::transport::Channel;

const METHOD: &str = sigil_core::domain::Method::Iam.name();

/// Joins by proving an AWS identity.
#[derive(Debug, Clone)]
pub struct IamJoin {
    token_name: String,
    broker_addr: String,
    region: Option<String>,
    sts_endpoint: Option<String>,
    credentials: Arc<CachedCredentials>,
}

impl IamJoin {
    /// `broker_addr` is the broker address as configured (its host is signed
    /// into the request); `region` defaults to `AWS_REGION` /
    /// `AWS_DEFAULT_REGION`, the profile's `region`, then `us-east-1`;
    /// `sts_endpoint` to the regional endpoint.
    pub fn new(token_name: String, broker_addr: String, region: Option<String>, sts_endpoint: Option<String>) -> Self {
        Self { token_name, broker_addr, region, sts_endpoint, credentials: Arc::new(CachedCredentials::standard()) }
    }

    fn target(&self) -> StsTarget {
        StsTarget::resolve(self.region.clone(), self.sts_endpoint.clone(), &Env::process())
    }
}

#[async_trait]
impl JoinMethod for IamJoin {
    fn method(&self) -> &'static str {
        METHOD
    }

    async fn join(&self, client: &mut SigilClient<Channel>, csr: Vec<u8>, ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError> {
        let creds = self.credentials.get().await.map_err(|e| platform_err(METHOD, ClientJoinError::Environment(e.to_string())))?;
        let params = JoinParams { token_name: self.token_name.clone(), csr, ttl_seconds };
        aws_iam::join(client, &self.broker_addr, &params, &creds.credentials, &self.target()).await.map_err(|e| platform_err(METHOD, e))
    }
}
