//! The `gcp` join method: the VM's metadata server issues an instance identity
//! token for the join token's audience ([`crate::join::client::gcp`]).

use super::{platform_err, JoinError, JoinMethod};
use crate::join::client::{gcp, JoinParams};
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

const METHOD: &str = sigil_core::domain::Method::Gcp.name();

/// Joins with a GCE instance identity token.
#[derive(Debug, Clone)]
pub struct GcpJoin {
    token_name: String,
    audience: String,
    metadata_url: Option<String>,
}

impl GcpJoin {
    /// `metadata_url` defaults to `GCE_METADATA_HOST` or the GCE metadata server.
    pub fn new(token_name: String, audience: String, metadata_url: Option<String>) -> Self {
        Self { token_name, audience, metadata_url }
    }
}

#[async_trait]
impl JoinMethod for GcpJoin {
    fn method(&self) -> &'static str {
        METHOD
    }

    async fn join(&self, client: &mut SigilClient<Channel>, csr: Vec<u8>, ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError> {
        let base = self.metadata_url.clone().unwrap_or_else(gcp::metadata_base_from_env);
        let params = JoinParams { token_name: self.token_name.clone(), csr, ttl_seconds };
        gcp::join(client, &params, &base, &self.audience).await.map_err(|e| platform_err(METHOD, e))
    }
}
