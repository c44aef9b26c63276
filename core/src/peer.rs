//! Who is on the other end of a connection, for per-peer limits.
//!
//! Limits that must hold against unauthenticated callers (connections, join
//! challenges, audited refusals) count per [`PeerKey`]: the caller's IPv4
//! address, or its IPv6 /64 (one host usually owns a whole /64, so counting
//! single IPv6 addresses would give it 2^64 budgets).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// The unit per-peer limits count in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKey {
    /// An IPv4 address (IPv4-mapped IPv6 addresses count as IPv4).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
    /// No address known: calls made in process, not over the network.
    Local,
}

impl PeerKey {
    /// The key of a peer address; `None` is [`PeerKey::Local`].
    pub fn of(addr: Option<IpAddr>) -> Self {
        match addr {
            None => Self::Local,
            Some(IpAddr::V4(a)) => Self::V4(a.octets()),
            Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => Self::V6Prefix((u128::from(a) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(o) => write!(f, "{}.{}.{}.{}", o[0], o[1], o[2], o[3]),
            Self::V6Prefix(p) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*p) << 64)),
            Self::Local => f.write_str("local"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> PeerKey {
        PeerKey::of(Some(s.parse().unwrap()))
    }

    #[test]
    fn one_ipv6_host_counts_once_across_its_slash_64() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(PeerKey::of(None).to_string(), "local");
    }
}
