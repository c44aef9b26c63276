//! The system clock, injected where time matters (resources take `now: fn() -> i64`
//! so tests can pin it).

/// Seconds since the Unix epoch (0 for a clock set before it).
pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
