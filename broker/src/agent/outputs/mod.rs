//! Outputs: files the agent keeps fresh. One file per kind; each implements
//! [`Output`] and the runtime schedules them all alike.

mod identity;
mod jwt_svid;
mod x509_svid;

pub use identity::IdentityFile;
pub use jwt_svid::JwtSvidFile;
pub use x509_svid::X509SvidDir;

use super::config::OutputConfig;
use super::files::FileError;
use super::schedule::Lifetime;
use super::session::{Session, SessionError};
use async_trait::async_trait;

/// Why an output could not be refreshed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// No identity or no connection.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The broker refused or failed the request.
    #[error("broker refused {what} ({code:?}): {message}")]
    Broker {
        /// What was asked for.
        what: String,
        /// gRPC code.
        code: tonic::Code,
        /// The broker's reason.
        message: String,
    },
    /// Writing the files failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Key generation or encoding failed.
    #[error("cannot prepare the key: {0}")]
    Key(String),
}

impl OutputError {
    /// Whether the connection should be redialled.
    pub fn is_transport(&self) -> bool {
        matches!(self, OutputError::Broker { code, .. } if matches!(code, tonic::Code::Unavailable | tonic::Code::Unknown))
    }
}

/// A file (or set of files) the agent keeps fresh.
#[async_trait]
pub trait Output: Send + Sync {
    /// A stable name for logs and metrics, e.g. `x509-svid:/var/run/svid`.
    fn name(&self) -> String;

    /// True if the output is a copy of the identity: rewritten whenever it changes
    /// rather than on its own schedule.
    fn follows_identity(&self) -> bool {
        false
    }

    /// Obtains fresh contents and writes them atomically.
    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError>;
}

/// Builds the configured outputs.
pub fn from_config(cfg: &[OutputConfig]) -> Vec<Box<dyn Output>> {
    cfg.iter()
        .map(|o| -> Box<dyn Output> {
            match o {
                OutputConfig::X509Svid(x) => Box::new(X509SvidDir::new(x.clone())),
                OutputConfig::JwtSvid(j) => Box::new(JwtSvidFile::new(j.clone())),
                OutputConfig::Identity(i) => Box::new(IdentityFile::new(i.path.clone())),
            }
        })
        .collect()
}

/// Creates the parent of a file output (0700) if it does not exist yet; an
/// existing directory keeps its permissions (it may be shared, e.g. /run/secrets).
pub(crate) fn ensure_parent(path: &std::path::Path) -> Result<(), FileError> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() && !p.exists() => super::files::private_dir(p),
        _ => Ok(()),
    }
}

fn broker_err(what: impl Into<String>, s: tonic::Status) -> OutputError {
    OutputError::Broker { what: what.into(), code: s.code(), message: s.message().to_string() }
}
