//! The provider's handle on the broker: the shared `sigil-schemas` client plus
//! error mapping into what resources need to tell apart (gone vs failed).

use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// A connected broker client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Api {
    client: SigilClient<Channel>,
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
    },
    /// The provider has no usable broker connection.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// Maps a status, turning `NOT_FOUND` into [`ApiError::NotFound`] for `what`.
    pub fn from_status(what: &str, status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::NotFound => ApiError::NotFound(what.to_string()),
            code => ApiError::Status { code, message: status.message().to_string() },
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
}

impl ApiError {
    /// The field the broker blames for an invalid argument (its messages read
    /// `invalid FIELD: what is wrong`), e.g. `allow.spiffe_ids[0]`.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Status { code: tonic::Code::InvalidArgument, message } => {
                let rest = message.strip_prefix("invalid ")?;
                let (field, _) = rest.split_once(": ")?;
                (!field.is_empty() && !field.contains(' ')).then_some(field)
            }
            _ => None,
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

    #[test]
    fn invalid_argument_names_the_field() {
        let e = ApiError::from_status("x", tonic::Status::invalid_argument("invalid expires_at: must be in the future"));
        assert_eq!(e.field(), Some("expires_at"));
        let other = ApiError::from_status("x", tonic::Status::invalid_argument("something else"));
        assert_eq!(other.field(), None);
    }
}
