//! Limits of the broker port: how many connections, from whom, for how long.
//!
//! Anyone who can reach the port can open connections without credentials, so
//! every connection is bounded in time (TLS handshake, HTTP/1 header read, idle
//! with no request in flight, HTTP/2 keep-alive) and in number (per peer, in
//! total, and a share reserved for callers presenting a bot identity). The
//! total always fits the process's file descriptor limit, leaving room for the
//! database, the audit log and outbound join verification calls.

use serde::Deserialize;
use std::time::Duration;

/// File descriptors kept free for everything but client connections.
pub const FD_RESERVE: u64 = 64;

/// Connection limits (config key `limits.connections`; every field optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnLimits {
    /// Most open connections (lowered to the fd limit minus [`FD_RESERVE`]).
    pub max_connections: usize,
    /// Most connections from one peer (IPv4 address or IPv6 /64), identified
    /// or not; never more than half of `max_connections`. A fleet behind one
    /// NAT address holds one connection per agent, hence the high default.
    pub max_connections_per_peer: usize,
    /// Most connections from one peer in their TLS handshake or served without
    /// a client certificate at once; more wait their turn (holding only their
    /// socket, within the handshake deadline) instead of being refused.
    pub max_anonymous_per_peer: usize,
    /// Length of the kernel's queue of connections not yet accepted (capped by
    /// `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Percentage of `max_connections` that connections without a client
    /// certificate (joins, health checks, attackers) cannot take: headroom for
    /// admins and bots.
    pub reserved_for_identities_percent: usize,
    /// Seconds to complete the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds to send a whole HTTP/1 request head.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight.
    pub idle_timeout_secs: u64,
    /// Seconds between HTTP/2 pings on a connection (a peer that does not
    /// answer within the same time is dropped).
    pub keepalive_secs: u64,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Seconds a request may take, from its head to its answer (a request
    /// whose body never ends would otherwise keep its connection busy, hence
    /// neither idle nor evictable).
    pub request_timeout_secs: u64,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_peer: 5_000,
            max_anonymous_per_peer: 256,
            listen_backlog: 4096,
            reserved_for_identities_percent: 10,
            handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            keepalive_secs: 30,
            max_streams_per_connection: 100,
            request_timeout_secs: 60,
        }
    }
}

/// The limits the accept loop enforces, after fitting them to the fd limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// Most connections in total.
    pub total: usize,
    /// Most connections per peer.
    pub per_peer: usize,
    /// Most connections without a client certificate.
    pub anonymous: usize,
    /// Most active (not waiting) connections without a client certificate per peer.
    pub anonymous_per_peer: usize,
}

impl ConnLimits {
    /// The counts to enforce when the process may have `fd_limit` open files
    /// (`None`: unknown, use the configured numbers).
    pub fn effective(&self, fd_limit: Option<u64>) -> Effective {
        let fit = fd_limit.map_or(usize::MAX, |n| usize::try_from(n.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX));
        let total = self.max_connections.min(fit).max(2);
        let per_peer = self.max_connections_per_peer.clamp(1, total / 2);
        let reserved = total * self.reserved_for_identities_percent.min(90) / 100;
        let anonymous = (total - reserved).max(1);
        Effective { total, per_peer, anonymous, anonymous_per_peer: self.max_anonymous_per_peer.clamp(1, per_peer) }
    }

    /// TLS handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }

    /// HTTP/1 request head deadline.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs.max(1))
    }

    /// Idle deadline.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }

    /// Request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// HTTP/2 ping interval and answer deadline.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs.max(1))
    }
}

/// Raises the soft open-files limit to the hard limit (allowed without
/// privileges) and returns the soft limit in force afterwards. Used by the
/// broker and by the agent (Workload API and health listener).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::warn!(error = %e, soft = ?fd_limit(), "cannot raise the open files limit to its hard limit");
        }
    }
    fd_limit()
}

/// The soft open-files limit (`None`: unlimited).
pub fn fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_fits_the_fd_limit_and_one_peer_gets_at_most_half() {
        let e = ConnLimits::default().effective(Some(256));
        assert_eq!(e, Effective { total: 192, per_peer: 96, anonymous: 173, anonymous_per_peer: 96 });
    }

    #[test]
    fn configured_numbers_hold_when_fds_are_plenty() {
        let e = ConnLimits::default().effective(Some(1 << 20));
        assert_eq!(e, Effective { total: 10_000, per_peer: 5_000, anonymous: 9_000, anonymous_per_peer: 256 });
        assert_eq!(ConnLimits::default().effective(None).total, 10_000);
    }

    #[test]
    fn absurd_settings_still_leave_a_working_port() {
        let l = ConnLimits { max_connections: 0, max_connections_per_peer: 0, max_anonymous_per_peer: 0, reserved_for_identities_percent: 100, ..Default::default() };
        let e = l.effective(Some(10));
        assert!(e.total >= 2 && e.per_peer >= 1 && e.anonymous >= 1 && e.anonymous_per_peer >= 1, "{e:?}");
    }
}
