//! Test harness shared by the integration tests: a dev-mode broker in process.
#![allow(dead_code, clippy::unwrap_used)]

use sigil_core::csr::key_and_csr;
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::PathBuf;
use tonic::transport::Channel;

pub struct Broker {
    pub addr: String,
    /// The operator listener (`/metrics`, `/readyz`), plain HTTP.
    pub metrics_addr: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Broker {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_on(dir, sigil_broker::config::StoreSetting::default()).await
    }

    /// A broker whose store is `store` (e.g. a PostgreSQL URL).
    pub async fn start_on(dir: tempfile::TempDir, store: sigil_broker::config::StoreSetting) -> Self {
        Self::start_configured(dir, |cfg| cfg.store = store).await
    }

    /// A broker whose dev configuration `configure` changes first.
    pub async fn start_configured(dir: tempfile::TempDir, configure: impl FnOnce(&mut sigil_broker::config::ServerConfig)) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut cfg = sigil_broker::config::ServerConfig::dev(dir.path().to_path_buf(), "127.0.0.1:0".into(), None, "example.org".into());
        configure(&mut cfg);
        // Every refused join is audited here: the tests read each refusal's
        // reason from the audit log (callers only get the generic refusal),
        // and all their calls come from 127.0.0.1. The rate limit itself is
        // tested with its defaults (audit::throttle, test_dos_limits.py).
        cfg.limits.audit_refusals.per_peer_burst = 100_000;
        cfg.limits.audit_refusals.global_burst = 100_000;
        let p = sigil_broker::bootstrap::prepare(&cfg, true).await.unwrap();
        let addr = p.addr.to_string();
        let ops = sigil_broker::server::ops::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = ops.local_addr().unwrap().to_string();
        let ops_task = sigil_broker::server::ops::spawn(ops, &p.broker);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            sigil_broker::server::serve(p.listener, p.broker, p.tls, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
            ops_task.abort();
        });
        Broker { addr, metrics_addr, dir, stop: Some(tx), task: Some(task) }
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        // Give the blocking store threads a moment to drop the database handle.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// GET `path` on the operator listener: (status, body).
    pub async fn ops_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.metrics_addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    pub async fn admin(&self) -> SigilClient<Channel> {
        let id = Identity::load(&self.path("admin.identity")).unwrap();
        sigil_schemas::client::connect_with_identity(&self.addr, &id).await.unwrap()
    }

    pub async fn anonymous(&self) -> SigilClient<Channel> {
        let ca = std::fs::read_to_string(self.path("tls-ca.pem")).unwrap();
        sigil_schemas::client::connect(&self.addr, &ca, None).await.unwrap()
    }

    /// Joins with `secret` and returns a client authenticated as the bot.
    pub async fn join_as(&self, secret: &str) -> Result<SigilClient<Channel>, tonic::Status> {
        let (kp, csr) = key_and_csr().unwrap();
        let r = self
            .anonymous()
            .await
            .join(pb::JoinRequest { method: "token".into(), token: secret.into(), csr, ..Default::default() })
            .await?
            .into_inner();
        let id = Identity::new(r.certificate_pem, kp.serialize_pem(), r.ca_pem);
        Ok(sigil_schemas::client::connect_with_identity(&self.addr, &id).await.unwrap())
    }
}

/// Two replicas on one fresh PostgreSQL database (a throwaway cluster on
/// loopback, `sigil_broker::store::pg_harness`): B shares A's seal key and has
/// its own data directory; `configure` changes both configurations.
/// Returns A, B and the database URL.
pub async fn replicas_on_postgres(configure: impl Fn(&mut sigil_broker::config::ServerConfig)) -> (Broker, Broker, String) {
    use sigil_broker::config::{PostgresUrlOrName, StoreSetting};
    let url = sigil_broker::store::pg_harness::shared().fresh_database().await;
    let store = || StoreSetting::Url(PostgresUrlOrName(url.clone()));
    let a = Broker::start_configured(tempfile::tempdir().unwrap(), |cfg| {
        cfg.store = store();
        configure(cfg);
    })
    .await;
    let seal = a.path("seal.key");
    let b = Broker::start_configured(tempfile::tempdir().unwrap(), |cfg| {
        cfg.store = store();
        cfg.seal_key_file = Some(seal);
        configure(cfg);
    })
    .await;
    (a, b, url)
}

/// Replaces the first occurrence of `from` (here: the CSR's public key) by `to`.
pub fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = haystack.windows(from.len()).position(|w| w == from).expect("public key inside CSR");
    let mut out = haystack.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}


/// The reason the broker audited for the last refused `Join` or `BeginJoin`:
/// callers only ever get the one generic refusal, the audit log says why.
pub async fn last_join_denial(admin: &mut SigilClient<Channel>) -> String {
    let mut after_id = 0;
    let mut last = None;
    loop {
        let items = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id }).await.unwrap().into_inner().items;
        let Some(end) = items.last() else { break };
        after_id = end.id;
        if let Some(e) = items.iter().rev().find(|e| (e.kind == "join" || e.kind == "join.begin") && e.outcome == "denied") {
            last = Some(e.detail_json.clone());
        }
    }
    let detail: serde_json::Value = serde_json::from_str(&last.expect("a refused join is audited")).unwrap();
    detail["reason"].as_str().unwrap_or_default().to_string()
}

/// Asserts `s` is the generic join refusal: the same code and words whatever
/// the reason, so a caller learns nothing about the token.
pub fn assert_refused(s: &tonic::Status) {
    assert_eq!((s.code(), s.message()), (tonic::Code::PermissionDenied, sigil_broker::join::REFUSED), "{s:?}");
}

/// A SPIFFE Workload API client over the agent's unix socket at `path`.
pub async fn workload_client(path: &std::path::Path) -> sigil_schemas::spiffe_workload::spiffe_workload_api_client::SpiffeWorkloadApiClient<Channel> {
    let path = path.to_path_buf();
    let ch = tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
        }))
        .await
        .unwrap();
    sigil_schemas::spiffe_workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(ch)
}

/// GET `path` over HTTPS on the broker's public listener: (status, content type, body).
pub async fn https_get(b: &Broker, path: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read_to_string(b.path("tls-ca.pem")).unwrap();
    for der in sigil_core::pem::certificate_ders(&ca, "test").unwrap() {
        roots.add(rustls_pki_types::CertificateDer::from(der)).unwrap();
    }
    let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.unwrap();
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..at]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
        .unwrap_or_default();
    let mut body = raw[at + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, ctype, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}
