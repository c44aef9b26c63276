//! Errors of broker operations, each safe to return to the caller.

use sigil_core::domain::{Denied, DomainError};
use crate::store::StoreError;

/// A broker operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The request is malformed; `field` names the attribute.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Attribute path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The caller is not authenticated.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller lacks permission; the message names the rule.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// Store outcome (not found, exists, conflict, token rejected...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An internal failure; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// A join was refused: one answer for every reason ([`crate::join::REFUSED`]);
    /// the reason is for the audit log only ([`ServiceError::audit_reason`]).
    #[error("{}", crate::join::REFUSED)]
    JoinRefused(String),
    /// A lock stops this request. The caller is told only
    /// [`super::locks::LOCKED`]; which lock and why are for the audit log
    /// ([`ServiceError::audit_reason`]).
    #[error("{}", super::locks::LOCKED)]
    Locked {
        /// The lock's name.
        lock: String,
        /// What it targets (`bot "ci"`).
        target: String,
        /// The operator's reason.
        reason: String,
    },
    /// The caller sent this kind of request too often; retry later.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The request does not fit the current state (e.g. a CA rotation step
    /// from the wrong phase); the message says what would.
    #[error("{0}")]
    Precondition(String),
}

impl ServiceError {
    /// Builds an `Invalid` error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }

    /// The reason to audit: the hidden detail of a refused join, else the message.
    pub fn audit_reason(&self) -> String {
        match self {
            Self::JoinRefused(detail) => detail.clone(),
            Self::Locked { lock, target, reason } => format!("locked by lock {lock:?} on {target}: {reason}"),
            other => other.to_string(),
        }
    }
}

impl From<DomainError> for ServiceError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { field, message } => Self::Invalid { field, message },
        }
    }
}

impl From<crate::join::JoinError> for ServiceError {
    fn from(e: crate::join::JoinError) -> Self {
        use crate::join::JoinError as J;
        match e {
            J::Rejected(m) => Self::Denied(Denied(m)),
            J::Invalid { field, message } => Self::Invalid { field, message },
            J::Store(s) => Self::Store(s),
            J::Internal(m) => Self::Internal(m),
            J::Refused { detail } => Self::JoinRefused(detail),
        }
    }
}

impl From<crate::ca::CaError> for ServiceError {
    fn from(e: crate::ca::CaError) -> Self {
        match e {
            crate::ca::CaError::X509(crate::ca::x509::X509Error::Sign(m)) => Self::Internal(m),
            crate::ca::CaError::X509(x) => Self::invalid("csr", x.to_string()),
            crate::ca::CaError::Lifetime(l) => Self::invalid("ttl_seconds", l.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}
