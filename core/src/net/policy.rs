//! What an outbound request may do, and the pure decisions that enforce it:
//! URL and scheme checks, private-address refusal, the `Host` header, and
//! whether a redirect is followed. No I/O here; [`super::http`] calls these at
//! each step.

use super::trust::Trust;
use std::net::IpAddr;
use std::time::Duration;

/// Which URL schemes a policy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schemes {
    /// `https://` only.
    Https,
    /// `https://`, or plain `http://` to a loopback host (`localhost`,
    /// 127.0.0.0/8, `::1`): local emulators and tests.
    HttpsOrLoopbackHttp,
    /// `https://` or `http://` to any host: only for endpoints the caller has
    /// already checked against an operator-configured allow-list.
    HttpsOrHttp,
    /// `http://` only: link-local metadata services, which have no TLS.
    Http,
}

/// Which destination addresses a policy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Every address the host resolves to must be public (see [`is_private`]).
    PublicOnly,
    /// Any address, loopback/private/link-local included.
    PrivateAllowed,
}

/// What happens on a 3xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// Never followed: the 3xx response is returned to the caller as it is.
    Returned,
    /// Followed when the target has the same scheme, host and port as the
    /// first URL, at most `max` times; any other redirect is an error.
    SameOrigin {
        /// Most redirects followed.
        max: usize,
    },
}

/// Everything an outbound request is allowed to do.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Accepted URL schemes.
    pub schemes: Schemes,
    /// Accepted destination addresses.
    pub network: Network,
    /// Redirect handling.
    pub redirects: Redirects,
    /// Largest response body read; a longer body is an error.
    pub max_body_bytes: usize,
    /// Deadline for the whole exchange (DNS, connect, TLS, redirects, body).
    pub timeout: Duration,
    /// Trust anchors for `https://` servers.
    pub trust: Trust,
}

/// Why a request is refused before (or instead of) touching the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The URL does not parse, has no host, or carries user info.
    #[error("invalid URL {url:?}: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The scheme is not one the policy accepts.
    #[error("URL {url:?} refused: {why}")]
    SchemeRefused {
        /// The URL.
        url: String,
        /// Which schemes are accepted.
        why: &'static str,
    },
    /// The host resolves to an address that is not globally reachable unicast
    /// (loopback, private, link-local, or another special-purpose range).
    #[error("{host} resolves to {ip}, a loopback/private/link-local or other special-purpose address")]
    PrivateAddress {
        /// Host.
        host: String,
        /// The refused address.
        ip: IpAddr,
    },
    /// A caller-supplied `Host` header names another server than the URL.
    #[error("Host header {given:?} does not name the request's server {expected:?}")]
    HostMismatch {
        /// Header value given.
        given: String,
        /// Authority of the URL.
        expected: String,
    },
}

/// A parsed, policy-checked request URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `true` for `https`.
    pub tls: bool,
    /// Host name or IP (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Default `Host` header value: host, plus `:port` when not the scheme default.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path_and_query: String,
}

impl Target {
    /// Parses `url` and checks its scheme against `schemes`.
    pub fn parse(url: &str, schemes: Schemes) -> Result<Self, PolicyError> {
        let bad = |why| PolicyError::BadUrl { url: url.to_string(), why };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(PolicyError::SchemeRefused { url: url.to_string(), why: scheme_rule(schemes) }),
        };
        scheme_allowed(schemes, tls, None).map_err(|why| PolicyError::SchemeRefused { url: url.to_string(), why })?;
        let auth = uri.authority().ok_or(bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("user info is not allowed"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        scheme_allowed(schemes, tls, Some(&host)).map_err(|why| PolicyError::SchemeRefused { url: url.to_string(), why })?;
        let default_port = if tls { 443 } else { 80 };
        let port = auth.port_u16().unwrap_or(default_port);
        let authority = if port == default_port { auth.host().to_string() } else { format!("{}:{port}", auth.host()) };
        let path_and_query = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        Ok(Self { tls, host, port, authority, path_and_query })
    }

    /// `scheme://host:port`, the port always written: equal origins compare equal.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

fn scheme_rule(schemes: Schemes) -> &'static str {
    match schemes {
        Schemes::Https => "scheme must be https",
        Schemes::HttpsOrLoopbackHttp => "scheme must be https (or http to loopback)",
        Schemes::HttpsOrHttp => "scheme must be https or http",
        Schemes::Http => "must be an http:// URL",
    }
}

/// Whether `schemes` accepts a URL with TLS (`tls`) to `host`. With `host`
/// unknown (`None`) only the scheme itself is judged.
pub fn scheme_allowed(schemes: Schemes, tls: bool, host: Option<&str>) -> Result<(), &'static str> {
    match (schemes, tls) {
        (Schemes::Https, false) | (Schemes::Http, true) => Err(scheme_rule(schemes)),
        (Schemes::HttpsOrLoopbackHttp, false) if host.is_some_and(|h| !is_loopback_host(h)) => {
            Err("plain http is only allowed to loopback (127.0.0.1, ::1, localhost)")
        }
        _ => Ok(()),
    }
}

/// `localhost` or a loopback IP literal.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// Whether `ip` must not be reached under [`Network::PublicOnly`]: anything
/// but a globally reachable unicast address (see [`is_public`]).
pub fn is_private(ip: IpAddr) -> bool {
    !is_public(ip)
}

/// Whether `ip` is a globally reachable unicast address. Refused: every
/// special-purpose range of RFC 6890 and the IANA special-purpose registries
/// (loopback, RFC 1918, CGNAT, link-local, documentation, benchmarking,
/// reserved, multicast ...), and for IPv6 everything outside global unicast
/// `2000::/3`. An IPv6 address that carries an IPv4 address (IPv4-mapped,
/// IPv4-compatible, IPv4-translated, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
/// is judged by that IPv4 address: `64:ff9b::a9fe:a9fe` reaches 169.254.169.254.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

/// IPv4 special-purpose blocks (RFC 6890 and its updates), as (network, prefix length).
const V4_SPECIAL: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),        // "this network"
    ([10, 0, 0, 0], 8),       // private
    ([100, 64, 0, 0], 10),    // shared address space (CGNAT)
    ([127, 0, 0, 0], 8),      // loopback
    ([169, 254, 0, 0], 16),   // link-local (cloud metadata services)
    ([172, 16, 0, 0], 12),    // private
    ([192, 0, 0, 0], 24),     // IETF protocol assignments
    ([192, 0, 2, 0], 24),     // documentation TEST-NET-1
    ([192, 88, 99, 0], 24),   // 6to4 relay anycast (deprecated)
    ([192, 168, 0, 0], 16),   // private
    ([198, 18, 0, 0], 15),    // benchmarking
    ([198, 51, 100, 0], 24),  // documentation TEST-NET-2
    ([203, 0, 113, 0], 24),   // documentation TEST-NET-3
    ([224, 0, 0, 0], 4),      // multicast
    ([240, 0, 0, 0], 4),      // reserved, and limited broadcast 255.255.255.255
];

fn in_v4(ip: std::net::Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    u32::from(ip) & mask == u32::from_be_bytes(net) & mask
}

fn is_public_v4(ip: std::net::Ipv4Addr) -> bool {
    !V4_SPECIAL.iter().any(|(net, len)| in_v4(ip, *net, *len))
}

/// IPv6 special-purpose blocks inside `2000::/3` (everything outside it is refused anyway).
const V6_SPECIAL: &[([u16; 8], u8)] = &[
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),     // IETF protocol assignments (Teredo, benchmarking, ORCHID ...)
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation (RFC 9637)
];

fn in_v6(ip: std::net::Ipv6Addr, net: [u16; 8], len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
    u128::from(ip) & mask == u128::from(std::net::Ipv6Addr::from(net)) & mask
}

fn is_public_v6(ip: std::net::Ipv6Addr) -> bool {
    in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) && !V6_SPECIAL.iter().any(|(net, len)| in_v6(ip, *net, *len))
}

/// The IPv4 address an IPv6 address carries and would reach: IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d` (not `::` or `::1`), NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`.
pub fn embedded_ipv4(ip: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = ip.segments();
    let low = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(std::net::Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8)),
        _ => None,
    }
}

/// Checks every address `host` resolved to. All must pass: otherwise a name
/// with one public and one private record would reach either.
pub fn check_addresses(host: &str, addrs: &[IpAddr], network: Network) -> Result<(), PolicyError> {
    if network == Network::PrivateAllowed {
        return Ok(());
    }
    match addrs.iter().find(|ip| is_private(**ip)) {
        Some(ip) => Err(PolicyError::PrivateAddress { host: host.to_string(), ip: *ip }),
        None => Ok(()),
    }
}

/// The `Host` header to send: the URL's authority, or the caller's value when
/// it names the same host and port (a signed request must carry the exact
/// header it was signed with, e.g. `sts.amazonaws.com:443`).
pub fn host_header(target: &Target, given: Option<&str>) -> Result<String, PolicyError> {
    let Some(given) = given else { return Ok(target.authority.clone()) };
    let mismatch = || PolicyError::HostMismatch { given: given.to_string(), expected: target.authority.clone() };
    let auth: http::uri::Authority = given.parse().map_err(|_| mismatch())?;
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    let port = auth.port_u16().unwrap_or(if target.tls { 443 } else { 80 });
    if given.contains('@') || !host.eq_ignore_ascii_case(&target.host) || port != target.port {
        return Err(mismatch());
    }
    Ok(given.to_string())
}

/// Where a redirect from a request that started at `home` to `location` goes,
/// under [`Redirects::SameOrigin`]: the next URL and target, or `None` when it
/// must not be followed (another origin, a scheme the policy refuses, or an
/// unusable `Location`). A path-absolute `Location` (`/x`) stays on `home`.
pub fn same_origin_hop(home: &Target, location: &str, schemes: Schemes) -> Option<(String, Target)> {
    let next = if location.starts_with('/') && !location.starts_with("//") {
        format!("{}{location}", home.origin())
    } else {
        location.to_string()
    };
    let t = Target::parse(&next, schemes).ok()?;
    (t.origin() == home.origin()).then_some((next, t))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn https(url: &str) -> Target {
        Target::parse(url, Schemes::Https).unwrap()
    }

    #[test]
    fn metadata_private_and_loopback_addresses_are_private() {
        for ip in ["169.254.169.254", "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "::1", "::", "fd00::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254"] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["140.82.112.3", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    /// Issue 11.10: each of these reaches a metadata service, loopback or a
    /// private network through an IPv6 form that embeds the IPv4 address.
    #[test]
    fn ipv6_forms_embedding_a_private_ipv4_address_are_refused() {
        for ip in [
            "64:ff9b::a9fe:a9fe",    // NAT64 -> 169.254.169.254
            "64:ff9b::7f00:1",       // NAT64 -> 127.0.0.1
            "2002:a9fe:a9fe::",      // 6to4 -> 169.254.169.254
            "2002:0a00:0001::1",     // 6to4 -> 10.0.0.1
            "2002:c0a8:0101:5::9",   // 6to4 -> 192.168.1.1
            "::a9fe:a9fe",           // IPv4-compatible -> 169.254.169.254
            "::127.0.0.1",           // IPv4-compatible -> 127.0.0.1
            "::ffff:0:a9fe:a9fe",    // IPv4-translated -> 169.254.169.254
            "::ffff:198.18.0.1",     // IPv4-mapped benchmarking
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_private(ip), "{ip}");
            assert!(check_addresses("evil.example", &[ip], Network::PublicOnly).is_err(), "{ip}");
        }
        // The same forms around a public IPv4 address stay public, judged by that address.
        for ip in ["64:ff9b::808:808", "2002:0808:0808::1", "::ffff:8.8.8.8"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        assert_eq!(embedded_ipv4("2002:a9fe:a9fe::".parse().unwrap()), Some([169, 254, 169, 254].into()));
        assert_eq!(embedded_ipv4("::1".parse().unwrap()), None);
    }

    /// Issue 11.10: RFC 6890 special-purpose ranges other than RFC 1918.
    #[test]
    fn special_purpose_ranges_of_rfc_6890_are_refused() {
        for ip in [
            "198.18.0.1", "198.19.255.254", // benchmarking 198.18.0.0/15
            "192.0.0.8", "192.0.2.1", "198.51.100.7", "203.0.113.9", "192.88.99.1", // IETF, TEST-NETs, 6to4 relay
            "240.0.0.1", "255.255.255.254", "0.1.2.3", // reserved, "this network"
            "100::1", "64:ff9b:1::1", "2001::1", "2001:2::1", "2001:db8::1", "3fff::1", "fec0::1", "5f00::1", "4000::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.20.0.1", "198.17.255.255", "192.0.3.1", "2001:4860:4860::8888", "2a00:1450::1", "2001:200::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn one_private_record_among_public_ones_refuses_the_host() {
        let addrs: Vec<IpAddr> = vec!["140.82.112.3".parse().unwrap(), "10.0.0.7".parse().unwrap()];
        let err = check_addresses("mixed.example", &addrs, Network::PublicOnly).unwrap_err();
        assert_eq!(err, PolicyError::PrivateAddress { host: "mixed.example".into(), ip: "10.0.0.7".parse().unwrap() });
        assert!(check_addresses("mixed.example", &addrs, Network::PrivateAllowed).is_ok());
        assert!(check_addresses("public.example", &addrs[..1], Network::PublicOnly).is_ok());
    }

    #[test]
    fn https_only_policy_refuses_every_other_scheme() {
        for url in ["http://example.com/x", "ftp://example.com/", "http://127.0.0.1/"] {
            assert!(matches!(Target::parse(url, Schemes::Https), Err(PolicyError::SchemeRefused { .. })), "{url}");
        }
        assert!(Target::parse("file:///etc/passwd", Schemes::Https).is_err());
        let t = https("https://[::1]:8443/a?b=c");
        assert_eq!((t.host.as_str(), t.port, t.path_and_query.as_str(), t.authority.as_str()), ("::1", 8443, "/a?b=c", "[::1]:8443"));
    }

    #[test]
    fn plain_http_is_only_for_loopback_under_the_loopback_rule() {
        let p = Schemes::HttpsOrLoopbackHttp;
        for url in ["http://127.0.0.1:5000/", "http://[::1]:5000/", "http://localhost/", "https://sts.amazonaws.com/"] {
            assert!(Target::parse(url, p).is_ok(), "{url}");
        }
        for url in ["http://sts.amazonaws.com/", "http://169.254.169.254/", "ftp://127.0.0.1/"] {
            assert!(matches!(Target::parse(url, p), Err(PolicyError::SchemeRefused { .. })), "{url}");
        }
    }

    #[test]
    fn metadata_rule_accepts_plain_http_anywhere_and_refuses_https() {
        assert!(Target::parse("http://169.254.169.254/metadata", Schemes::Http).is_ok());
        assert!(Target::parse("https://169.254.169.254/metadata", Schemes::Http).is_err());
        assert!(Target::parse("http://sts.internal:8080/", Schemes::HttpsOrHttp).is_ok());
    }

    #[test]
    fn user_info_and_missing_hosts_are_bad_urls() {
        for url in ["https://user@example.com/", "https://evil@sts.amazonaws.com/", "not a url", "/relative"] {
            assert!(Target::parse(url, Schemes::HttpsOrHttp).is_err(), "{url}");
        }
        assert!(matches!(Target::parse("https://user@example.com/", Schemes::Https), Err(PolicyError::BadUrl { .. })));
    }

    #[test]
    fn authority_keeps_only_a_non_default_port() {
        assert_eq!(https("https://example.com:443/x").authority, "example.com");
        assert_eq!(https("https://example.com:8443").authority, "example.com:8443");
        assert_eq!(https("https://example.com").path_and_query, "/");
        assert_eq!(Target::parse("http://127.0.0.1:80/", Schemes::Http).unwrap().authority, "127.0.0.1");
    }

    #[test]
    fn host_header_is_the_authority_or_a_caller_value_naming_the_same_server() {
        let t = https("https://sts.amazonaws.com/");
        assert_eq!(host_header(&t, None).unwrap(), "sts.amazonaws.com");
        assert_eq!(host_header(&t, Some("sts.amazonaws.com:443")).unwrap(), "sts.amazonaws.com:443");
        assert_eq!(host_header(&t, Some("STS.amazonaws.com")).unwrap(), "STS.amazonaws.com");
        for other in ["evil.example", "sts.amazonaws.com:8443", "x@sts.amazonaws.com", "", "a b"] {
            assert!(matches!(host_header(&t, Some(other)), Err(PolicyError::HostMismatch { .. })), "{other:?}");
        }
        let v6 = https("https://[::1]:8443/");
        assert_eq!(host_header(&v6, Some("[::1]:8443")).unwrap(), "[::1]:8443");
    }

    #[test]
    fn redirects_are_followed_only_within_the_origin() {
        let home = https("https://issuer.example/.well-known/openid-configuration");
        let (url, t) = same_origin_hop(&home, "/.well-known/jwks", Schemes::Https).unwrap();
        assert_eq!((url.as_str(), t.path_and_query.as_str()), ("https://issuer.example:443/.well-known/jwks", "/.well-known/jwks"));
        assert!(same_origin_hop(&home, "https://issuer.example:443/keys", Schemes::Https).is_some());
        for away in [
            "https://169.254.169.254/latest/meta-data/",
            "//evil.example/keys",
            "https://issuer.example:8443/keys",
            "http://issuer.example/keys",
            "https://user@issuer.example/keys",
            "keys",
            "",
        ] {
            assert!(same_origin_hop(&home, away, Schemes::Https).is_none(), "{away:?}");
        }
    }
}
