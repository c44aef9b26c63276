//! A child process this run started: its memory, and its end (SIGTERM, then
//! kill) when dropped, so no benchmark leaves a process behind.

use anyhow::{Context, Result};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process owned by the run.
#[derive(Debug)]
pub struct Managed(pub Child);

impl Managed {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Resident set size now, kB (`VmRSS`).
    pub fn rss_kb(&self) -> Result<u64> {
        proc_status_kb(self.pid(), "VmRSS:")
    }

    /// Peak resident set size so far, kB (`VmHWM`).
    pub fn peak_rss_kb(&self) -> Result<u64> {
        proc_status_kb(self.pid(), "VmHWM:")
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        // SIGTERM first: the process shuts down cleanly (and a profiler wrapping
        // it gets to write its output); kill only if it does not.
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time a process used so far, user and system, in seconds
/// (/proc/PID/stat fields 14 and 15, in clock ticks of 1/100 s on Linux).
pub fn cpu_seconds(pid: u32) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("/proc/PID/stat (Linux only)")?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = text.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> { Ok(f.get(i).context("short stat")?.parse::<f64>()? / CLOCK_TICKS) };
    Ok((tick(11)?, tick(12)?))
}

/// USER_HZ: fixed at 100 on Linux for every architecture this runs on.
const CLOCK_TICKS: f64 = 100.0;

/// CPU used by a process between two points of a run.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: u32,
    user: f64,
    sys: f64,
}

impl CpuMeter {
    /// Starts measuring `pid`.
    pub fn start(pid: u32) -> Result<Self> {
        let (user, sys) = cpu_seconds(pid)?;
        Ok(Self { pid, user, sys })
    }

    /// (user, system) CPU microseconds per request for `requests` since start.
    pub fn per_request_us(&self, requests: usize) -> Result<(f64, f64)> {
        let (u, s) = cpu_seconds(self.pid)?;
        let n = requests.max(1) as f64;
        Ok(((u - self.user) * 1e6 / n, (s - self.sys) * 1e6 / n))
    }
}

/// A `kB` field of /proc/PID/status.
pub fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).context("/proc/PID/status (Linux only)")?;
    let line = text.lines().find(|l| l.starts_with(field)).with_context(|| format!("{field} missing"))?;
    line.split_whitespace().nth(1).context("malformed status line")?.parse().context("malformed kB value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_resident_set_is_read_from_proc() {
        let kb = proc_status_kb(std::process::id(), "VmRSS:").unwrap();
        assert!(kb > 100, "{kb} kB");
    }

    #[test]
    fn own_cpu_time_grows_while_spinning() {
        let m = CpuMeter::start(std::process::id()).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let (user, sys) = m.per_request_us(1).unwrap();
        assert!(user + sys >= 100_000.0, "{user} + {sys} us for 300 ms of spinning ({x})");
    }

    #[test]
    fn dropping_a_managed_child_ends_it() {
        let m = Managed(Command::new("sleep").arg("30").spawn().unwrap());
        let pid = m.pid();
        drop(m);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap().contains("zombie"));
    }
}
