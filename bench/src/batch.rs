//! SVIDs issued in batches (BatchIssueSvids, the call the agent's Workload API
//! makes for all of a workload's identities): one RPC carries `--batch` SVID
//! requests, so the per-RPC costs (TLS records, HTTP/2 frames, system calls on
//! both sides, authentication, the audit commit) are shared by the batch while
//! each SVID is still checked, signed and audited on its own. Throughput is
//! counted in SVIDs, against the same raw reference as one SVID per RPC.

use crate::load::{self, Budget};
use crate::opts::Opts;
use crate::proc::CpuMeter;
use crate::report::{ms, pct, rate, threads, Row, Status};
use crate::stats::Sample;
use anyhow::Result;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::sync::Arc;
use tonic::transport::Channel;

/// One batched phase: what to send, the raw reference and the target.
pub struct Phase<'a, R> {
    /// Row prefix, e.g. "X.509-SVID".
    pub name: &'a str,
    /// The reference's label, e.g. "raw CSR verify + P-256 sign".
    pub reference: &'a str,
    /// Requests cycled through (each with `o.batch` entries).
    pub requests: Vec<pb::BatchIssueSvidsRequest>,
    /// The raw reference (SVIDs per second on `o.threads` threads).
    pub raw: R,
    /// Throughput target as a share of the reference, if any.
    pub target: Option<f64>,
}

/// What the phase measured, for the callers' own checks.
pub struct Outcome {
    /// SVIDs issued (RPCs x batch).
    pub svids: u64,
}

/// Runs `p` (closed loop, alternating with its reference); appends rows.
pub async fn run<R>(pid: u32, clients: &[SigilClient<Channel>], o: &Opts, p: Phase<'_, R>, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<Outcome>
where
    R: FnMut(Budget) -> Result<Sample>,
{
    if o.batch == 0 {
        return Ok(Outcome { svids: 0 });
    }
    let n = o.batch as f64;
    let requests = Arc::new(p.requests);
    let op = move |mut c: SigilClient<Channel>, i: u64| {
        let req = requests[(i as usize) % requests.len()].clone();
        async move {
            let r = c.batch_issue_svids(req).await.map_err(|e| e.to_string())?.into_inner();
            let failed = r.x509.iter().filter_map(|e| e.error.as_ref()).chain(r.jwt.iter().filter_map(|e| e.error.as_ref())).next();
            match failed {
                Some(e) => Err(format!("entry refused: {}", e.message)),
                None if r.x509.iter().all(|e| e.svid.is_some()) && r.jwt.iter().all(|e| e.svid.is_some()) => Ok(()),
                None => Err("entry without an SVID".to_string()),
            }
        }
    };
    // RPCs per budget: the budget's request bound counts SVIDs.
    let phase = Budget { max_requests: (o.phase.max_requests / o.batch as u64).max(1), duration: o.phase.duration };
    let cpu = CpuMeter::start(pid)?;
    let (raw_all, peak) = load::alternate(load::ROUNDS, phase, p.raw, |b| load::closed_loop(o.workers(clients), b, op.clone())).await?;
    let svids = peak.count() as u64 * o.batch as u64;
    let (user, sys) = cpu.per_request_us(svids as usize)?;
    if peak.errors > 0 {
        failures.push(format!("{} batches: {} RPCs failed, first: {}", p.name, peak.errors, peak.first_error.clone().unwrap_or_default()));
    }
    let per_s = peak.throughput() * n;
    rows.push(Row {
        figure: format!("{} issuance, batches of {} per RPC, {} (SVIDs/s)", p.name, o.batch, o.load_name()),
        value: rate(per_s),
        reference: format!("{}, {}: {}", p.reference, threads(o.threads), rate(raw_all.throughput())),
        ratio: pct(per_s, raw_all.throughput()),
        target: p.target.map(|t| format!(">= {:.0}%", t * 100.0)).unwrap_or_else(|| "-".into()),
        status: match p.target {
            Some(t) => Status::of(per_s / raw_all.throughput().max(f64::MIN_POSITIVE) >= t),
            None => Status::Info,
        },
    });
    rows.push(Row::info(
        format!("{} batches: broker CPU per SVID (user + sys) / RPC latency p50 / p99", p.name),
        format!("{:.0} us ({:.0} + {:.0}) / {} / {}", user + sys, user, sys, ms(peak.p50_ms()), ms(peak.p99_ms())),
    ));
    Ok(Outcome { svids })
}
