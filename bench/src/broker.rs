//! A real broker process (`sigil server`) on a loopback port, started for one
//! benchmark and stopped (SIGTERM, then kill) when dropped.

use anyhow::{bail, Context, Result};
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::{Path, PathBuf};
use crate::proc::Managed;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// JWT signing algorithm of the broker under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    /// RS256 (the broker default, `sigil server --dev`).
    Rs256,
    /// ES256 (`jwt_alg: ec-p256`, via `sigil server --config`).
    Es256,
}

/// A spawned broker.
pub struct BrokerProcess {
    child: Managed,
    /// Data directory (database, admin identity, log).
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl std::fmt::Debug for BrokerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerProcess(pid={}, addr={})", self.child.pid(), self.addr)
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl BrokerProcess {
    /// Starts `sigil` as a broker and waits until it answers. `wrap` prefixes the
    /// command (e.g. `valgrind --tool=callgrind`) for profiling.
    pub async fn spawn(sigil: &Path, alg: JwtAlg, wrap: &[String], ready_timeout: Duration) -> Result<Self> {
        match alg {
            JwtAlg::Rs256 => {
                let dir = tempfile::Builder::new().prefix("sigil-bench-").tempdir()?;
                let addr = format!("127.0.0.1:{}", free_port()?);
                let data = dir.path().join("data");
                let mut args: Vec<std::ffi::OsString> = ["server", "--dev", "--trust-domain", "bench.test", "--listen", &addr, "--data-dir"].map(Into::into).to_vec();
                args.push(data.into());
                Self::launch(sigil, wrap, dir, addr, &args, ready_timeout).await
            }
            JwtAlg::Es256 => Self::spawn_config(sigil, wrap, ready_timeout, serde_json::json!({"jwt_alg": "ec-p256"})).await,
        }
    }

    /// Starts `sigil server --config` with `extra` settings (e.g. `store`,
    /// `seal_key_file`, `limits`) over the benchmark's own (trust domain
    /// `bench.test`, a free loopback port, a temp data dir, a fresh seal key
    /// unless `extra` names one).
    pub async fn spawn_config(sigil: &Path, wrap: &[String], ready_timeout: Duration, extra: serde_json::Value) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("sigil-bench-").tempdir()?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let data = dir.path().join("data");
        let seal = dir.path().join("seal.key");
        std::fs::write(&seal, hex::encode(random_bytes::<32>()?))?;
        let mut config = serde_json::json!({
            "trust_domain": "bench.test",
            "listen": addr,
            "data_dir": data,
            "seal_key_file": seal,
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let path = dir.path().join("broker.yaml");
        // JSON is YAML.
        std::fs::write(&path, config.to_string())?;
        let args: Vec<std::ffi::OsString> = vec!["server".into(), "--config".into(), path.into()];
        Self::launch(sigil, wrap, dir, addr, &args, ready_timeout).await
    }

    async fn launch(sigil: &Path, wrap: &[String], dir: tempfile::TempDir, addr: String, args: &[std::ffi::OsString], ready_timeout: Duration) -> Result<Self> {
        if !sigil.exists() {
            bail!("{} not found: build it with `cargo build --release -p sigil` (or pass --sigil)", sigil.display());
        }
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(sigil);
                c
            }
            None => Command::new(sigil),
        };
        cmd.args(args);
        let log = std::fs::File::create(dir.path().join("broker.log"))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).env("RUST_LOG", "warn");
        let child = Managed(cmd.spawn().with_context(|| format!("cannot start {}", sigil.display()))?);
        let mut b = BrokerProcess { child, dir, addr };
        b.wait_ready(ready_timeout).await?;
        Ok(b)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut last = String::from("no admin identity yet");
        while start.elapsed() < timeout {
            if let Some(status) = self.child.0.try_wait()? {
                bail!("broker exited with {status} before it was ready; log:\n{}", self.log());
            }
            if self.admin_path().exists() {
                match self.admin().await {
                    Ok(mut c) => match c.who_am_i(sigil_schemas::sigil::v1::WhoAmIRequest {}).await {
                        Ok(_) => return Ok(()),
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("broker not ready after {timeout:?} ({last}); log:\n{}", self.log())
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    fn admin_path(&self) -> PathBuf {
        self.dir.path().join("data").join("admin.identity")
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// A client authenticated as the bootstrap admin (its own connection).
    pub async fn admin(&self) -> Result<SigilClient<Channel>> {
        let id = Identity::load(&self.admin_path())?;
        Ok(sigil_schemas::client::connect_with_identity(&self.addr, &id).await?)
    }

    /// An unauthenticated client (for Join).
    pub async fn anonymous(&self) -> Result<SigilClient<Channel>> {
        let ca = std::fs::read_to_string(self.dir.path().join("data").join("tls-ca.pem"))?;
        Ok(sigil_schemas::client::connect(&self.addr, &ca, None).await?)
    }

    /// Resident set size now, kB (`VmRSS`).
    pub fn rss_kb(&self) -> Result<u64> {
        self.child.rss_kb()
    }

    /// Peak resident set size so far, kB (`VmHWM`).
    pub fn peak_rss_kb(&self) -> Result<u64> {
        self.child.peak_rss_kb()
    }
}

/// `N` random bytes from the system RNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; N];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).map_err(|_| anyhow::anyhow!("system RNG failed"))?;
    Ok(b)
}
