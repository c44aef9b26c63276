//! The `ec2` join method: the instance identity document and its AWS
//! signature from IMDSv2 ([`crate::join::client::ec2`]).

use super::{platform_err, JoinError, JoinMethod};
use crate::join::client::imds::Imds;
use crate::join::client::{ec2, ClientJoinError, JoinParams};
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

const METHOD: &str = sigil_core::domain::Method::Ec2.name();

/// Joins with the EC2 instance identity document.
#[derive(Debug, Clone)]
pub struct Ec2Join {
    token_name: String,
    metadata_url: Option<String>,
}

impl Ec2Join {
    /// `metadata_url` defaults to what the environment says ([`Imds::from_env`]).
    pub fn new(token_name: String, metadata_url: Option<String>) -> Self {
        Self { token_name, metadata_url }
    }
}

#[async_trait]
impl JoinMethod for Ec2Join {
    fn method(&self) -> &'static str {
        METHOD
    }

    async fn join(&self, client: &mut SigilClient<Channel>, csr: Vec<u8>, ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError> {
        let imds = match &self.metadata_url {
            Some(u) => Imds::new(u),
            None => Imds::from_env().ok_or_else(|| {
                platform_err(METHOD, ClientJoinError::Environment("AWS_EC2_METADATA_DISABLED is set: the ec2 join method needs the instance metadata service".into()))
            })?,
        };
        let params = JoinParams { token_name: self.token_name.clone(), csr, ttl_seconds };
        ec2::join(client, &params, &imds).await.map_err(|e| platform_err(METHOD, e))
    }
}
