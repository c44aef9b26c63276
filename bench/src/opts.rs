//! Run-wide settings shared by the scenarios.

use crate::load::Budget;
use std::time::Duration;

/// How big and how long each phase is.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Concurrent API clients (connections) in closed-loop phases.
    pub clients: usize,
    /// Requests in flight per client connection in closed-loop phases.
    pub streams: usize,
    /// SVID requests per BatchIssueSvids call in the batched phases (0: none).
    pub batch: usize,
    /// Bounds of each API load phase.
    pub phase: Budget,
    /// Threads for the raw references (the machine's parallelism).
    pub threads: usize,
    /// Sequential joins measured (warm connection); cold joins are a quarter.
    pub joins: u64,
    /// Bots in the store-scale benchmark.
    pub bots: u64,
    /// Audit events in the store-scale benchmark.
    pub audit_events: u64,
}

impl Opts {
    /// The closed-loop workers: each connection `streams` times (one worker
    /// per in-flight request; HTTP/2 multiplexes them on the connection).
    pub fn workers<C: Clone>(&self, clients: &[C]) -> Vec<C> {
        clients.iter().flat_map(|c| std::iter::repeat_n(c.clone(), self.streams)).collect()
    }

    /// "8 clients" or "8 clients x 4 streams", for row names.
    pub fn load_name(&self) -> String {
        if self.streams > 1 {
            format!("{} clients x {} streams", self.clients, self.streams)
        } else {
            format!("{} clients", self.clients)
        }
    }

    /// A budget for a fixed-count latency series.
    pub fn series(&self, n: u64) -> Budget {
        Budget { max_requests: n, duration: self.phase.duration.max(Duration::from_secs(2)) * 2 }
    }
}
