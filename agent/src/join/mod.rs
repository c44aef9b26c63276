//! Join methods of the agent: how it proves who it is to get its first bot
//! identity. Each method is one file implementing [`JoinMethod`]; the runtime only
//! sees the trait, so a new method (OIDC, AWS, TPM...) plugs in by adding a file
//! and a [`JoinConfig`] variant.

mod aws_iam;
mod bound_keypair;
pub mod client;
mod ec2;
mod gcp;
mod oidc;
mod token;
mod tpm;

use super::config::JoinConfig;
use sigil_core::domain::Method;
use secrecy::SecretString;
use crate::join::client::ClientJoinError;
use async_trait::async_trait;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

pub use aws_iam::IamJoin;
pub use bound_keypair::{BoundKeypairJoin, KEY_FILE as BOUND_KEY_FILE, SEQUENCE_FILE as BOUND_SEQUENCE_FILE};
pub use ec2::Ec2Join;
pub use gcp::GcpJoin;
pub use oidc::{OidcJoin, TokenSource};
pub use token::TokenJoin;
pub use tpm::TpmJoin;

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
    /// This machine cannot produce the method's proof (no cloud credentials,
    /// no metadata server, TPM failure, unusable key file).
    #[error("join method {method}: {message}")]
    Platform {
        /// Join method.
        method: &'static str,
        /// What failed and how to fix it.
        message: String,
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

/// Maps an agent-side client failure of a platform method.
pub(crate) fn platform_err(method: &'static str, e: ClientJoinError) -> JoinError {
    match e {
        ClientJoinError::Broker(s) => JoinError::from_status(method, &s),
        other => JoinError::Platform { method, message: other.to_string() },
    }
}

/// Builds the configured join method. `env_token` is the `SIGIL_TOKEN` fallback
/// (the token method's secret, or the bound keypair's registration secret);
/// `state_dir` holds per-method state (the bound key and its join sequence);
/// `broker` is the broker address as configured (the `iam` method signs its host).
pub fn from_config(cfg: &JoinConfig, env_token: Option<SecretString>, state_dir: &std::path::Path, broker: &str) -> Box<dyn JoinMethod> {
    use super::config::JoinConfig as J;
    let oidc = |o: &super::config::OidcJoinConfig| -> Box<dyn JoinMethod> { Box::new(OidcJoin::new(cfg.method().name(), o.token_name.clone(), oidc::TokenSource::of(o))) };
    match cfg {
        J::Token(t) => Box::new(TokenJoin::new(t.token.clone().or(env_token), t.token_file.clone())),
        J::Github(o) | J::Gitlab(o) | J::Circleci(o) | J::Bitbucket(o) | J::AzureDevops(o) | J::TerraformCloud(o) | J::Spacelift(o) | J::Oidc(o) => oidc(o),
        J::Kubernetes(k) => Box::new(OidcJoin::new(cfg.method().name(), k.token_name.clone(), TokenSource::File(k.token_file()))),
        J::BoundKeypair(b) => Box::new(BoundKeypairJoin::new(
            b.token_name.clone(),
            state_dir,
            b.key_file.clone(),
            b.registration_secret.clone().or(env_token),
            b.registration_secret_file.clone(),
        )),
        J::Iam(i) => Box::new(IamJoin::new(i.token_name.clone(), broker.to_string(), i.region.clone(), i.sts_endpoint.clone())),
        J::Gcp(g) => Box::new(GcpJoin::new(g.token_name.clone(), g.audience.clone(), g.metadata_url.clone())),
        J::Tpm(t) => Box::new(TpmJoin::new(t.token_name.clone(), t.tcti.clone())),
        J::Ec2(e) => Box::new(Ec2Join::new(e.token_name.clone(), e.metadata_url.clone())),
    }
}

/// Methods of the registry the agent cannot join with (yet): `sigil join
/// --method azure` joins by hand. Every other method has a client here,
/// which `every_registry_method_has_an_agent_client` checks.
pub const NOT_IN_AGENT: &[Method] = &[Method::Azure];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The `join:` section naming `m` with the fields its client needs.
    fn parse(m: Method) -> Option<JoinConfig> {
        let n = m.name();
        [serde_json::json!({"method": n}), serde_json::json!({"method": n, "token_name": "t"}), serde_json::json!({"method": n, "token_name": "t", "audience": "a"})]
            .into_iter()
            .find_map(|v| serde_json::from_value::<JoinConfig>(v).ok())
    }

    #[test]
    fn every_registry_method_has_an_agent_client() {
        let dir = tempfile::tempdir().unwrap();
        for m in Method::ALL {
            match parse(m) {
                Some(cfg) => {
                    assert!(!NOT_IN_AGENT.contains(&m), "{m} has an agent client: remove it from NOT_IN_AGENT");
                    assert_eq!(cfg.method(), m);
                    assert_eq!(from_config(&cfg, None, dir.path(), "broker:443").method(), m.name());
                }
                None => assert!(NOT_IN_AGENT.contains(&m), "the agent has no `join: {{method: {m}}}`: add a client, or list it in NOT_IN_AGENT"),
            }
        }
    }
}
