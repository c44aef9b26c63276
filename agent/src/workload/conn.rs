//! Connection limits of the Workload API socket and what is known about each
//! connection.
//!
//! Threat model: every local user can connect. Without limits, 1100 idle
//! connections from one unprivileged uid used up the agent's file descriptors and
//! blocked allowed workloads, `/readyz` and the file outputs. So:
//! - at most [`Limits::max_connections`] connections in all and
//!   [`Limits::max_connections_per_uid`] per uid; over either, a new connection is
//!   closed at once (the uid's own connections are what it runs out of);
//! - the total is also kept [`RESERVED_FDS`] below the open-file limit, which the
//!   agent raises from soft to hard at start, so outputs and health always find
//!   file descriptors;
//! - a connection with no open stream for [`Limits::idle_timeout`] is closed
//!   (gRPC clients reconnect when they next call), one that has not sent the
//!   HTTP/2 preface within [`PREFACE_TIMEOUT`] too.
//!
//! Admission is a pure function of the counts ([`admit`]); [`Tracker`] holds the
//! counts and gives back a [`Permit`] that releases the slot when dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// File descriptors kept free for outputs, health, the broker connection and logs.
pub const RESERVED_FDS: u64 = 256;
/// Time a new connection has to send the HTTP/2 preface.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection limits (configurable under the service's `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections in all.
    pub max_connections: usize,
    /// Connections of one uid.
    pub max_connections_per_uid: usize,
    /// Concurrent streams (calls) on one connection.
    pub max_streams_per_connection: u32,
    /// How long a connection may stay without an open stream.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_connections: 1024, max_connections_per_uid: 128, max_streams_per_connection: 32, idle_timeout: Duration::from_secs(120) }
    }
}

impl Limits {
    /// `max_connections`, lowered to keep [`RESERVED_FDS`] below `nofile`
    /// (the soft open-file limit, when known).
    pub fn effective_max_connections(&self, nofile: Option<u64>) -> usize {
        match nofile {
            Some(n) => self.max_connections.min(usize::try_from(n.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX)),
            None => self.max_connections,
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The agent holds `max_connections` already.
    Total(usize),
    /// This uid holds `max_connections_per_uid` already.
    PerUid(usize),
}

/// Whether one more connection from a uid holding `of_uid` may join `total`.
pub fn admit(total: usize, of_uid: usize, max_total: usize, max_per_uid: usize) -> Result<(), Refusal> {
    if of_uid >= max_per_uid {
        Err(Refusal::PerUid(max_per_uid))
    } else if total >= max_total {
        Err(Refusal::Total(max_total))
    } else {
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// Open connections, in all and per uid.
#[derive(Debug)]
pub struct Tracker {
    counts: Mutex<Counts>,
    max_total: usize,
    max_per_uid: usize,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    tracker: Arc<Tracker>,
    uid: u32,
}

impl Tracker {
    /// A tracker enforcing `max_total` and `max_per_uid`.
    pub fn new(max_total: usize, max_per_uid: usize) -> Arc<Self> {
        Arc::new(Self { counts: Mutex::default(), max_total, max_per_uid })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection of `uid`, or says why not.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<Permit, Refusal> {
        let mut c = self.counts();
        let of_uid = c.per_uid.get(&uid).copied().unwrap_or(0);
        admit(c.total, of_uid, self.max_total, self.max_per_uid)?;
        c.total += 1;
        *c.per_uid.entry(uid).or_default() += 1;
        Ok(Permit { tracker: self.clone(), uid })
    }

    /// Open connections in all.
    pub fn total(&self) -> usize {
        self.counts().total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.tracker.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

/// The client-initiated streams of one connection that have not ended, from the
/// frames the shim sees in both directions.
#[derive(Debug, Default)]
pub struct Streams {
    open: HashSet<u32>,
    highest: u32,
}

impl Streams {
    /// A client HEADERS frame on `id` (a new stream when `id` is above every earlier one).
    pub fn client_headers(&mut self, id: u32) {
        if id > self.highest {
            self.highest = id;
            self.open.insert(id);
        }
    }

    /// The server ended `id` (END_STREAM) or either side reset it.
    pub fn ended(&mut self, id: u32) {
        self.open.remove(&id);
    }

    /// Whether no stream is open.
    pub fn idle(&self) -> bool {
        self.open.is_empty()
    }
}

/// Who wrote on a connection besides the process that opened it.
#[derive(Debug, Default)]
pub struct Writers {
    foreign: AtomicI32,
}

impl Writers {
    /// Records that bytes came from process `pid` on a connection opened by `opener`.
    pub fn wrote(&self, opener: Option<i32>, pid: i32) {
        if let Some(o) = opener.filter(|o| *o > 0) {
            if pid != o {
                let _ = self.foreign.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
    }

    /// The first process other than the opener that wrote on the connection.
    pub fn foreign(&self) -> Option<i32> {
        Some(self.foreign.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_at_its_cap_is_refused_while_others_are_admitted() {
        let t = Tracker::new(10, 2);
        let a = [t.admit(7).unwrap(), t.admit(7).unwrap()];
        assert_eq!(t.admit(7).unwrap_err(), Refusal::PerUid(2));
        let b = t.admit(8).unwrap();
        assert_eq!(t.total(), 3);
        drop(a);
        assert!(t.admit(7).is_ok(), "slots come back when connections close");
        drop(b);
    }

    #[test]
    fn the_total_cap_holds_across_uids() {
        let t = Tracker::new(3, 2);
        let _held: Vec<_> = (0..3).map(|uid| t.admit(uid).unwrap()).collect();
        assert_eq!(t.admit(99).unwrap_err(), Refusal::Total(3));
    }

    #[test]
    fn descriptors_are_reserved_below_the_open_file_limit() {
        let l = Limits::default();
        assert_eq!(l.effective_max_connections(Some(1024)), 768);
        assert_eq!(l.effective_max_connections(Some(1 << 20)), 1024);
        assert_eq!(l.effective_max_connections(Some(100)), 0);
        assert_eq!(l.effective_max_connections(None), 1024);
    }

    #[test]
    fn a_stream_is_open_until_the_server_ends_or_a_side_resets_it() {
        let mut s = Streams::default();
        assert!(s.idle());
        s.client_headers(1);
        s.client_headers(3);
        s.ended(1);
        assert!(!s.idle());
        s.client_headers(3); // trailers on an open stream
        s.ended(3);
        s.client_headers(3); // late frame on an ended stream: not reopened
        assert!(s.idle());
    }

    #[test]
    fn the_first_foreign_writer_is_remembered() {
        let w = Writers::default();
        w.wrote(Some(10), 10);
        assert_eq!(w.foreign(), None);
        w.wrote(Some(10), 11);
        w.wrote(Some(10), 12);
        assert_eq!(w.foreign(), Some(11));
        let unknown = Writers::default();
        unknown.wrote(None, 5);
        assert_eq!(unknown.foreign(), None, "without an opener pid there is nothing to compare");
    }
}
