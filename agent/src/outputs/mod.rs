//! Outputs: files the agent keeps fresh. One file per kind; each implements
//! [`Output`] and the runtime schedules them all alike.

pub mod application;
mod aws_roles_anywhere;
mod aws_web_identity;
mod azure_federated;
mod ca_file;
mod cloud_files;
pub mod database;
pub mod database_conf;
mod gcp_external_account;
mod identity;
mod issue;
mod jwt_svid;
pub mod kube_credential;
pub mod kubeconfig;
pub mod kubernetes;
mod reloading;
pub mod ssh;
pub mod ssh_files;
pub mod ssh_key;
mod x509_svid;

pub use application::ApplicationDir;
pub use aws_roles_anywhere::AwsRolesAnywhere;
pub use aws_web_identity::AwsWebIdentity;
pub use azure_federated::AzureFederated;
pub use database::DatabaseDir;
pub use gcp_external_account::GcpExternalAccount;
pub use identity::IdentityFile;
pub use jwt_svid::JwtSvidFile;
pub use kubernetes::KubernetesDir;
pub use reloading::Reloading;
pub use ssh::{SshDir, SshHostDir};
pub use x509_svid::X509SvidDir;

use super::bundle::AccessPurpose;
use super::config::{ConfigError, OutputConfig, OutputEntry};
use super::files::FileError;
use super::schedule::Lifetime;
use super::session::{Session, SessionError};
use crate::cloud::aws_web_identity::WebIdentityError;
use crate::cloud::gcp::GcpError;
use crate::cloud::http::{HttpClient, HttpError};
use crate::cloud::roles_anywhere::RolesAnywhereError;
use crate::cloud::sigv4_x509::SigV4X509Error;
use async_trait::async_trait;
use std::path::PathBuf;

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
    /// The output's settings cannot be used as given.
    #[error("invalid output settings: {0}")]
    Invalid(String),
    /// The CA file trusted for a cloud endpoint cannot be read.
    #[error("cannot read ca_file {path}: {source}")]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Talking to a cloud endpoint failed (connect, TLS, bounds).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// AWS STS refused AssumeRoleWithWebIdentity (the message names the fix).
    #[error(transparent)]
    WebIdentity(#[from] WebIdentityError),
    /// IAM Roles Anywhere refused CreateSession (the message names the fix).
    #[error(transparent)]
    RolesAnywhere(#[from] RolesAnywhereError),
    /// The X.509-SVID cannot sign a Roles Anywhere request.
    #[error(transparent)]
    Signing(#[from] SigV4X509Error),
    /// The GCP credential configuration is invalid.
    #[error(transparent)]
    Gcp(#[from] GcpError),
}

impl OutputError {
    /// Whether the connection should be redialled.
    pub fn is_transport(&self) -> bool {
        matches!(self, OutputError::Broker { code, .. } if matches!(code, tonic::Code::Unavailable | tonic::Code::Unknown))
    }
}

/// What [`Output::rewrite_krl`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KrlRewrite {
    /// The new list is written.
    Written,
    /// Nothing to write: the files hold this list, or a newer one.
    Unchanged,
    /// Nothing was written yet: the caller refreshes the whole output.
    Refresh,
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

    /// True if the output writes the trust bundle (`bundle.pem`): rewritten when
    /// a CA key is published or retired, not only when another key signs.
    fn carries_bundle(&self) -> bool {
        false
    }

    /// The database or kubernetes CA whose bundle the output writes, if any:
    /// the agent then follows it at each bundle poll ([`crate::bundle::AccessCa`]).
    fn access_ca(&self) -> Option<AccessPurpose> {
        None
    }

    /// Rewrites only the output's CA file with `bundle_pem` (a CA certificate
    /// was published), keeping its certificate and key. `false`: nothing was
    /// written yet, so the caller refreshes the whole output instead.
    async fn rewrite_ca(&self, _bundle_pem: &str) -> Result<bool, OutputError> {
        Ok(false)
    }

    /// True if the output writes the broker's SSH KRL (`ssh-host`): the agent
    /// then fetches it at each bundle poll and calls [`Output::rewrite_krl`]
    /// when it changes.
    fn follows_krl(&self) -> bool {
        false
    }

    /// Rewrites only the output's KRL file (a certificate was revoked),
    /// keeping its key and certificate.
    async fn rewrite_krl(&self, _krl: &crate::bundle::SshKrl) -> Result<KrlRewrite, OutputError> {
        Ok(KrlRewrite::Refresh)
    }

    /// Obtains fresh contents and writes them atomically.
    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError>;
}

/// Builds the configured outputs (owner and group names resolved now).
pub fn from_config(cfg: &[OutputEntry]) -> Result<Vec<Box<dyn Output>>, ConfigError> {
    cfg.iter()
        .enumerate()
        .map(|(i, entry)| -> Result<Box<dyn Output>, ConfigError> {
            let field = format!("outputs[{i}]");
            let a = entry.access(&field)?;
            let output: Box<dyn Output> = match &entry.output {
                OutputConfig::X509Svid(x) => Box::new(X509SvidDir::new(x.clone(), a)),
                OutputConfig::JwtSvid(j) => Box::new(JwtSvidFile::new(j.clone(), a)),
                OutputConfig::Identity(d) => Box::new(IdentityFile::new(d.path.clone(), a)),
                OutputConfig::AwsWebIdentity(x) => Box::new(AwsWebIdentity::new(x.clone(), a)),
                OutputConfig::AwsRolesAnywhere(x) => Box::new(AwsRolesAnywhere::new(x.clone(), a)),
                OutputConfig::AzureFederated(x) => Box::new(AzureFederated::new(x.clone(), a)),
                OutputConfig::GcpExternalAccount(g) => Box::new(GcpExternalAccount::new(g.clone(), a)),
                OutputConfig::Application(x) => Box::new(ApplicationDir::new(x.clone(), a)),
                OutputConfig::Database(d) => Box::new(DatabaseDir::new(d.clone(), a)),
                OutputConfig::Kubernetes(k) => Box::new(KubernetesDir::new(k.clone(), a)),
                OutputConfig::Ssh(s) => Box::new(SshDir::new(s.clone(), a)),
                OutputConfig::SshHost(s) => Box::new(SshHostDir::new(s.clone(), a)),
            };
            Ok(match &entry.reload {
                Some(r) => {
                    let reload = r.resolve().map_err(|e| ConfigError::Invalid { field: format!("{field}.reload"), message: e.to_string() })?;
                    Box::new(Reloading::new(output, reload))
                }
                None => output,
            })
        })
        .collect()
}

/// Creates the parent of a file (0700) if it does not exist yet; an existing
/// directory keeps its permissions (it may be shared) but must pass the trust
/// rules of [`sigil_core::safe_fs`].
pub(crate) fn ensure_parent(path: &std::path::Path) -> Result<(), FileError> {
    super::files::parent_dir(path, &sigil_core::safe_fs::Access::PRIVATE).map(|_| ())
}

fn broker_err(what: impl Into<String>, s: tonic::Status) -> OutputError {
    OutputError::Broker { what: what.into(), code: s.code(), message: s.message().to_string() }
}

/// The HTTPS client of the cloud outputs: web PKI roots plus `ca_file` if set.
fn http_client(ca_file: &Option<PathBuf>) -> Result<HttpClient, OutputError> {
    let extra = match ca_file {
        Some(p) => Some(sigil_core::pem::read_file(p).map_err(|source| OutputError::ReadCa { path: p.clone(), source })?),
        None => None,
    };
    Ok(HttpClient::new(extra.as_deref())?)
}
