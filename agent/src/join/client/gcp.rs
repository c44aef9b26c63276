//! Agent side of the `gcp` join: asks the VM's metadata server for an instance
//! identity token (`format=full`) for the join token's audience.

use super::{metadata, ClientJoinError, JoinParams};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// The GCE metadata server's default address.
pub const DEFAULT_METADATA: &str = "http://metadata.google.internal";

/// Where the metadata server is: `GCE_METADATA_HOST` (host[:port], the variable
/// Google's client libraries read) or the default.
pub fn metadata_base_from_env() -> String {
    match std::env::var("GCE_METADATA_HOST") {
        Ok(h) if !h.is_empty() => format!("http://{h}"),
        _ => DEFAULT_METADATA.into(),
    }
}

/// Fetches an instance identity token for `audience` from `metadata_base`.
pub async fn identity_token(metadata_base: &str, audience: &str) -> Result<String, ClientJoinError> {
    let url = format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/identity?audience={}&format=full",
        metadata_base.trim_end_matches('/'),
        percent_encode(audience)
    );
    let body = metadata::get(&url, &[("Metadata-Flavor", "Google")]).await?;
    String::from_utf8(body).map(|s| s.trim().to_string()).map_err(|_| ClientJoinError::Environment("metadata identity token is not text".into()))
}

/// Joins with the `gcp` method.
pub async fn join(client: &mut SigilClient<Channel>, params: &JoinParams, metadata_base: &str, audience: &str) -> Result<pb::IdentityResponse, ClientJoinError> {
    let token = identity_token(metadata_base, audience).await?;
    let req = pb::JoinRequest {
        method: sigil_core::domain::Method::Gcp.name().into(),
        token,
        token_name: params.token_name.clone(),
        csr: params.csr.clone(),
        ttl_seconds: params.ttl_seconds,
        ..Default::default()
    };
    Ok(client.join(req).await?.into_inner())
}

/// RFC 3986 unreserved characters pass; everything else is %-encoded.
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
