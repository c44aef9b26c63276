//! TPM join wire format (JSON payloads; binary fields base64).

use serde::{Deserialize, Serialize};

/// Method name.
pub const METHOD: &str = crate::domain::Method::Tpm.name();
/// Largest `BeginJoin` payload accepted.
pub const MAX_BEGIN_BYTES: usize = 16 * 1024;

/// `BeginJoin` payload (JSON, binary fields base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginPayload {
    /// EK `TPMT_PUBLIC`.
    pub ek_public: String,
    /// EK certificate DER (empty when the TPM has none).
    #[serde(default)]
    pub ek_certificate: String,
    /// AK `TPMT_PUBLIC`.
    pub ak_public: String,
}

/// `BeginJoin` answer (JSON, binary fields base64): `ActivateCredential` inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengePayload {
    /// `TPM2B_ID_OBJECT` contents.
    pub id_object: String,
    /// `TPM2B_ENCRYPTED_SECRET` contents.
    pub encrypted_secret: String,
}

