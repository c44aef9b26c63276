//! Reconnect storm: a broker restart in front of a fleet. N agents joined
//! before the restart; the broker stops and starts again on the same data and
//! port; at one instant every agent renews its identity over a new TLS
//! connection, retrying with the agent's own backoff and jitter until it
//! succeeds.
//!
//! The agents are simulated in this process: one `sigil_agent::session::Session`
//! each (the agent's renewal client: its state directory, its mTLS dial, its
//! `refresh`), retried with `sigil_agent::backoff` and the agent's default retry
//! bounds, as `Runtime::identity_loop` does. A real `sigil agent` process costs
//! several MB of RSS and a runtime of its own; 2,000 of them would measure the
//! machine's scheduler, not the broker. All come from 127.0.0.1: the worst
//! case for per-address limits (a fleet behind one NAT address).
//!
//! The storm runs twice in one run against the same binary: the broker with
//! the connection limits it had before (listen backlog 128, 256 connections
//! per address, refused beyond) and with today's defaults.

use crate::proc::{proc_status_kb, Managed};
use crate::report::{mb, ms, Row, Status};
use anyhow::{bail, Context, Result};
use sigil_agent::backoff::{random_jitter, Backoff};
use sigil_agent::join::TokenJoin;
use sigil_agent::session::{Session, SessionConfig};
use sigil_agent::state::StateDir;
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1 as pb;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a storm may take before the agents still renewing are reported as failed.
const STORM_DEADLINE: Duration = Duration::from_secs(300);

/// The broker's connection limits for one storm.
#[derive(Debug, Clone, Copy)]
struct Limits {
    name: &'static str,
    /// `limits.connections` YAML (flow style), empty for the defaults.
    yaml: &'static str,
}

const BEFORE: Limits = Limits {
    name: "before (backlog 128, 256 conns/address)",
    yaml: "{listen_backlog: 128, max_connections_per_peer: 256, max_anonymous_per_peer: 256}",
};
const AFTER: Limits = Limits { name: "after (defaults)", yaml: "" };
/// The defaults without the per-address handshake queue: what the queue costs.
const UNQUEUED: Limits = Limits { name: "after, no handshake queue", yaml: "{max_anonymous_per_peer: 5000}" };

/// A broker on a fixed port and data directory that can be restarted.
struct Broker {
    sigil: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Managed>,
}

impl Broker {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn start(&mut self, limits: Limits) -> Result<()> {
        let seal = self.dir.join("seal.key");
        if !seal.exists() {
            std::fs::write(&seal, hex::encode(crate::broker::random_bytes::<32>()?))?;
        }
        let conns = if limits.yaml.is_empty() { String::new() } else { format!("limits:\n  connections: {}\n", limits.yaml) };
        let cfg = self.dir.join("broker.yaml");
        std::fs::write(
            &cfg,
            format!(
                "trust_domain: bench.test\nlisten: {}\ndata_dir: {}\nseal_key_file: {}\nadmin_identity_ttl: 86400\n{conns}",
                self.addr(),
                self.data().display(),
                seal.display()
            ),
        )?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("broker.log"))?;
        let mut cmd = Command::new(&self.sigil);
        cmd.arg("server").arg("--config").arg(&cfg);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).env("SIGIL_LOG", "warn,sigil_core::listen=debug,sigil_broker::server=debug");
        self.child = Some(Managed(cmd.spawn().with_context(|| format!("cannot start {}", self.sigil.display()))?));
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Managed::pid).unwrap_or(0)
    }

    /// Stops the broker (SIGTERM, then kill) and waits for it to exit.
    fn stop(&mut self) {
        self.child = None;
    }

    async fn admin(&self) -> Result<sigil_schemas::sigil::v1::sigil_client::SigilClient<tonic::transport::Channel>> {
        let id = Identity::load(&self.data().join("admin.identity"))?;
        Ok(sigil_schemas::client::connect_with_identity(&self.addr(), &id).await?)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.as_mut().map(|c| c.0.try_wait()).transpose()?.flatten() {
                let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
                bail!("broker exited with {status} before it was ready; log:\n{log}");
            }
            if self.data().join("admin.identity").exists() {
                match self.admin().await {
                    Ok(mut c) => match c.who_am_i(pb::WhoAmIRequest {}).await {
                        Ok(_) => return Ok(()),
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("broker not ready after 60 s ({last})")
    }

    /// Bytes of log so far.
    fn log_len(&self) -> usize {
        std::fs::metadata(self.dir.join("broker.log")).map(|m| m.len() as usize).unwrap_or(0)
    }

    /// Log lines after byte `from` of connections the broker refused at accept, by reason.
    fn refusals(&self, from: usize) -> BTreeMap<String, usize> {
        let log = std::fs::read(self.dir.join("broker.log")).unwrap_or_default();
        let log = String::from_utf8_lossy(log.get(from..).unwrap_or_default());
        let mut out = BTreeMap::new();
        for l in log.lines().filter(|l| l.contains("connection refused")) {
            let why = l.split("why=").nth(1).unwrap_or("?").trim().to_string();
            *out.entry(why).or_insert(0) += 1;
        }
        out
    }
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// `TcpExtListenOverflows` of this network namespace (every listener on it).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == "ListenOverflows").and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// Creates the role, bot and a join token for `n` agents; returns the token file.
async fn provision(b: &Broker, n: usize) -> Result<PathBuf> {
    let mut admin = b.admin().await?;
    admin
        .create_role(pb::Role {
            name: "fleet".into(),
            allow: Some(pb::RoleAllow { spiffe_ids: vec!["/fleet/**".into()], ..Default::default() }),
            ..Default::default()
        })
        .await?;
    admin.create_bot(pb::Bot { name: "fleet".into(), roles: vec!["fleet".into()], ..Default::default() }).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let t = admin
        .create_join_token(pb::JoinToken {
            name: "fleet".into(),
            bot: "fleet".into(),
            method: "token".into(),
            expires_at: now + 3600,
            max_uses: n as i64 + 10,
            ..Default::default()
        })
        .await?
        .into_inner();
    let file = b.dir.join("token");
    std::fs::write(&file, t.secret)?;
    Ok(file)
}

/// `n` agents, each joined once (with at most 16 joins in flight), their state
/// directories under `root`.
async fn fleet(b: &Broker, token: &Path, n: usize, root: &Path) -> Result<Vec<Arc<Session>>> {
    let ca = std::fs::read_to_string(b.data().join("tls-ca.pem"))?;
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for i in chunk {
            let s = Arc::new(Session::new(SessionConfig {
                addr: b.addr(),
                ca_pem: ca.clone(),
                join: Box::new(TokenJoin::new(None, Some(token.to_path_buf()))),
                ttl_seconds: 3600,
                state: StateDir::open(&root.join(i.to_string()))?,
                clock: Arc::new(sigil_core::clock::SystemClock),
                timeouts: Default::default(),
            }));
            set.spawn(async move { s.join().await.map(|()| s) });
        }
        while let Some(r) = set.join_next().await {
            out.push(r?.context("agent join before the storm")?);
        }
    }
    Ok(out)
}

/// What one storm measured.
#[derive(Debug, Default)]
struct Outcome {
    /// Seconds from the release to each agent's success.
    done: Vec<f64>,
    /// Agents that had not succeeded by the deadline.
    unfinished: usize,
    /// Failed attempts, by error (addresses and ports masked).
    failures: BTreeMap<String, usize>,
    /// Agents that needed at least one retry.
    retried: usize,
    peak_rss_kb: u64,
    peak_fds: usize,
    /// CPU seconds (user + system) the broker used from release to the end.
    broker_cpu: f64,
    /// The same for the simulated agents (this process).
    agents_cpu: f64,
    overflows: u64,
    refusals: BTreeMap<String, usize>,
}

/// A short class for an error message: the port masked, at most 160 characters.
fn class(e: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in e.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        out.push_str(if digits.len() >= 4 { "PORT" } else { &digits });
        digits.clear();
        out.push(c);
    }
    out.trim_end().chars().take(160).collect()
}

/// Worker threads of the agents' runtime. Each agent writes its renewed
/// identity to its state directory (write, fsync, rename) on its async worker,
/// as the agent does; in one process with one worker those writes would queue
/// behind each other, which 2,000 separate agent processes do not do.
const AGENT_THREADS: usize = 64;

/// Restarts the broker with `limits`, then releases every agent at once.
async fn storm(b: &mut Broker, limits: Limits, agents: &[Arc<Session>], rt: &tokio::runtime::Handle) -> Result<Outcome> {
    b.stop();
    let log_from = b.log_len();
    b.start(limits)?;
    b.wait_ready().await?;
    let pid = b.pid();
    let overflows_before = listen_overflows();
    let stop = Arc::new(AtomicBool::new(false));
    let peak_fds = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak_fds.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(fds(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let failures = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut set = tokio::task::JoinSet::new();
    for s in agents {
        let (s, failures, mut go) = (s.clone(), failures.clone(), go_rx.clone());
        set.spawn_on(async move {
            let _ = go.wait_for(|g| *g).await;
            let start = Instant::now();
            // The agent's identity loop: refresh, else back off with jitter.
            let d = sigil_agent::config::RetryConfig::default();
            let mut backoff = Backoff::new(d.initial.0, d.max.0);
            loop {
                match s.refresh().await {
                    Ok(()) => return (start.elapsed().as_secs_f64(), backoff.attempts()),
                    Err(e) => {
                        *failures.lock().unwrap_or_else(|p| p.into_inner()).entry(class(&e.to_string())).or_insert(0) += 1;
                        tokio::time::sleep(backoff.next_delay(random_jitter())).await;
                    }
                }
            }
        }, rt);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (broker_cpu, own_cpu) = (crate::proc::cpu_seconds(pid)?, crate::proc::cpu_seconds(std::process::id())?);
    let released = Instant::now();
    let _ = go_tx.send(true);
    let mut out = Outcome::default();
    while let Ok(Some(r)) = tokio::time::timeout(STORM_DEADLINE.saturating_sub(released.elapsed()), set.join_next()).await {
        let (secs, retries) = r?;
        out.done.push(secs);
        out.retried += usize::from(retries > 0);
    }
    out.unfinished = agents.len() - out.done.len();
    let (after_b, after_own) = (crate::proc::cpu_seconds(pid)?, crate::proc::cpu_seconds(std::process::id())?);
    out.broker_cpu = (after_b.0 - broker_cpu.0) + (after_b.1 - broker_cpu.1);
    out.agents_cpu = (after_own.0 - own_cpu.0) + (after_own.1 - own_cpu.1);
    set.abort_all();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    out.peak_fds = peak_fds.load(Ordering::SeqCst);
    out.peak_rss_kb = proc_status_kb(pid, "VmHWM:")?;
    out.overflows = listen_overflows().saturating_sub(overflows_before);
    out.failures = std::mem::take(&mut *failures.lock().unwrap_or_else(|p| p.into_inner()));
    out.refusals = b.refusals(log_from);
    Ok(out)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn rows_of(limits: Limits, n: usize, o: &Outcome, rows: &mut Vec<Row>) {
    let mut d = o.done.clone();
    d.sort_by(f64::total_cmp);
    let failed: usize = o.failures.values().sum();
    let all = if o.unfinished == 0 { format!("{:.2} s", quantile(&d, 1.0)) } else { format!("{} of {n} not done after {} s", o.unfinished, STORM_DEADLINE.as_secs()) };
    rows.push(Row {
        figure: format!("storm {}: {n} agents renew at once: time until all succeed (p50 / p99 per agent)", limits.name),
        value: format!("{all} ({} / {})", ms(quantile(&d, 0.5) * 1e3), ms(quantile(&d, 0.99) * 1e3)),
        reference: "-".into(),
        ratio: "-".into(),
        target: "all succeed".into(),
        status: Status::of(o.unfinished == 0),
    });
    rows.push(Row::info(
        format!("storm {}: failed attempts seen by agents (agents that retried)", limits.name),
        format!("{failed} ({})", o.retried),
    ));
    rows.push(Row::info(
        format!("storm {}: broker peak RSS / peak open fds / kernel listen overflows", limits.name),
        format!("{} / {} / {}", mb(o.peak_rss_kb), o.peak_fds, o.overflows),
    ));
    rows.push(Row::info(
        format!("storm {}: CPU used during the storm: broker / agents (per renewal)", limits.name),
        format!("{:.1} s / {:.1} s ({:.2} ms / {:.2} ms)", o.broker_cpu, o.agents_cpu, o.broker_cpu * 1e3 / n as f64, o.agents_cpu * 1e3 / n as f64),
    ));
    for (why, count) in &o.failures {
        println!("  storm {}: {count} x {why}", limits.name);
    }
    for (why, count) in &o.refusals {
        println!("  storm {}: broker refused {count} connection(s) at accept: {why}", limits.name);
    }
}

/// Runs both storms with `n` agents; the broker is `sigil`.
pub async fn run(sigil: &Path, n: usize, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<()> {
    // One socket per agent here and in the broker, plus the state files.
    let nofile = sigil_core::listen::limits::raise_fd_limit();
    if nofile.is_some_and(|l| (l as usize) < n + 256) {
        bail!("open files limit {nofile:?} is below {} for {n} agents: raise it (ulimit -n {})", n + 256, 2 * n + 512);
    }
    let dir = tempfile::Builder::new().prefix("sigil-storm-").tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut b = Broker { sigil: sigil.to_path_buf(), dir: dir.path().to_path_buf(), port, child: None };
    b.start(AFTER)?;
    b.wait_ready().await?;
    let token = provision(&b, n).await?;
    let t = Instant::now();
    // Each agent fsyncs its renewed identity; 2,000 agents sharing this
    // machine's one disk would measure that disk, not the broker: their state
    // directories are on tmpfs when there is one.
    let root = tempfile::Builder::new().prefix("sigil-storm-agents-").tempdir_in("/dev/shm").or_else(|_| tempfile::Builder::new().prefix("sigil-storm-agents-").tempdir())?;
    let agents = fleet(&b, &token, n, root.path()).await?;
    println!(
        "storm: {n} agents joined in {:.1} s (state directories in {}); restarting the broker for each storm",
        t.elapsed().as_secs_f64(),
        root.path().display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(AGENT_THREADS).enable_all().build()?;
    for limits in [BEFORE, AFTER, UNQUEUED] {
        let o = storm(&mut b, limits, &agents, rt.handle()).await?;
        if o.unfinished > 0 && limits.yaml.is_empty() {
            failures.push(format!("storm {}: {} of {n} agents did not renew within {} s", limits.name, o.unfinished, STORM_DEADLINE.as_secs()));
        }
        rows_of(limits, n, &o, rows);
    }
    b.stop();
    rt.shutdown_background();
    Ok(())
}
