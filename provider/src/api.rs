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
    /// The broker refused the provider's join (the join token's rules,
    /// expiry, uses, or a lock): the broker's answer, never a transport failure.
    #[error("the broker refused the join with method {method:?} ({code:?}): {message}")]
    JoinRefused {
        /// The join method.
        method: String,
        /// gRPC status code of the refusal.
        code: tonic::Code,
        /// The broker's (deliberately generic) message.
        message: String,
    },
    /// The provider has no usable broker connection (no answer from a broker).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// Maps a status, turning `NOT_FOUND` into [`ApiError::NotFound`] for `what`.
    pub fn from_status(what: &str, status: tonic::Status) -> Self {
        use tonic_types::StatusExt;
        if sigil_schemas::client::is_transport_failure(&status) {
            return ApiError::Unavailable(format!("no answer from the broker ({:?}): {}", status.code(), status.message()));
        }
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

    /// A failed `Join` call: the broker's refusal, or no answer at all.
    pub fn from_join(method: &str, status: tonic::Status) -> Self {
        if sigil_schemas::client::is_transport_failure(&status) {
            return ApiError::Unavailable(format!("join with method {method:?} got no answer from the broker: {}", status.message()));
        }
        match status.code() {
            code @ (tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => {
                ApiError::JoinRefused { method: method.to_string(), code, message: status.message().to_string() }
            }
            // A malformed request or a rate limit: the broker's answer, not a denial.
            _ => ApiError::from_status("join", status),
        }
    }

    /// Advice for the practitioner, by failure kind. Only failures that never
    /// got a broker's answer point at reachability; a refusal says so.
    pub fn hint(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "The object no longer exists on the broker.",
            ApiError::JoinRefused { .. } => {
                "The join was denied by the broker, which tells the caller no reason: check the join token the provider names (method, `join_token_name`, expiry, uses left against `max_uses`, allow rules against the credential's claims, locks) and read the reason in the broker's audit log (`sigil audit`, event `join`)."
            }
            ApiError::Status { code: tonic::Code::Unauthenticated, .. } => {
                "The broker refused the provider's credentials (expired, revoked or locked identity): renew the identity file or join again, and see the broker's audit log."
            }
            ApiError::Status { code: tonic::Code::PermissionDenied, .. } => {
                "The broker denied the call: the provider's identity lacks a role allowing this; grant it a rule for this resource kind and verb."
            }
            ApiError::Status { code: tonic::Code::FailedPrecondition | tonic::Code::Aborted, .. } => {
                "The object changed on the broker since it was read; run `terraform apply` again to refresh and retry."
            }
            ApiError::Status { code: tonic::Code::InvalidArgument | tonic::Code::AlreadyExists, .. } => {
                "Fix the configuration as the broker's message says."
            }
            ApiError::Status { .. } => "The broker answered with this error; its log has the details.",
            ApiError::Unavailable(_) => "Check that the broker is reachable at the configured address and healthy.",
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

    #[test]
    fn a_refused_join_is_worded_as_a_denial_not_as_unreachable() {
        for code in [tonic::Code::PermissionDenied, tonic::Code::Unauthenticated] {
            let e = ApiError::from_join("token", tonic::Status::new(code, "join refused"));
            let text = format!("{e}. {}", e.hint());
            assert!(text.contains("refused") && text.contains("denied") && text.contains("audit log"), "{text}");
            assert!(!text.contains("reachable"), "{text}");
        }
    }

    #[test]
    fn a_refused_call_is_worded_as_a_denial() {
        for code in [tonic::Code::PermissionDenied, tonic::Code::Unauthenticated, tonic::Code::Internal, tonic::Code::ResourceExhausted] {
            let e = ApiError::from_status("x", tonic::Status::new(code, "no"));
            assert!(!e.hint().contains("reachable"), "{code:?}: {}", e.hint());
        }
        assert!(ApiError::from_status("x", tonic::Status::permission_denied("no")).hint().contains("denied"));
    }

    #[test]
    fn only_a_transport_failure_points_at_reachability() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe")));
        let e = ApiError::from_status("x", broken);
        assert!(matches!(e, ApiError::Unavailable(_)), "{e:?}");
        assert!(e.hint().contains("reachable"));
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")));
        assert!(ApiError::from_join("token", broken).hint().contains("reachable"));
        // A join the broker found malformed is not worded as a denial either.
        let bad = ApiError::from_join("spacelift", tonic::Status::invalid_argument("invalid token_name: needed"));
        assert!(!bad.hint().contains("denied") && !bad.hint().contains("reachable"), "{}", bad.hint());
        // A broker saying "unavailable" is an answer, not a transport failure.
        assert!(!ApiError::from_status("x", tonic::Status::unavailable("draining")).hint().contains("reachable"));
    }
}
