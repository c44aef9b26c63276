//! `sigil-load`: loopback load generator and benchmark suite for the Sigil
//! broker. Every figure is printed beside a reference measured in the same run
//! (raw cryptography, a small store, idle memory), with the ratio and the
//! target from docs/benchmarks.md. Each phase is bounded by a request count
//! AND a duration; the run stops by itself. Exit status is non-zero only when
//! something failed (a broker that does not start, requests that error), never
//! for a missed target.

mod batch;
mod broker;
mod fixture;
mod join;
mod jwt;
mod load;
mod opts;
mod pg;
mod proc;
mod raw;
mod replicas;
mod scale;
mod report;
mod stats;
mod store;
mod storm;
mod workload;
mod x509;

use anyhow::{Context, Result};
use broker::{BrokerProcess, JwtAlg};
use clap::Parser;
use load::Budget;
use opts::Opts;
use report::{mb, times, Row, Status};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Benchmarks of the Sigil broker against references measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "sigil-load")]
struct Args {
    /// A few seconds per benchmark and a 1% store scale (CI).
    #[arg(long)]
    quick: bool,
    /// The `sigil` binary to benchmark (default: next to this one).
    #[arg(long)]
    sigil: Option<PathBuf>,
    /// Concurrent clients (connections) in the throughput phases.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests in flight on each client connection in the throughput phases
    /// (HTTP/2 streams, like an agent renewing several SVIDs at once).
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// SVID requests per BatchIssueSvids call in the batched phases (1-64; 0
    /// skips them, e.g. to profile the one-SVID-per-RPC path alone).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Seconds per load phase (default 10, --quick 2).
    #[arg(long)]
    duration: Option<f64>,
    /// Most requests per load phase.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Sequential joins measured (default 500, --quick 100).
    #[arg(long)]
    joins: Option<u64>,
    /// Bots in the store-scale benchmark (default 100000, --quick 10000).
    #[arg(long)]
    bots: Option<u64>,
    /// Audit events in the store-scale benchmark (default 1000000, --quick 100000).
    #[arg(long)]
    audit_events: Option<u64>,
    /// Benchmarks to run, comma separated: x509,jwt,join,memory,workload,es256,store
    /// (the default), and the opt-in PostgreSQL ones: replicas (2 broker
    /// replicas on PostgreSQL vs 1 on SQLite, same CPUs), pgscale (1,000,000
    /// bots and 10,000,000 audit events in PostgreSQL vs 1% of that).
    #[arg(long, value_delimiter = ',', default_value = "x509,jwt,join,memory,workload,es256,store")]
    only: Vec<String>,
    /// Bots in the PostgreSQL scale benchmark (pgscale; default 1000000,
    /// --quick 10000); the reference store has 1% of them.
    #[arg(long)]
    pg_bots: Option<u64>,
    /// Audit events in the PostgreSQL scale benchmark (default 10000000,
    /// --quick 100000).
    #[arg(long)]
    pg_audit_events: Option<u64>,
    /// Requests per operation and store in the PostgreSQL scale benchmark
    /// (default 2000, --quick 250).
    #[arg(long)]
    pg_lookups: Option<u64>,
    /// Command prefix for the broker, e.g. "valgrind --tool=callgrind" (profiling).
    #[arg(long)]
    wrap: Option<String>,
    /// CPUs the broker is pinned to (`taskset -c LIST`), e.g. `0`. Run the load
    /// generator itself on the other CPUs (`taskset -c 1 sigil-load ...`, what
    /// bench/run.sh does): the references then run on as many CPUs as the
    /// broker has, and the clients' CPU is not taken from the broker's.
    #[arg(long)]
    broker_cpus: Option<String>,
    /// Shell command run once the load clients are ready, before the first load
    /// phase, with SIGIL_PID set (e.g. `callgrind_control -z $SIGIL_PID`).
    #[arg(long)]
    hook_before: Option<String>,
    /// Shell command run after the load phases (e.g. `callgrind_control -d $SIGIL_PID`).
    #[arg(long)]
    hook_after: Option<String>,
    /// Worker threads of the load generator's async runtime (the clients). One
    /// keeps the client's CPU per request low (no cross-thread wake-ups); the
    /// raw references run on their own threads regardless.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Also run the reconnect storm (bench/src/storm.rs): a broker restart in
    /// front of `--agents` agents renewing at once, with the old and the
    /// current connection limits. Not part of --quick.
    #[arg(long)]
    storm: bool,
    /// Agents in the reconnect storm.
    #[arg(long, default_value_t = 2000)]
    agents: usize,
    /// Seconds to wait for the broker to answer after start.
    #[arg(long, default_value_t = 30.0)]
    ready_timeout: f64,
}

impl Args {
    fn opts(&self) -> Opts {
        let (dur, joins, bots, events) = if self.quick { (2.0, 100, 10_000, 100_000) } else { (10.0, 500, 100_000, 1_000_000) };
        Opts {
            clients: self.clients.max(1),
            streams: self.streams.max(1),
            batch: self.batch.min(64),
            phase: Budget { max_requests: self.max_requests, duration: Duration::from_secs_f64(self.duration.unwrap_or(dur)) },
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            joins: self.joins.unwrap_or(joins),
            bots: self.bots.unwrap_or(bots),
            audit_events: self.audit_events.unwrap_or(events),
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.only.iter().any(|o| o == name)
    }

    fn sigil(&self) -> Result<PathBuf> {
        match &self.sigil {
            Some(p) => Ok(p.clone()),
            None => Ok(std::env::current_exe()?.parent().context("no exe dir")?.join("sigil")),
        }
    }

    fn hook(&self, cmd: &Option<String>, pid: u32) -> Result<()> {
        if let Some(c) = cmd {
            let st = std::process::Command::new("sh").arg("-c").arg(c).env("SIGIL_PID", pid.to_string()).status()?;
            anyhow::ensure!(st.success(), "hook {c:?} failed: {st}");
        }
        Ok(())
    }

    fn wrap(&self) -> Vec<String> {
        let pin = self.broker_cpus.iter().flat_map(|c| ["taskset".to_string(), "-c".to_string(), c.clone()]);
        pin.chain(self.wrap.as_deref().unwrap_or_default().split_whitespace().map(String::from)).collect()
    }
}

/// Everything measured against the default (RS256) broker.
async fn rs256_broker(a: &Args, o: &Opts, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<()> {
    let b = BrokerProcess::spawn(&a.sigil()?, JwtAlg::Rs256, &a.wrap(), Duration::from_secs_f64(a.ready_timeout)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kb = b.rss_kb()?;
    let token = fixture::provision(&b, 1_000_000).await?;
    let clients = fixture::bot_clients(&b, &token, o.clients).await?;
    let mut raw_p50 = None;
    a.hook(&a.hook_before, b.pid())?;
    if a.wants("x509") {
        let r = x509::run(&b, &clients, o, rows, failures).await?;
        raw_p50 = Some(r.raw_single.p50_ms());
    }
    if a.wants("jwt") {
        jwt::run(JwtAlg::Rs256, b.pid(), &clients, o, rows, failures).await?;
    }
    if a.wants("join") {
        let p50 = match raw_p50 {
            Some(p) => p,
            None => raw::x509_sign_verify(1, o.series(1000), &raw::csr_pool(16)?)?.p50_ms(),
        };
        join::run(&b, &token, p50, o, rows, failures).await?;
    }
    a.hook(&a.hook_after, b.pid())?;
    if a.wants("memory") {
        let (peak, now) = (b.peak_rss_kb()?, b.rss_kb()?);
        rows.push(Row {
            figure: "broker RSS idle (after start, no load)".into(),
            value: mb(idle_kb),
            reference: "-".into(),
            ratio: "-".into(),
            target: "< 30 MB".into(),
            status: Status::of(idle_kb < 30 * 1024),
        });
        rows.push(Row {
            figure: format!("broker RSS under load (peak VmHWM, {} clients)", o.clients),
            value: format!("{} (after load {})", mb(peak), mb(now)),
            reference: format!("idle {}", mb(idle_kb)),
            ratio: times(peak as f64, idle_kb as f64),
            target: "-".into(),
            status: Status::Info,
        });
    }
    if a.wants("workload") {
        let bot = clients.first().context("no clients")?;
        if let Err(e) = workload::run(&a.sigil()?, &b, &token, bot, o, rows, failures).await {
            failures.push(format!("Workload API benchmark: {e:#}"));
        }
    }
    Ok(())
}

async fn es256_broker(a: &Args, o: &Opts, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<()> {
    let b = BrokerProcess::spawn(&a.sigil()?, JwtAlg::Es256, &a.wrap(), Duration::from_secs_f64(a.ready_timeout)).await?;
    let token = fixture::provision(&b, 1000).await?;
    let clients = fixture::bot_clients(&b, &token, o.clients).await?;
    jwt::run(JwtAlg::Es256, b.pid(), &clients, o, rows, failures).await
}

async fn run(a: Args) -> Result<bool> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let o = a.opts();
    let build = if cfg!(debug_assertions) { "DEBUG" } else { "release" };
    println!(
        "sigil-load: {build} build, {} CPUs for the references, {} clients, {:?} per phase, broker {}",
        o.threads,
        o.clients,
        o.phase.duration,
        a.sigil()?.display()
    );
    match &a.broker_cpus {
        Some(cpus) => {
            if std::process::Command::new("taskset").arg("-V").output().is_err() {
                anyhow::bail!("--broker-cpus needs taskset: apt-get install util-linux");
            }
            println!(
                "CPUs: broker pinned to {cpus}; load generator and raw references on this process's {} CPU(s). Ratios compare equal CPU budgets.",
                o.threads
            );
        }
        None => println!("CPUs: shared: broker, load generator and raw references on all {} CPUs (the clients' CPU counts against the broker).", o.threads),
    }
    if cfg!(debug_assertions) {
        println!("NOTE: debug build: absolute figures are not representative; read the ratios only.");
    }
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    if ["x509", "jwt", "join", "memory", "workload"].iter().any(|n| a.wants(n)) {
        if let Err(e) = rs256_broker(&a, &o, &mut rows, &mut failures).await {
            failures.push(format!("RS256 broker benchmarks: {e:#}"));
        }
    }
    if a.wants("es256") {
        if let Err(e) = es256_broker(&a, &o, &mut rows, &mut failures).await {
            failures.push(format!("ES256 broker benchmark: {e:#}"));
        }
    }
    if a.wants("replicas") {
        let cpus = a.broker_cpus.as_deref();
        if let Err(e) = replicas::run(&a.sigil()?, &a.wrap(), cpus, Duration::from_secs_f64(a.ready_timeout), &o, &mut rows, &mut failures).await {
            failures.push(format!("replicas benchmark: {e:#}"));
        }
    }
    if a.wants("pgscale") {
        let (bots, events, n) = if a.quick { (10_000, 100_000, 250) } else { (1_000_000, 10_000_000, 2000) };
        let (bots, events, n) = (a.pg_bots.unwrap_or(bots), a.pg_audit_events.unwrap_or(events), a.pg_lookups.unwrap_or(n));
        let cpus = a.broker_cpus.as_deref();
        if let Err(e) = scale::run(&a.sigil()?, &a.wrap(), cpus, Duration::from_secs_f64(a.ready_timeout), bots, events, n, &mut rows, &mut failures).await {
            failures.push(format!("PostgreSQL scale benchmark: {e:#}"));
        }
    }
    if a.wants("store") {
        if let Err(e) = store::run(o.bots, o.audit_events, &mut rows, &mut failures).await {
            failures.push(format!("store benchmark: {e:#}"));
        }
    }
    if a.storm {
        if let Err(e) = storm::run(&a.sigil()?, a.agents.max(1), &mut rows, &mut failures).await {
            failures.push(format!("reconnect storm: {e:#}"));
        }
    }
    println!();
    print!("{}", report::table(&rows));
    let missed = rows.iter().filter(|r| r.status == Status::Miss).count();
    println!("\n{} figures, {missed} target(s) missed, {} failure(s), {:.0} s", rows.len(), failures.len(), start.elapsed().as_secs_f64());
    for f in &failures {
        println!("FAILURE: {f}");
    }
    Ok(failures.is_empty())
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Multi-thread flavour even with one worker: the references run under
    // `block_in_place`, which needs it.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads.max(1)).enable_all().build()?;
    if rt.block_on(run(args))? {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
