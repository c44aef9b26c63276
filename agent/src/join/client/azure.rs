//! Agent side of the `azure` join: reads the attested document (with the
//! broker's nonce) and a managed identity access token from the VM's IMDS.

use super::{begin, metadata, ClientJoinError, JoinParams};
use sigil_core::join_wire::azure::{JoinPayload, DEFAULT_AUDIENCE};

const METHOD: &str = sigil_core::domain::Method::Azure.name();
use crate::join::client::gcp::percent_encode;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// Azure IMDS.
pub const DEFAULT_IMDS: &str = "http://169.254.169.254";

/// IMDS options.
#[derive(Debug, Clone)]
pub struct Imds {
    /// Base URL (default [`DEFAULT_IMDS`]).
    pub base: String,
    /// Resource (audience) of the access token (default `https://management.azure.com/`).
    pub resource: String,
    /// Client id of a user-assigned identity (None: the system-assigned one).
    pub client_id: Option<String>,
}

impl Default for Imds {
    fn default() -> Self {
        Self { base: DEFAULT_IMDS.into(), resource: DEFAULT_AUDIENCE.into(), client_id: None }
    }
}

fn env_err(m: String) -> ClientJoinError {
    ClientJoinError::Environment(m)
}

impl Imds {
    /// The attested document's base64 PKCS#7 for `nonce`.
    pub async fn attested_document(&self, nonce: &str) -> Result<String, ClientJoinError> {
        let url = format!("{}/metadata/attested/document?api-version=2020-09-01&nonce={}", self.base.trim_end_matches('/'), percent_encode(nonce));
        let body = metadata::get(&url, &[("Metadata", "true")]).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| env_err(format!("IMDS attested document: {e}")))?;
        if v.get("encoding").and_then(|e| e.as_str()) != Some("pkcs7") {
            return Err(env_err("IMDS attested document is not pkcs7".into()));
        }
        v.get("signature").and_then(|s| s.as_str()).map(str::to_string).ok_or_else(|| env_err("IMDS attested document has no signature".into()))
    }

    /// A managed identity access token for [`Imds::resource`].
    pub async fn access_token(&self) -> Result<String, ClientJoinError> {
        let mut url = format!("{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}", self.base.trim_end_matches('/'), percent_encode(&self.resource));
        if let Some(id) = &self.client_id {
            url.push_str(&format!("&client_id={}", percent_encode(id)));
        }
        let body = metadata::get(&url, &[("Metadata", "true")]).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| env_err(format!("IMDS token: {e}")))?;
        v.get("access_token").and_then(|s| s.as_str()).map(str::to_string).ok_or_else(|| env_err("IMDS token answer has no access_token".into()))
    }
}

/// The `Join` request of an `azure` join answering `challenge_id`.
#[allow(clippy::needless_update)] // keeps compiling when the proto gains fields
pub fn join_request(params: &JoinParams, challenge_id: String, access_token: String, attested_document: String) -> Result<pb::JoinRequest, ClientJoinError> {
    let payload = serde_json::to_vec(&JoinPayload { attested_document }).map_err(|e| env_err(e.to_string()))?;
    Ok(pb::JoinRequest {
        method: METHOD.into(),
        token: access_token,
        token_name: params.token_name.clone(),
        csr: params.csr.clone(),
        ttl_seconds: params.ttl_seconds,
        payload,
        challenge_id,
        ..Default::default()
    })
}

/// Joins with the `azure` method: `BeginJoin` (nonce), IMDS documents, `Join`.
pub async fn join(client: &mut SigilClient<Channel>, params: &JoinParams, imds: &Imds) -> Result<pb::IdentityResponse, ClientJoinError> {
    let ch = begin(client, METHOD, &params.token_name, Vec::new()).await?;
    let nonce = String::from_utf8(ch.payload).map_err(|_| env_err("broker nonce is not text".into()))?;
    let doc = imds.attested_document(&nonce).await?;
    let token = imds.access_token().await?;
    Ok(client.join(join_request(params, ch.challenge_id, token, doc)?).await?.into_inner())
}
