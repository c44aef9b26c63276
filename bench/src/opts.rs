//! Run-wide settings shared by the scenarios.

use crate::load::Budget;
use std::time::Duration;

/// How big and how long each phase is.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Concurrent API clients (connections) in closed-loop phases.
    pub clients: usize,
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
    /// A budget for a fixed-count latency series.
    pub fn series(&self, n: u64) -> Budget {
        Budget { max_requests: n, duration: self.phase.duration.max(Duration::from_secs(2)) * 2 }
    }
}
