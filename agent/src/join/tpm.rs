//! The `tpm` join method: the TPM's endorsement key and a fresh attestation key,
//! proven by credential activation ([`crate::join::client::tpm`]). Needs the
//! `tpm` feature (system tpm2-tss).

use super::{JoinError, JoinMethod};
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

const METHOD: &str = sigil_core::domain::Method::Tpm.name();

/// Joins by proving a TPM.
#[derive(Debug, Clone)]
pub struct TpmJoin {
    #[cfg_attr(not(feature = "tpm"), allow(dead_code))]
    token_name: String,
    #[cfg_attr(not(feature = "tpm"), allow(dead_code))]
    tcti: Option<String>,
}

impl TpmJoin {
    /// `tcti` like `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`;
    /// default `TPM2TOOLS_TCTI` / `TCTI`, then `device:/dev/tpmrm0`.
    pub fn new(token_name: String, tcti: Option<String>) -> Self {
        Self { token_name, tcti }
    }
}

#[async_trait]
impl JoinMethod for TpmJoin {
    fn method(&self) -> &'static str {
        METHOD
    }

    #[cfg(feature = "tpm")]
    async fn join(&self, client: &mut SigilClient<Channel>, csr: Vec<u8>, ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError> {
        use crate::join::client::{tpm, JoinParams};
        let device = match &self.tcti {
            Some(t) => tpm::TpmDevice::new(t),
            None => tpm::TpmDevice::from_env(),
        };
        let params = JoinParams { token_name: self.token_name.clone(), csr, ttl_seconds };
        tpm::join(client, &params, &device).await.map_err(|e| super::platform_err(METHOD, e))
    }

    #[cfg(not(feature = "tpm"))]
    async fn join(&self, _client: &mut SigilClient<Channel>, _csr: Vec<u8>, _ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError> {
        Err(JoinError::Platform { method: METHOD, message: "this sigil was built without the `tpm` feature (cargo build --features tpm; needs libtss2-dev)".into() })
    }
}
