//! Latency samples and throughput of one measured phase.

use std::time::Duration;

/// What one phase measured: every request's latency, how long it ran, failures.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Latencies of successful requests, nanoseconds (unsorted until [`Sample::finish`]).
    latencies_ns: Vec<u64>,
    /// Failed requests.
    pub errors: u64,
    /// First error message seen, for the report.
    pub first_error: Option<String>,
    /// Wall time of the phase.
    pub elapsed: Duration,
}

impl Sample {
    /// An empty sample with room for `n` latencies.
    pub fn with_capacity(n: usize) -> Self {
        Self { latencies_ns: Vec::with_capacity(n), ..Default::default() }
    }

    /// Records one successful request.
    pub fn ok(&mut self, d: Duration) {
        self.latencies_ns.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one failed request.
    pub fn err(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    /// Adds another client's sample (same phase).
    pub fn merge(&mut self, other: Sample) {
        self.latencies_ns.extend(other.latencies_ns);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Sorts the latencies; call once all clients are merged.
    pub fn finish(mut self, elapsed: Duration) -> Self {
        self.latencies_ns.sort_unstable();
        self.elapsed = elapsed;
        self
    }

    /// Successful requests.
    pub fn count(&self) -> usize {
        self.latencies_ns.len()
    }

    /// Successful requests per second over the phase.
    pub fn throughput(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.count() as f64 / s
        } else {
            0.0
        }
    }

    /// The `q` quantile (0..=1) in milliseconds, nearest-rank; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return 0.0;
        }
        let n = self.latencies_ns.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_ns[rank - 1] as f64 / 1e6
    }

    /// Median, milliseconds.
    pub fn p50_ms(&self) -> f64 {
        self.quantile_ms(0.50)
    }

    /// 99th percentile, milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.quantile_ms(0.99)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles_of_one_to_hundred() {
        let mut s = Sample::with_capacity(100);
        for i in 1..=100u64 {
            s.ok(Duration::from_millis(101 - i));
        }
        let s = s.finish(Duration::from_secs(2));
        assert_eq!(s.p50_ms(), 50.0);
        assert_eq!(s.p99_ms(), 99.0);
        assert_eq!(s.quantile_ms(1.0), 100.0);
        assert_eq!(s.throughput(), 50.0);
    }

    #[test]
    fn empty_sample_reports_zero_not_a_panic() {
        let s = Sample::default().finish(Duration::ZERO);
        assert_eq!(s.p99_ms(), 0.0);
        assert_eq!(s.throughput(), 0.0);
    }
}
