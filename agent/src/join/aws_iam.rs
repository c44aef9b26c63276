//! The `iam` join method: the machine's AWS credentials (environment) sign an
//! `sts:GetCallerIdentity` around the broker's challenge
//! ([`crate::join::client::aws_iam`]); the secret key never leaves the machine.

use super::{platform_err, JoinError, JoinMethod};
use crate::join::client::aws_iam::{self, AwsCredentials, StsTarget};
use crate::join::client::JoinParams;
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

const METHOD: &str = sigil_core::domain::Method::Iam.name();

/// Joins by proving an AWS identity.
#[derive(Debug, Clone)]
pub struct IamJoin {
    token_name: String,
    broker_addr: String,
    region: Option<String>,
    sts_endpoint: Option<String>,
}

impl IamJoin {
    /// `broker_addr` is the broker address as configured (its host is signed
    /// into the request); `region` defaults to `AWS_REGION` /
    /// `AWS_DEFAULT_REGION`, then `us-east-1`; `sts_endpoint` to the regional endpoint.
    pub fn new(token_name: String, broker_addr: String, region: Option<String>, sts_endpoint: Option<String>) -> Self {
        Self { token_name, broker_addr, region, sts_endpoint }
    }

    fn target(&self) -> StsTarget {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = self.region.clone().or_else(|| env("AWS_REGION")).or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
        match &self.sts_endpoint {
            Some(url) => StsTarget { url: url.clone(), region },
            None => StsTarget::regional(&region),
        }
    }
}

#[async_trait]
impl JoinMethod for IamJoin {
    fn method(&self) -> &'static str {
        METHOD
    }

    async fn join(&self, client: &mut SigilClient<Channel>, csr: Vec<u8>, ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError> {
        let creds = AwsCredentials::from_env().map_err(|e| platform_err(METHOD, e))?;
        let params = JoinParams { token_name: self.token_name.clone(), csr, ttl_seconds };
        aws_iam::join(client, &self.broker_addr, &params, &creds, &self.target()).await.map_err(|e| platform_err(METHOD, e))
    }
}
