//! Running as a go-plugin plugin: handshake, AutoMTLS, unix socket, and the
//! go-plugin side services. Knows nothing of Terraform's own protocol: the
//! caller hands in its gRPC routes.

pub mod handshake;
pub mod services;
pub mod tls;

use services::{Broker, Controller, ShutdownSignal, Stdio};
use sigil_schemas::go_plugin::{
    grpc_broker_server::GrpcBrokerServer, grpc_controller_server::GrpcControllerServer,
    grpc_stdio_server::GrpcStdioServer,
};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::UnixListener;
use tonic::service::Routes;

/// Largest gRPC message accepted or sent, as go-plugin's own servers allow.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Why the plugin could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The handshake was refused.
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    /// AutoMTLS set-up failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The socket could not be created or the handshake line written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// What the host tells us through the environment.
#[derive(Clone, Debug, Default)]
pub struct PluginEnv {
    /// `TF_PLUGIN_MAGIC_COOKIE`.
    pub magic_cookie: Option<String>,
    /// `PLUGIN_PROTOCOL_VERSIONS`.
    pub protocol_versions: Option<String>,
    /// `PLUGIN_CLIENT_CERT` (AutoMTLS).
    pub client_cert: Option<String>,
    /// `PLUGIN_UNIX_SOCKET_DIR`.
    pub socket_dir: Option<PathBuf>,
}

impl PluginEnv {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            magic_cookie: var(handshake::MAGIC_COOKIE_KEY),
            protocol_versions: var("PLUGIN_PROTOCOL_VERSIONS"),
            client_cert: var("PLUGIN_CLIENT_CERT"),
            socket_dir: var("PLUGIN_UNIX_SOCKET_DIR").map(PathBuf::from),
        }
    }
}

/// Checks the handshake environment and picks the protocol version, before any
/// expensive set-up; the caller then builds routes for that version.
pub fn negotiate(env: &PluginEnv, supported: &[u32]) -> Result<u32, PluginError> {
    handshake::check_cookie(env.magic_cookie.as_deref())?;
    Ok(handshake::negotiate(env.protocol_versions.as_deref(), supported)?)
}

fn socket_path(dir: Option<&PathBuf>) -> PathBuf {
    let dir = dir.cloned().unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!("plugin-sigil-{}-{nanos}", std::process::id()))
}

/// Removes the socket file when serving ends, however it ends.
struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves `routes` plus the go-plugin services for protocol `version` until the
/// host calls `Shutdown` (or `shutdown` is raised otherwise).
pub async fn serve(env: &PluginEnv, version: u32, routes: Routes, shutdown: ShutdownSignal) -> Result<(), PluginError> {
    let mtls = env.client_cert.as_deref().map(tls::auto_mtls).transpose()?;
    let path = socket_path(env.socket_dir.as_ref());
    let listener = UnixListener::bind(&path).map_err(|source| PluginError::Io {
        context: format!("cannot listen on {}", path.display()),
        source,
    })?;
    let _guard = SocketGuard(path.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("plugin", tonic_health::ServingStatus::Serving).await;
    let routes = routes
        .add_service(health_service)
        .add_service(GrpcControllerServer::new(Controller { shutdown: shutdown.clone() }))
        .add_service(GrpcStdioServer::new(Stdio { shutdown: shutdown.clone() }))
        .add_service(GrpcBrokerServer::new(Broker { shutdown: shutdown.clone() }));

    let line = handshake::handshake_line(
        version,
        "unix",
        &path.display().to_string(),
        mtls.as_ref().map(|m| m.cert_der.as_slice()),
    );
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|source| PluginError::Io { context: "cannot write the handshake line".into(), source })?;
    drop(stdout);

    let stop = {
        let shutdown = shutdown.clone();
        async move { shutdown.raised().await }
    };
    let server = tonic::transport::Server::builder().add_routes(routes);
    let serving = async {
        match mtls {
            Some(m) => server.serve_with_incoming_shutdown(tls_incoming(listener, m.config), stop).await,
            None => {
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                server.serve_with_incoming_shutdown(incoming, stop).await
            }
        }
    };
    tokio::pin!(serving);
    // After Shutdown, give open streams a moment to drain, then go: the host
    // kills plugins that linger anyway.
    tokio::select! {
        res = &mut serving => res?,
        () = async { shutdown.raised().await; tokio::time::sleep(Duration::from_secs(2)).await } => {}
    }
    Ok(())
}

type TlsConn = tokio_rustls::server::TlsStream<tokio::net::UnixStream>;

/// Accepts connections and completes TLS handshakes off the accept loop, so a
/// stalled client cannot block others.
fn tls_incoming(
    listener: UnixListener,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> impl futures::Stream<Item = Result<TlsConn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<TlsConn, std::io::Error>>(16);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (sock, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let conn_tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(sock).await {
                    Ok(conn) => {
                        let _ = conn_tx.send(Ok(conn)).await;
                    }
                    Err(e) => tracing::debug!("plugin TLS handshake failed: {e}"),
                }
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
