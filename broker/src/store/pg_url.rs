//! The store URL's TLS parameters, with libpq's names and meanings, and the
//! policy deciding what a connection demands of the server. Pure: no files,
//! no sockets (`pg_tls` reads the files and speaks TLS).
//!
//! Mistakes this prevents:
//! - a URL to a remote database without `sslmode` sending the password and
//!   every sealed CA key in the clear (the default for a non-loopback host is
//!   `verify-full`, not libpq's `prefer`);
//! - `verify-ca` trusting every public CA (it needs `sslrootcert`: a chain
//!   check without a name check is only meaningful against a private CA);
//! - a mode asking for TLS on a Unix socket, where PostgreSQL never offers it,
//!   silently meaning nothing when mixed with TCP hosts (refused).
//!
//! tokio-postgres knows neither the verify modes nor `sslrootcert`, `sslcert`,
//! `sslkey`: they are taken out of the URL here and the rest is handed over.

use std::net::IpAddr;
use std::path::PathBuf;

/// Why a store URL's TLS parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgUrlError {
    /// A parameter has a value libpq does not define, or appears twice.
    #[error("store URL parameter {name}: {why}")]
    BadParameter {
        /// The parameter name.
        name: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The parameters contradict each other.
    #[error("store URL: {0}")]
    Contradiction(String),
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, else plaintext.
    Prefer,
    /// TLS or no connection; the server's certificate is not checked unless
    /// `sslrootcert` is given (then as `verify-ca`).
    Require,
    /// TLS; the server's chain must lead to `sslrootcert`.
    VerifyCa,
    /// TLS; chain to the roots and the certificate names the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, PgUrlError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            // libpq's `allow` tries plaintext first: never what a broker wants.
            other => {
                return Err(PgUrlError::BadParameter {
                    name: "sslmode",
                    why: format!("{other:?} is not one of disable, prefer, require, verify-ca, verify-full"),
                })
            }
        })
    }

    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where the trust anchors for the server's certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The CA certificates (PEM) in this file.
    File(PathBuf),
    /// The public Web PKI roots (`sslrootcert=system`, or `verify-full`
    /// without `sslrootcert`).
    Public,
}

/// What a TLS connection checks of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Encryption only: any certificate is accepted (libpq's `require` and
    /// `prefer` without a root certificate).
    Nothing,
    /// The chain leads to these roots; any name.
    Chain(RootCerts),
    /// The chain leads to these roots and the certificate names the host.
    ChainAndName(RootCerts),
}

/// The TLS part of a store URL, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPolicy {
    /// The effective mode (the default filled in).
    pub mode: SslMode,
    /// Whether `sslmode` came from the URL.
    pub explicit: bool,
    /// What the handshake checks (meaningless for `Disable`).
    pub verify: Verify,
    /// Client certificate chain and key files (`sslcert`, `sslkey`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A store URL split into what tokio-postgres reads and the TLS parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitUrl {
    /// The URL without `sslmode`, `sslrootcert`, `sslcert`, `sslkey`.
    pub rest: String,
    /// `sslmode` as written.
    pub sslmode: Option<SslMode>,
    /// `sslrootcert` as written (`system` included).
    pub sslrootcert: Option<String>,
    /// `sslcert` as written.
    pub sslcert: Option<String>,
    /// `sslkey` as written.
    pub sslkey: Option<String>,
}

/// Takes the TLS parameters out of `url`'s query (percent-decoded, as libpq
/// does); every other parameter stays, byte for byte.
pub fn split(url: &str) -> Result<SplitUrl, PgUrlError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut out = SplitUrl { rest: base.to_string(), sslmode: None, sslrootcert: None, sslcert: None, sslkey: None };
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let name: &'static str = match key {
            "sslmode" => "sslmode",
            "sslrootcert" => "sslrootcert",
            "sslcert" => "sslcert",
            "sslkey" => "sslkey",
            _ => {
                kept.push(pair);
                continue;
            }
        };
        let value = percent_decode(raw).ok_or_else(|| PgUrlError::BadParameter { name, why: "bad percent-encoding".into() })?;
        if value.is_empty() {
            return Err(PgUrlError::BadParameter { name, why: "empty value".into() });
        }
        let slot = match name {
            "sslmode" => {
                if out.sslmode.replace(SslMode::parse(&value)?).is_some() {
                    return Err(PgUrlError::BadParameter { name, why: "given twice".into() });
                }
                continue;
            }
            "sslrootcert" => &mut out.sslrootcert,
            "sslcert" => &mut out.sslcert,
            _ => &mut out.sslkey,
        };
        if slot.replace(value).is_some() {
            return Err(PgUrlError::BadParameter { name, why: "given twice".into() });
        }
    }
    if !kept.is_empty() {
        out.rest = format!("{base}?{}", kept.join("&"));
    }
    Ok(out)
}

/// `%XX` escapes decoded (UTF-8 required); `+` stays `+`, as in libpq.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One host of the URL, as far as the policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP host name or address.
    Tcp(String),
    /// A Unix-socket directory.
    Unix,
}

impl Endpoint {
    fn is_loopback(&self) -> bool {
        match self {
            Self::Unix => true,
            Self::Tcp(h) => h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        }
    }
}

/// Decides the TLS policy of a URL whose hosts (and `hostaddr`s) are
/// `endpoints`.
///
/// Default `sslmode`: `prefer` when every endpoint is loopback or a Unix
/// socket (libpq's default), else `verify-full`: a database across a network
/// is reached over TLS to an authenticated server or not at all.
/// A URL naming only Unix sockets never uses TLS (PostgreSQL offers none
/// there; libpq ignores `sslmode` for them too).
pub fn policy(split: &SplitUrl, endpoints: &[Endpoint]) -> Result<TlsPolicy, PgUrlError> {
    let all_unix = !endpoints.is_empty() && endpoints.iter().all(|e| *e == Endpoint::Unix);
    let loopback = endpoints.iter().all(Endpoint::is_loopback);
    let mode = match (split.sslmode, all_unix) {
        (_, true) => SslMode::Disable,
        (Some(m), false) => m,
        (None, false) if loopback => SslMode::Prefer,
        (None, false) => SslMode::VerifyFull,
    };
    if mode != SslMode::Disable && endpoints.contains(&Endpoint::Unix) {
        return Err(PgUrlError::Contradiction(format!(
            "sslmode={} cannot apply to the Unix-socket host in the list (PostgreSQL offers no TLS there): list TCP hosts only, or sockets only",
            mode.as_str()
        )));
    }
    let roots = match split.sslrootcert.as_deref() {
        None => None,
        Some("system") => Some(RootCerts::Public),
        Some(path) => Some(RootCerts::File(PathBuf::from(path))),
    };
    // libpq 16: `sslrootcert=system` demands verify-full (any public CA would pass a chain-only check).
    if roots == Some(RootCerts::Public) && split.sslmode.is_some_and(|m| m != SslMode::VerifyFull) {
        return Err(PgUrlError::Contradiction("sslrootcert=system needs sslmode=verify-full (a public CA vouches for names, not for your database)".into()));
    }
    let verify = match (mode, roots) {
        (SslMode::VerifyFull, r) => Verify::ChainAndName(r.unwrap_or(RootCerts::Public)),
        (SslMode::VerifyCa, Some(RootCerts::File(p))) => Verify::Chain(RootCerts::File(p)),
        (SslMode::VerifyCa, _) => {
            return Err(PgUrlError::Contradiction(
                "sslmode=verify-ca needs sslrootcert=PATH (the CA that issued the server's certificate); for a publicly issued certificate use verify-full".into(),
            ))
        }
        // libpq: a root certificate given to require/prefer makes them check the chain, as verify-ca.
        (SslMode::Require | SslMode::Prefer, Some(r)) => Verify::Chain(r),
        (_, _) => Verify::Nothing,
    };
    let client_cert = match (&split.sslcert, &split.sslkey) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) => None,
        _ => return Err(PgUrlError::Contradiction("sslcert and sslkey go together: give both files or neither".into())),
    };
    if client_cert.is_some() && mode == SslMode::Disable {
        return Err(PgUrlError::Contradiction("sslcert/sslkey need TLS, but sslmode is disable (or the hosts are Unix sockets)".into()));
    }
    Ok(TlsPolicy { mode, explicit: split.sslmode.is_some(), verify, client_cert })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tcp(h: &str) -> Endpoint {
        Endpoint::Tcp(h.into())
    }

    fn decide(url: &str, hosts: &[Endpoint]) -> Result<TlsPolicy, PgUrlError> {
        policy(&split(url)?, hosts)
    }

    #[test]
    fn tls_parameters_are_taken_out_and_the_rest_is_kept_byte_for_byte() {
        let s = split("postgres://u:p%40@db:5432/x?application_name=a%20b&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5").unwrap();
        assert_eq!(s.rest, "postgres://u:p%40@db:5432/x?application_name=a%20b&connect_timeout=5");
        assert_eq!(s.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(split("postgres://db/x?sslmode=disable").unwrap().rest, "postgres://db/x");
        assert_eq!(split("postgres://db/x").unwrap().rest, "postgres://db/x");
    }

    #[test]
    fn unknown_modes_repeats_and_bad_escapes_are_refused() {
        for url in [
            "postgres://db/x?sslmode=allow",
            "postgres://db/x?sslmode=VERIFY-FULL",
            "postgres://db/x?sslmode=require&sslmode=disable",
            "postgres://db/x?sslrootcert=a&sslrootcert=b",
            "postgres://db/x?sslkey=%zz",
            "postgres://db/x?sslcert=",
        ] {
            assert!(matches!(split(url), Err(PgUrlError::BadParameter { .. })), "{url}");
        }
    }

    #[test]
    fn a_remote_host_without_sslmode_gets_verify_full_against_the_public_roots() {
        let p = decide("postgres://db.example/x", &[tcp("db.example")]).unwrap();
        assert_eq!((p.mode, p.explicit), (SslMode::VerifyFull, false));
        assert_eq!(p.verify, Verify::ChainAndName(RootCerts::Public));
        // One remote host among loopback ones is enough.
        assert_eq!(decide("postgres://x", &[tcp("127.0.0.1"), tcp("10.0.0.5")]).unwrap().mode, SslMode::VerifyFull);
    }

    #[test]
    fn loopback_without_sslmode_prefers_tls_and_unix_sockets_never_use_it() {
        for h in ["127.0.0.1", "::1", "localhost", "127.9.9.9"] {
            assert_eq!(decide("postgres://x", &[tcp(h)]).unwrap().mode, SslMode::Prefer, "{h}");
        }
        assert_eq!(decide("postgres://x?sslmode=verify-full", &[Endpoint::Unix]).unwrap().mode, SslMode::Disable);
        let e = decide("postgres://x?sslmode=require", &[Endpoint::Unix, tcp("db")]).unwrap_err();
        assert!(e.to_string().contains("Unix-socket"), "{e}");
    }

    #[test]
    fn verify_ca_needs_a_private_root_and_system_roots_need_verify_full() {
        assert!(decide("postgres://x?sslmode=verify-ca", &[tcp("db")]).unwrap_err().to_string().contains("sslrootcert"));
        assert!(decide("postgres://x?sslmode=verify-ca&sslrootcert=system", &[tcp("db")]).is_err());
        assert!(decide("postgres://x?sslmode=require&sslrootcert=system", &[tcp("db")]).is_err());
        let p = decide("postgres://x?sslrootcert=system", &[tcp("db")]).unwrap();
        assert_eq!(p.verify, Verify::ChainAndName(RootCerts::Public));
        let p = decide("postgres://x?sslmode=verify-ca&sslrootcert=/ca.pem", &[tcp("db")]).unwrap();
        assert_eq!(p.verify, Verify::Chain(RootCerts::File("/ca.pem".into())));
    }

    #[test]
    fn require_checks_nothing_unless_given_a_root_certificate_as_libpq_does() {
        assert_eq!(decide("postgres://x?sslmode=require", &[tcp("db")]).unwrap().verify, Verify::Nothing);
        let p = decide("postgres://x?sslmode=require&sslrootcert=/ca.pem", &[tcp("db")]).unwrap();
        assert_eq!(p.verify, Verify::Chain(RootCerts::File("/ca.pem".into())));
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_tls() {
        assert!(decide("postgres://x?sslmode=verify-full&sslcert=/c.pem", &[tcp("db")]).is_err());
        assert!(decide("postgres://x?sslmode=disable&sslcert=/c.pem&sslkey=/k.pem", &[tcp("db")]).is_err());
        let p = decide("postgres://x?sslmode=verify-full&sslcert=/c.pem&sslkey=/k.pem", &[tcp("db")]).unwrap();
        assert_eq!(p.client_cert, Some(("/c.pem".into(), "/k.pem".into())));
    }
}
