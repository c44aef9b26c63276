//! Join methods of the agent: how it proves who it is to get its first bot
//! identity. Each method is one file implementing [`JoinMethod`]; the runtime only
//! sees the trait, so a new method (OIDC, AWS, TPM...) plugs in by adding a file
//! and a [`JoinConfig`] variant.

mod token;

use super::config::{JoinConfig, Secret};
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

pub use token::TokenJoin;

/// Why a join did not produce an identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The method's credential is not configured.
    #[error("join method {method}: {message}")]
    NoCredential {
        /// Join method.
        method: &'static str,
        /// What to configure.
        message: String,
    },
    /// The credential file could not be read.
    #[error("join method {method}: cannot read {path}: {source}")]
    ReadCredential {
        /// Join method.
        method: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The broker refused the join; retrying with the same credential will not help.
    #[error("join with method {method} rejected by the broker ({code:?}): {message}")]
    Rejected {
        /// Join method.
        method: &'static str,
        /// gRPC code.
        code: tonic::Code,
        /// The broker's reason.
        message: String,
    },
    /// The broker could not be reached or failed; retrying may help.
    #[error("join with method {method} failed, broker unavailable ({code:?}): {message}")]
    Unavailable {
        /// Join method.
        method: &'static str,
        /// gRPC code.
        code: tonic::Code,
        /// The transport's message.
        message: String,
    },
}

impl JoinError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, JoinError::Unavailable { .. })
    }

    /// Classifies a gRPC status of a join call.
    pub fn from_status(method: &'static str, s: &tonic::Status) -> Self {
        let (code, message) = (s.code(), s.message().to_string());
        if transient_code(code) {
            JoinError::Unavailable { method, code, message }
        } else {
            JoinError::Rejected { method, code, message }
        }
    }
}

/// gRPC codes that say "try again later" rather than "no".
pub fn transient_code(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(code, C::Unavailable | C::DeadlineExceeded | C::Unknown | C::ResourceExhausted | C::Aborted | C::Cancelled | C::Internal)
}

/// A way to obtain a bot identity from the broker.
#[async_trait]
pub trait JoinMethod: Send + Sync {
    /// The method name sent to the broker (e.g. `token`).
    fn method(&self) -> &'static str;

    /// Joins with `csr` (the key stays with the agent) over an unauthenticated client.
    async fn join(&self, client: &mut SigilClient<Channel>, csr: Vec<u8>, ttl_seconds: i64) -> Result<pb::IdentityResponse, JoinError>;
}

/// Builds the configured join method. `env_token` is the `SIGIL_TOKEN` fallback.
pub fn from_config(cfg: &JoinConfig, env_token: Option<Secret>) -> Box<dyn JoinMethod> {
    match cfg {
        JoinConfig::Token(t) => Box::new(TokenJoin::new(t.token.clone().or(env_token), t.token_file.clone())),
    }
}
