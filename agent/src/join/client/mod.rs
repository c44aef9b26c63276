//! Agent side of the cloud and TPM join methods: gathers the proof on the
//! machine (signed STS request, TPM credential activation, metadata tokens) and
//! talks to the broker's `BeginJoin`/`Join`. Used by `sigil agent` and `sigil join`.

pub mod aws_chain;
pub mod aws_iam;
pub mod bound_keypair;
pub mod azure;
pub mod gcp;
pub mod imds;
pub mod ec2;
pub mod metadata;
#[cfg(feature = "tpm")]
pub mod tpm;

use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// Why the agent could not join.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientJoinError {
    /// Credentials or platform data are missing on this machine.
    #[error("{0}")]
    Environment(String),
    /// The local TPM failed.
    #[error("TPM: {0}")]
    Tpm(String),
    /// The broker refused or failed.
    #[error("broker refused the join ({:?}): {}", .0.code(), .0.message())]
    Broker(#[from] tonic::Status),
}

/// What a join needs besides the proof.
#[derive(Debug, Clone)]
pub struct JoinParams {
    /// Join token name (its rules apply).
    pub token_name: String,
    /// PKCS#10 CSR (DER) for the bot identity key.
    pub csr: Vec<u8>,
    /// Requested identity lifetime (0 = broker default).
    pub ttl_seconds: i64,
}

/// `BeginJoin` for `method`.
pub(crate) async fn begin(client: &mut SigilClient<Channel>, method: &str, token_name: &str, payload: Vec<u8>) -> Result<pb::BeginJoinResponse, ClientJoinError> {
    let req = pb::BeginJoinRequest { method: method.into(), token_name: token_name.into(), payload };
    Ok(client.begin_join(req).await?.into_inner())
}

/// `Join` for `method` with a proof answering `challenge_id`.
pub(crate) async fn finish(
    client: &mut SigilClient<Channel>,
    method: &str,
    params: &JoinParams,
    challenge_id: String,
    payload: Vec<u8>,
) -> Result<pb::IdentityResponse, ClientJoinError> {
    let req = pb::JoinRequest {
        method: method.into(),
        token_name: params.token_name.clone(),
        csr: params.csr.clone(),
        ttl_seconds: params.ttl_seconds,
        payload,
        challenge_id,
        ..Default::default()
    };
    Ok(client.join(req).await?.into_inner())
}
