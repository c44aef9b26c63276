//! Agent side of the `ec2` join: reads the instance identity document and its
//! AWS RSA-2048 signature (PKCS#7, base64) from IMDSv2 and sends both. The
//! document is the same for the instance's life, so the broker binds the
//! instance id to one bot instance (a copy cannot join a second time).

use super::imds::Imds;
use super::{ClientJoinError, JoinParams};
use serde::{Deserialize, Serialize};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// Path of the identity document.
pub const DOCUMENT_PATH: &str = "/latest/dynamic/instance-identity/document";
/// Path of its RSA-2048 PKCS#7 signature (base64 DER, no PEM armour).
pub const SIGNATURE_PATH: &str = "/latest/dynamic/instance-identity/rsa2048";

/// The `Join` payload (JSON): the document exactly as IMDS served it and the signature text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    /// The instance identity document (JSON text, byte for byte).
    pub document: String,
    /// `rsa2048`: base64 of the PKCS#7 SignedData over `document` (BER with indefinite
    /// lengths, in lines, as IMDS serves it; the broker reads either form).
    pub rsa2048: String,
}

/// Reads the document and its signature.
pub async fn proof(imds: &Imds) -> Result<Proof, ClientJoinError> {
    let token = imds.session_token().await?;
    let document = String::from_utf8(imds.get(&token, DOCUMENT_PATH).await?)
        .map_err(|_| ClientJoinError::Environment("the instance identity document is not text".into()))?;
    let rsa2048 = imds.get_text(&token, SIGNATURE_PATH).await?;
    Ok(Proof { document, rsa2048 })
}

/// Joins with the `ec2` method.
pub async fn join(client: &mut SigilClient<Channel>, params: &JoinParams, imds: &Imds) -> Result<pb::IdentityResponse, ClientJoinError> {
    let p = proof(imds).await?;
    let payload = serde_json::to_vec(&p).map_err(|e| ClientJoinError::Environment(e.to_string()))?;
    let req = pb::JoinRequest {
        method: sigil_core::domain::Method::Ec2.name().into(),
        token_name: params.token_name.clone(),
        csr: params.csr.clone(),
        ttl_seconds: params.ttl_seconds,
        payload,
        ..Default::default()
    };
    Ok(client.join(req).await?.into_inner())
}
