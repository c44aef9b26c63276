//! The agent's SPIFFE Workload API: FetchX509SVID and FetchJWTSVID served from
//! the agent's cache over its unix socket, beside the broker issuance they save
//! (measured in the same run); and the agent's resident set. The agent measured
//! is `sigil-agent` (the agent alone, next to the `sigil` binary), with the same
//! agent run as `sigil agent` (the full binary) as the reference.

use crate::broker::BrokerProcess;
use crate::fixture::{self, Token};
use crate::load;
use crate::opts::Opts;
use crate::proc::Managed;
use crate::report::{mb, ms, rate, times, Row, Status};
use crate::stats::Sample;
use anyhow::{bail, Context, Result};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use sigil_schemas::spiffe_workload as wl;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

type WlClient = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient<Channel>;

/// Workload identity the agent serves (SPIFFE ID from the caller's uid).
const WI: &str = "bench-uid";
const JWT_AUDIENCE: &str = fixture::AUDIENCE;

/// Creates the workload identity, allowed for this process's uid.
async fn provision(b: &BrokerProcess) -> Result<String> {
    let uid = std::fs::metadata("/proc/self")?.uid().to_string();
    b.admin()
        .await?
        .create_workload_identity(pb::WorkloadIdentity {
            name: WI.into(),
            spiffe_id: "/bench/uid-{{workload.unix.uid}}".into(),
            allow: vec![pb::Condition { attribute: "workload.unix.uid".into(), values: vec![uid.clone()] }],
            ..Default::default()
        })
        .await
        .context("create workload identity")?;
    Ok(format!("spiffe://bench.test/bench/uid-{uid}"))
}

/// How the agent is started: `sigil-agent ARGS` or `sigil agent ARGS`.
struct AgentCommand {
    program: PathBuf,
    subcommand: Option<&'static str>,
}

impl AgentCommand {
    /// `sigil-agent`, next to the `sigil` binary (built with it: `cargo build -p sigil`).
    fn slim(sigil: &Path) -> Result<Self> {
        let program = sigil.with_file_name("sigil-agent");
        if !program.exists() {
            bail!("{} missing: build it with `cargo build -p sigil` (it is built beside {})", program.display(), sigil.display());
        }
        Ok(AgentCommand { program, subcommand: None })
    }

    /// `sigil agent`: the same agent in the full binary.
    fn full(sigil: &Path) -> Self {
        AgentCommand { program: sigil.to_path_buf(), subcommand: Some("agent") }
    }

    fn name(&self) -> String {
        let bin = self.program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match self.subcommand {
            Some(sub) => format!("{bin} {sub}"),
            None => bin,
        }
    }
}

/// An agent serving the Workload API on a socket in `dir`.
struct AgentProcess {
    child: Managed,
    socket: PathBuf,
}

/// An agent's resident set once joined with its SVIDs cached, kB.
struct IdleRss {
    total: u64,
    anon: u64,
    file: u64,
}

impl AgentProcess {
    async fn spawn(cmd: &AgentCommand, b: &BrokerProcess, token: &Token, dir: &Path) -> Result<Self> {
        let socket = dir.join("run").join("agent.sock");
        let config = dir.join("agent.yaml");
        let text = serde_json::json!({
            "broker": b.addr,
            "ca_file": b.dir.path().join("data").join("tls-ca.pem"),
            "state_dir": dir.join("state"),
            "join": {"method": "token"},
            "services": [{
                "type": "workload-api",
                "socket": socket,
                "workload_identities": [WI],
                "x509_ttl": "1h",
                "jwt_ttl": "5m",
            }],
        });
        std::fs::write(&config, text.to_string())?;
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(&cmd.program)
            .args(cmd.subcommand)
            .arg("--config")
            .arg(&config)
            .env("SIGIL_TOKEN", token.secret())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", cmd.name()))?;
        let mut a = AgentProcess { child: Managed(child), socket };
        let start = Instant::now();
        while !a.socket.exists() {
            if let Some(st) = a.child.0.try_wait()? {
                bail!("agent exited with {st}; log:\n{}", std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("agent socket {} not there after 30 s", a.socket.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(a)
    }

    async fn client(&self) -> Result<WlClient> {
        let path = self.socket.clone();
        let ch = Endpoint::try_from("http://localhost")?
            .connect_with_connector(tower::service_fn(move |_| {
                let p = path.clone();
                async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
            }))
            .await?;
        Ok(WlClient::new(ch))
    }

    /// Waits until the agent serves `want` (it has joined), fetches a JWT-SVID
    /// too (both caches filled), lets it settle and reads its resident set.
    async fn settle(&self, c: &WlClient, want: &str) -> Result<IdleRss> {
        // The socket is served before the agent has joined: retry until it has.
        let start = Instant::now();
        let got = loop {
            match fetch_x509(c.clone()).await {
                Ok(id) => break id,
                Err(e) if start.elapsed() < Duration::from_secs(30) && e.contains("nothing cached") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("first FetchX509SVID: {e}"),
            }
        };
        if got != want {
            bail!("Workload API gave {got}, expected {want}");
        }
        fetch_jwt(c.clone()).await.map_err(anyhow::Error::msg).context("first FetchJWTSVID")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // What the resident set is made of: the agent's own (anonymous) memory and
        // file-backed pages, mostly the binary's code, shared with any other
        // process running the same binary.
        let pid = self.child.pid();
        Ok(IdleRss {
            total: self.child.rss_kb()?,
            anon: crate::proc::proc_status_kb(pid, "RssAnon:")?,
            file: crate::proc::proc_status_kb(pid, "RssFile:")?,
        })
    }
}

/// Idle resident set of the same agent run as `cmd` (the reference figure).
async fn idle_rss_of(cmd: &AgentCommand, b: &BrokerProcess, token: &Token, want: &str) -> Result<IdleRss> {
    let dir = tempfile::Builder::new().prefix("sigil-bench-agent-").tempdir()?;
    let agent = AgentProcess::spawn(cmd, b, token, dir.path()).await?;
    let c = agent.client().await?;
    agent.settle(&c, want).await.with_context(|| cmd.name())
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("workload.spiffe.io", tonic::metadata::MetadataValue::from_static("true"));
    r
}

async fn fetch_x509(mut c: WlClient) -> Result<String, String> {
    let mut s = c.fetch_x509svid(with_header(wl::X509svidRequest {})).await.map_err(|e| e.to_string())?.into_inner();
    let m = s.message().await.map_err(|e| e.to_string())?.ok_or("stream ended without SVIDs")?;
    m.svids.first().map(|s| s.spiffe_id.clone()).ok_or_else(|| "no SVID in the response".to_string())
}

async fn fetch_jwt(mut c: WlClient) -> Result<String, String> {
    let r = c
        .fetch_jwtsvid(with_header(wl::JwtsvidRequest { audience: vec![JWT_AUDIENCE.into()], spiffe_id: String::new() }))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    r.svids.first().map(|s| s.spiffe_id.clone()).ok_or_else(|| "no JWT-SVID in the response".to_string())
}

/// Sequential latency series of `op` on one connection.
async fn series<F, Fut>(c: &WlClient, n: u64, budget: Duration, op: F) -> Sample
where
    F: Fn(WlClient) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let start = Instant::now();
    let mut s = Sample::with_capacity(n as usize);
    for _ in 0..n {
        if start.elapsed() > budget {
            break;
        }
        let t = Instant::now();
        match op(c.clone()).await {
            Ok(_) => s.ok(t.elapsed()),
            Err(e) => s.err(e),
        }
    }
    s.finish(start.elapsed())
}

/// Broker issuance latency for the same workload identity (what a cache miss costs).
async fn broker_series(bot: &SigilClient<Channel>, n: u64, budget: Duration, jwt: bool) -> Result<Sample> {
    let csr = crate::raw::csr_pool(1)?.remove(0);
    let uid = std::fs::metadata("/proc/self")?.uid().to_string();
    let attrs: std::collections::HashMap<String, String> = [("workload.unix.uid".to_string(), uid)].into();
    let start = Instant::now();
    let mut s = Sample::with_capacity(n as usize);
    for _ in 0..n {
        if start.elapsed() > budget {
            break;
        }
        let mut c = bot.clone();
        let t = Instant::now();
        let r = if jwt {
            c.issue_jwt_svid(pb::IssueJwtSvidRequest {
                workload_identity: WI.into(),
                workload_attributes: attrs.clone(),
                audiences: vec![JWT_AUDIENCE.into()],
                ..Default::default()
            })
            .await
            .map(|_| ())
        } else {
            c.issue_x509_svid(pb::IssueX509SvidRequest { csr: csr.clone(), workload_identity: WI.into(), workload_attributes: attrs.clone(), ..Default::default() })
                .await
                .map(|_| ())
        };
        match r {
            Ok(()) => s.ok(t.elapsed()),
            Err(e) => s.err(e),
        }
    }
    Ok(s.finish(start.elapsed()))
}

/// Runs the Workload API benchmarks against a fresh agent joined to `b`.
pub async fn run(sigil: &Path, b: &BrokerProcess, token: &Token, bot: &SigilClient<Channel>, o: &Opts, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<()> {
    let want = provision(b).await?;
    let slim = AgentCommand::slim(sigil)?;
    let dir = tempfile::Builder::new().prefix("sigil-bench-agent-").tempdir()?;
    let agent = AgentProcess::spawn(&slim, b, token, dir.path()).await?;
    let c = agent.client().await?;
    // First calls fill the cache from the broker (and prove the SVID is ours).
    let idle = agent.settle(&c, &want).await?;
    let idle_kb = idle.total;

    let n = o.joins * 4;
    let budget = o.phase.duration;
    let x509 = series(&c, n, budget, fetch_x509).await;
    let jwt = series(&c, n, budget, fetch_jwt).await;
    let clients = {
        let mut v = Vec::with_capacity(o.clients);
        for _ in 0..o.clients {
            v.push(agent.client().await?);
        }
        v
    };
    let busy = load::closed_loop(clients, o.phase, |c: WlClient, _| async move { fetch_jwt(c).await.map(|_| ()) }).await;
    let peak_kb = agent.child.peak_rss_kb()?;
    let bx = broker_series(bot, n / 4, budget, false).await?;
    let bj = broker_series(bot, n / 4, budget, true).await?;
    drop(agent);
    // The reference: the same agent run from the full `sigil` binary.
    let full = AgentCommand::full(sigil);
    let full_idle = idle_rss_of(&full, b, token, &want).await?;

    for (name, s) in [("FetchX509SVID", &x509), ("FetchJWTSVID", &jwt), ("FetchJWTSVID concurrent", &busy), ("broker X.509", &bx), ("broker JWT", &bj)] {
        if s.errors > 0 || s.count() == 0 {
            failures.push(format!("Workload API {name}: {} failed, first: {}", s.errors, s.first_error.clone().unwrap_or_default()));
        }
    }
    rows.push(Row {
        figure: format!("Workload API FetchX509SVID from cache (p50 / p99, n={})", x509.count()),
        value: format!("{} / {}", ms(x509.p50_ms()), ms(x509.p99_ms())),
        reference: format!("broker IssueX509SVID p50 {}", ms(bx.p50_ms())),
        ratio: times(x509.p50_ms(), bx.p50_ms()),
        target: "p99 < 1 ms".into(),
        status: Status::of(x509.count() > 0 && x509.p99_ms() < 1.0),
    });
    rows.push(Row {
        figure: format!("Workload API FetchJWTSVID from cache (p50 / p99, n={})", jwt.count()),
        value: format!("{} / {}", ms(jwt.p50_ms()), ms(jwt.p99_ms())),
        reference: format!("broker IssueJWTSVID p50 {}", ms(bj.p50_ms())),
        ratio: times(jwt.p50_ms(), bj.p50_ms()),
        target: "p99 < 1 ms".into(),
        status: Status::of(jwt.count() > 0 && jwt.p99_ms() < 1.0),
    });
    rows.push(Row::info(
        format!("Workload API FetchJWTSVID, {} connections (throughput, p99)", o.clients),
        format!("{} ({})", rate(busy.throughput()), ms(busy.p99_ms())),
    ));
    rows.push(Row {
        figure: format!("agent RSS idle ({}: joined, SVIDs cached)", slim.name()),
        value: mb(idle_kb),
        reference: format!("{} {}", full.name(), mb(full_idle.total)),
        ratio: times(idle_kb as f64, full_idle.total as f64),
        target: "< 15 MB".into(),
        status: Status::of(idle_kb < 15 * 1024),
    });
    rows.push(Row {
        figure: format!("agent RSS idle: anonymous / file-backed (binary code, shared), {}", slim.name()),
        value: format!("{} / {}", mb(idle.anon), mb(idle.file)),
        reference: format!("{} {} / {}", full.name(), mb(full_idle.anon), mb(full_idle.file)),
        ratio: "-".into(),
        target: "-".into(),
        status: Status::Info,
    });
    rows.push(Row {
        figure: format!("agent RSS under Workload API load (peak VmHWM, {})", slim.name()),
        value: mb(peak_kb),
        reference: format!("idle {}", mb(idle_kb)),
        ratio: times(peak_kb as f64, idle_kb as f64),
        target: "< 15 MB".into(),
        status: Status::of(peak_kb < 15 * 1024),
    });
    Ok(())
}
