//! Broker metrics in the Prometheus text format: requests and latency per
//! RPC, join outcomes per method, store latency per operation.
//!
//! Every label value comes from a fixed list in this crate (the proto's RPCs,
//! [`Method::ALL`], [`StoreOp::ALL`], the gRPC codes), never from a caller, so
//! the registry is a set of fixed arrays of atomics: no allocation, no lock, and
//! no way for a caller to grow it. Served on `metrics_listen` (see
//! `server::ops`), not on the public port.

pub mod histogram;
pub mod rpc;

use histogram::Histogram;
use sigil_core::domain::Method;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How a join ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// An identity was issued.
    Ok,
    /// The credential, token or request was refused.
    Refused,
    /// The broker failed (store, signing).
    Error,
}

impl JoinOutcome {
    const ALL: [JoinOutcome; 3] = [Self::Ok, Self::Refused, Self::Error];

    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }
}

/// A store operation (one per `Store` method), the label of its latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StoreOp {
    Create,
    Update,
    Get,
    List,
    Delete,
    TokenState,
    ConsumeToken,
    UseToken,
    CreateInstance,
    Instance,
    CallerRecords,
    AdvanceGeneration,
    TouchInstance,
    RecordHeartbeat,
    ListInstances,
    InstanceRecord,
    DeleteExpiredInstances,
    ListCaKeys,
    InsertCaKey,
    ChangeCaKey,
    KeypairBinding,
    BindKeypair,
    AdvanceKeypair,
    InsertChallenge,
    TakeChallenge,
    AppendAudit,
    ListAudit,
    PruneAudit,
    IssuanceEvents,
    InsertRevocations,
    ListRevocations,
    Ping,
    WriteBatch,
}

impl StoreOp {
    /// Every operation, in label order.
    pub const ALL: [StoreOp; 33] = [
        Self::Create,
        Self::Update,
        Self::Get,
        Self::List,
        Self::Delete,
        Self::TokenState,
        Self::ConsumeToken,
        Self::UseToken,
        Self::CreateInstance,
        Self::Instance,
        Self::CallerRecords,
        Self::AdvanceGeneration,
        Self::TouchInstance,
        Self::RecordHeartbeat,
        Self::ListInstances,
        Self::InstanceRecord,
        Self::DeleteExpiredInstances,
        Self::ListCaKeys,
        Self::InsertCaKey,
        Self::ChangeCaKey,
        Self::KeypairBinding,
        Self::BindKeypair,
        Self::AdvanceKeypair,
        Self::InsertChallenge,
        Self::TakeChallenge,
        Self::AppendAudit,
        Self::ListAudit,
        Self::PruneAudit,
        Self::IssuanceEvents,
        Self::InsertRevocations,
        Self::ListRevocations,
        Self::Ping,
        Self::WriteBatch,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Get => "get",
            Self::List => "list",
            Self::Delete => "delete",
            Self::TokenState => "token_state",
            Self::ConsumeToken => "consume_token",
            Self::UseToken => "use_token",
            Self::CreateInstance => "create_instance",
            Self::Instance => "instance",
            Self::CallerRecords => "caller_records",
            Self::AdvanceGeneration => "advance_generation",
            Self::TouchInstance => "touch_instance",
            Self::RecordHeartbeat => "record_heartbeat",
            Self::ListInstances => "list_instances",
            Self::InstanceRecord => "instance_record",
            Self::DeleteExpiredInstances => "delete_expired_instances",
            Self::ListCaKeys => "list_ca_keys",
            Self::InsertCaKey => "insert_ca_key",
            Self::ChangeCaKey => "change_ca_key",
            Self::KeypairBinding => "keypair_binding",
            Self::BindKeypair => "bind_keypair",
            Self::AdvanceKeypair => "advance_keypair",
            Self::InsertChallenge => "insert_challenge",
            Self::TakeChallenge => "take_challenge",
            Self::AppendAudit => "append_audit",
            Self::ListAudit => "list_audit",
            Self::PruneAudit => "prune_audit",
            Self::IssuanceEvents => "issuance_events",
            Self::InsertRevocations => "insert_revocations",
            Self::ListRevocations => "list_revocations",
            Self::Ping => "ping",
            Self::WriteBatch => "write_batch",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

const RPC_SLOTS: usize = rpc::RPCS.len() + 1;

/// The broker's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    requests: [[AtomicU64; rpc::CODES.len()]; RPC_SLOTS],
    latency: [Histogram; RPC_SLOTS],
    joins: [[AtomicU64; JoinOutcome::ALL.len()]; Method::ALL.len()],
    store: [Histogram; StoreOp::ALL.len()],
    store_errors: [AtomicU64; StoreOp::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| Histogram::default()),
            joins: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            store: std::array::from_fn(|_| Histogram::default()),
            store_errors: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Metrics {
    /// One finished gRPC request: its RPC slot ([`rpc::of_path`]), `grpc-status`
    /// header (absent: OK, the status follows in trailers) and time to the
    /// response headers.
    pub fn rpc(&self, slot: usize, grpc_status: Option<&[u8]>, elapsed: Duration) {
        let slot = slot.min(rpc::UNKNOWN);
        self.requests[slot][rpc::code_of(grpc_status)].fetch_add(1, Relaxed);
        self.latency[slot].observe(elapsed);
    }

    /// One join attempt whose method was recognised.
    pub fn join(&self, method: Method, outcome: JoinOutcome) {
        let m = Method::ALL.iter().position(|x| *x == method).unwrap_or(0);
        let o = JoinOutcome::ALL.iter().position(|x| *x == outcome).unwrap_or(0);
        self.joins[m][o].fetch_add(1, Relaxed);
    }

    /// One store call; `failed` for a backend failure (not a "not found").
    pub fn store(&self, op: StoreOp, elapsed: Duration, failed: bool) {
        self.store[op.index()].observe(elapsed);
        if failed {
            self.store_errors[op.index()].fetch_add(1, Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, ready: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        family(&mut out, "sigil_broker_grpc_requests_total", "counter", "gRPC requests answered, per RPC and status code.");
        for (slot, codes) in self.requests.iter().enumerate() {
            for (code, n) in codes.iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "sigil_broker_grpc_requests_total{{rpc=\"{}\",code=\"{}\"}} {n}", rpc::name(slot), rpc::CODES[code]);
                }
            }
        }
        let name = "sigil_broker_grpc_request_duration_seconds";
        family(&mut out, name, "histogram", "Time from request to response headers, per RPC.");
        for (slot, h) in self.latency.iter().enumerate() {
            if h.count() > 0 {
                h.render(&mut out, name, &format!("rpc=\"{}\"", rpc::name(slot)));
            }
        }
        family(&mut out, "sigil_broker_joins_total", "counter", "Join attempts per join method and outcome (ok, refused, error).");
        for (m, outcomes) in Method::ALL.iter().zip(&self.joins) {
            for (o, n) in JoinOutcome::ALL.iter().zip(outcomes) {
                let _ = writeln!(out, "sigil_broker_joins_total{{method=\"{}\",outcome=\"{}\"}} {}", m.name(), o.name(), n.load(Relaxed));
            }
        }
        let name = "sigil_broker_store_operation_duration_seconds";
        family(&mut out, name, "histogram", "Store call latency per operation.");
        for (op, h) in StoreOp::ALL.iter().zip(&self.store) {
            h.render(&mut out, name, &format!("op=\"{}\"", op.name()));
        }
        family(&mut out, "sigil_broker_store_errors_total", "counter", "Store calls that failed in the backend, per operation.");
        for (op, n) in StoreOp::ALL.iter().zip(&self.store_errors) {
            let _ = writeln!(out, "sigil_broker_store_errors_total{{op=\"{}\"}} {}", op.name(), n.load(Relaxed));
        }
        family(&mut out, "sigil_broker_ready", "gauge", "1 when the last store round-trip of /readyz succeeded in time.");
        let _ = writeln!(out, "sigil_broker_ready {}", u8::from(ready));
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_under_their_fixed_labels() {
        let m = Metrics::default();
        m.rpc(rpc::of_path("/sigil.v1.Sigil/WhoAmI"), None, Duration::from_millis(2));
        m.rpc(rpc::of_path("/sigil.v1.Sigil/WhoAmI"), Some(b"16"), Duration::from_millis(2));
        m.rpc(rpc::of_path("/evil\"}\n"), Some(b"5"), Duration::from_millis(2));
        m.join(Method::Token, JoinOutcome::Refused);
        m.store(StoreOp::Get, Duration::from_micros(50), false);
        let text = m.render(true);
        assert!(text.contains("sigil_broker_grpc_requests_total{rpc=\"WhoAmI\",code=\"OK\"} 1\n"), "{text}");
        assert!(text.contains("sigil_broker_grpc_requests_total{rpc=\"WhoAmI\",code=\"UNAUTHENTICATED\"} 1\n"));
        assert!(text.contains("sigil_broker_grpc_requests_total{rpc=\"unknown\",code=\"NOT_FOUND\"} 1\n"));
        assert!(text.contains("sigil_broker_grpc_request_duration_seconds_count{rpc=\"WhoAmI\"} 2\n"));
        assert!(text.contains("sigil_broker_joins_total{method=\"token\",outcome=\"refused\"} 1\n"));
        assert!(text.contains("sigil_broker_joins_total{method=\"bound_keypair\",outcome=\"ok\"} 0\n"));
        assert!(text.contains("sigil_broker_store_operation_duration_seconds_count{op=\"get\"} 1\n"));
        assert!(text.contains("sigil_broker_ready 1\n"));
        assert!(!text.contains("evil"));
    }
}
