//! Azure join wire format.

use serde::{Deserialize, Serialize};

/// Method name.
pub const METHOD: &str = crate::domain::Method::Azure.name();
/// Default access-token audience (what IMDS issues for `resource=https://management.azure.com/`).
pub const DEFAULT_AUDIENCE: &str = "https://management.azure.com/";

/// `Join` payload (JSON); the access token goes in `JoinRequest.token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinPayload {
    /// The IMDS attested document's `signature` field (base64 PKCS#7 DER).
    pub attested_document: String,
}

