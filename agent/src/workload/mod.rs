//! The `workload-api` service: the SPIFFE Workload API on a unix socket.

pub mod api;
pub mod attest;
pub mod cache;
pub mod conn;
pub mod deny;
pub mod h2_authority;
pub mod hpack;
pub mod jwt_svid;

use sigil_core::safe_fs::{self, trust::Kind, Access, Trust};
use std::os::unix::fs::PermissionsExt;
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
    /// The socket's directory (or one above it) is not one the agent may trust.
    #[error("cannot serve the Workload API socket: {0}")]
    Dir(#[from] safe_fs::FsError),
    /// The gRPC server failed.
    #[error("workload API server failed: {0}")]
    Serve(String),
}

/// Binds the socket: the directory is created 0755 if missing and refused if
/// another user owns or can write it (or any directory above it: that user
/// could put a listener of their own in the socket's place); the socket is bound
/// under a random temp name, made connectable by every local user (attestation,
/// not file permissions, decides what a caller gets), then renamed over the
/// path, so the name never points at anything but a live socket of the agent.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, WorkloadError> {
    let err = |source| WorkloadError::Bind { path: path.to_path_buf(), source };
    let (dir_path, name) = safe_fs::dir::split(path)?;
    let dir = safe_fs::open_dir(dir_path, &Trust::process(), Some(&Access { mode: 0o644, uid: None, gid: None }))?;
    match dir.entry_kind(name) {
        None | Some(Kind::Socket) => {}
        Some(_) => return Err(WorkloadError::NotASocket(path.to_path_buf())),
    }
    dir.remove_stale_temps(Some(name));
    let tmp = safe_fs::dir::temp_name(name)?;
    let tmp_path = dir_path.join(&tmp);
    let bound = (|| {
        let l = std::os::unix::net::UnixListener::bind(&tmp_path).map_err(err)?;
        // Accepted connections inherit SO_PASSCRED, and data sent before the accept
        // carries its writer's credentials too (see `h2_authority::CredReader`).
        // Set before the rename: no client can connect earlier.
        rustix::net::sockopt::set_socket_passcred(&l, true).map_err(|e| err(e.into()))?;
        std::fs::set_permissions(&tmp_path, std::fs::Permissions::from_mode(0o777)).map_err(err)?;
        dir.rename(&tmp, name)?;
        l.set_nonblocking(true).map_err(err)?;
        tokio::net::UnixListener::from_std(l).map_err(err)
    })();
    if bound.is_err() {
        dir.remove(&tmp);
    }
    bound
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
