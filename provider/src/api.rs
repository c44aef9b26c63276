//! The provider's handle on the broker: the shared `sigil-schemas` client plus
//! error mapping into what resources need to tell apart (gone vs failed).

use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// A connected broker client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Api {
    client: SigilClient<Channel>,
}

/// One field the broker refused (a `google.rpc.BadRequest` field violation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The broker's path of the field, e.g. `config.audience`, `allow[0].repository`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// Why a broker call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The object does not exist (deleted outside Terraform, or never created).
    #[error("{0} not found")]
    NotFound(String),
    /// The broker refused or failed the call.
    #[error("broker returned {code:?}: {message}")]
    Status {
        /// gRPC status code.
        code: tonic::Code,
        /// The broker's message.
        message: String,
        /// The fields it blamed, from the status details (none when it sent none).
        violations: Vec<FieldViolation>,
    },
    /// The provider has no usable broker connection.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// Maps a status, turning `NOT_FOUND` into [`ApiError::NotFound`] for `what`.
    pub fn from_status(what: &str, status: tonic::Status) -> Self {
        use tonic_types::StatusExt;
        match status.code() {
            tonic::Code::NotFound => ApiError::NotFound(what.to_string()),
            code => {
                let violations = status
                    .get_details_bad_request()
                    .map(|b| b.field_violations.into_iter().map(|v| FieldViolation { field: v.field, description: v.description }).collect())
                    .unwrap_or_default();
                ApiError::Status { code, message: status.message().to_string(), violations }
            }
        }
    }

    /// Advice for the practitioner, by failure kind.
    pub fn hint(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "The object no longer exists on the broker.",
            ApiError::Status { code: tonic::Code::PermissionDenied | tonic::Code::Unauthenticated, .. } => {
                "The provider's identity lacks a role allowing this; grant it a rule for this resource kind and verb."
            }
            ApiError::Status { code: tonic::Code::FailedPrecondition | tonic::Code::Aborted, .. } => {
                "The object changed on the broker since it was read; run `terraform apply` again to refresh and retry."
            }
            ApiError::Status { code: tonic::Code::InvalidArgument | tonic::Code::AlreadyExists, .. } => {
                "Fix the configuration as the broker's message says."
            }
            _ => "Check that the broker is reachable at the configured address and healthy.",
        }
    }

    /// The fields the broker blamed (its `BadRequest` details), e.g. `config.audience`.
    pub fn violations(&self) -> &[FieldViolation] {
        match self {
            ApiError::Status { violations, .. } => violations,
            _ => &[],
        }
    }
}

impl Api {
    /// Wraps a connected client.
    pub fn new(client: SigilClient<Channel>) -> Self {
        Self { client }
    }

    /// A client for one call (tonic clients are cheap clones of one channel).
    pub fn client(&self) -> SigilClient<Channel> {
        self.client.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn the_blamed_field_comes_from_the_status_details_not_the_text() {
        let details = ErrorDetails::with_bad_request_violation("config.audience", "required");
        let s = tonic::Status::with_error_details(tonic::Code::InvalidArgument, "invalid config.audience: required", details);
        let e = ApiError::from_status("x", s);
        assert_eq!(e.violations(), [FieldViolation { field: "config.audience".into(), description: "required".into() }]);
        // A message shaped like one, without details, names no field.
        let text_only = ApiError::from_status("x", tonic::Status::invalid_argument("invalid expires_at: must be in the future"));
        assert!(text_only.violations().is_empty());
    }
}
