//! Domain model: plain Rust, no I/O, no clock, no network.

pub mod access_rules;
pub mod authz;
pub mod ca_rotation;
pub mod bot;
pub mod challenge;
pub mod escalation;
pub mod generation;
pub mod glob;
pub mod join_method;
pub mod join_token;
pub mod keypair_sequence;
pub mod lock;
pub mod name;
pub mod role;
pub mod spiffe_id;
pub mod ssh_policy;
pub mod template;
pub mod tls_policy;
pub mod token_uses;
pub mod workload_identity;

pub use authz::{Caller, Denied};
pub use bot::Bot;
pub use escalation::DefaultCaps;
pub use join_method::Method;
pub use join_token::{JoinToken, TokenSecret};
pub use lock::{Lock, LockSet, LockTarget};
pub use name::{Name, NameError};
pub use role::{Role, RoleAllow, Rule};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
pub use template::Attributes;
pub use workload_identity::{Condition, WorkloadIdentity};

/// A resource failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field has an invalid value.
    #[error("{field}: {message}")]
    Invalid {
        /// Attribute path of the field, e.g. `allow.rules[0].verbs`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl DomainError {
    /// Builds an `Invalid` error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }

    /// The attribute path of the offending field.
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } => field,
        }
    }

    /// What is wrong with the field.
    pub fn message(&self) -> &str {
        match self {
            Self::Invalid { message, .. } => message,
        }
    }
}

/// Most segments in a role's `spiffe_ids` pattern or a workload identity's
/// `spiffe_id` template: keeps matching a requested ID (up to 2048 bytes)
/// against every pattern of a caller's roles cheap.
pub const MAX_PATTERN_SEGMENTS: usize = 64;

/// The reserved path prefix of bot identities; no SVID may be issued under it.
pub const BOT_IDENTITY_PREFIX: &str = "/sigil/bot/";
