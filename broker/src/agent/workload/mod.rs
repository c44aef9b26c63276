//! The `workload-api` service: the SPIFFE Workload API on a unix socket.

pub mod api;
pub mod attest;
pub mod cache;
pub mod conn;
pub mod h2_authority;
pub mod hpack;

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// Preparing or binding the socket failed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Something other than a socket is in the way.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The gRPC server failed.
    #[error("workload API server failed: {0}")]
    Serve(String),
}

/// Binds the socket: the directory is created 0755 if missing, a stale socket
/// is replaced, and the socket is made connectable by every local user, because
/// attestation, not file permissions, decides what a caller gets.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, WorkloadError> {
    let err = |source| WorkloadError::Bind { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => return Err(WorkloadError::NotASocket(path.to_path_buf())),
        Err(_) => {}
    }
    let l = tokio::net::UnixListener::bind(path).map_err(err)?;
    // Accepted connections inherit SO_PASSCRED, and data sent before the accept
    // carries its writer's credentials too (see `h2_authority::CredReader`).
    rustix::net::sockopt::set_socket_passcred(&l, true).map_err(|e| err(e.into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(err)?;
    Ok(l)
}

/// Largest request message (requests are a few audiences or one JWT).
pub const MAX_REQUEST_MESSAGE: usize = 64 * 1024;

/// Serves the Workload API on `listener` until `shutdown` resolves. `nofile` is
/// the soft open-file limit in force (connections stay [`conn::RESERVED_FDS`] below it).
pub async fn serve(
    listener: tokio::net::UnixListener,
    svc: api::Service,
    limits: conn::Limits,
    nofile: Option<u64>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), WorkloadError> {
    let incoming = h2_authority::incoming(listener, limits, nofile);
    let api = sigil_schemas::spiffe_workload::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(svc)
        .max_decoding_message_size(MAX_REQUEST_MESSAGE);
    tonic::transport::Server::builder()
        // tonic's default (None) lifts h2's stream limit altogether.
        .max_concurrent_streams(limits.max_streams_per_connection)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(256 * 1024)
        .add_service(api)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| WorkloadError::Serve(e.to_string()))
}
