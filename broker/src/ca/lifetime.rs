//! Credential lifetimes, decided in one place: the requested TTL (or default),
//! capped by policy and by the issuer's own NotAfter; NotBefore backdated for
//! clock skew.

/// Seconds NotBefore is backdated.
pub const BACKDATE_SECS: i64 = 10;

/// A validity window, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// NotBefore (or JWT iat).
    pub not_before: i64,
    /// NotAfter (or JWT exp).
    pub not_after: i64,
}

/// Why no validity window can be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LifetimeError {
    /// A negative TTL was requested.
    #[error("ttl must not be negative")]
    Negative,
    /// The issuing CA has expired.
    #[error("the issuing CA expired; rotate the CA")]
    IssuerExpired,
}

/// Computes the validity of a credential issued at `now`.
pub fn validity(
    now: i64,
    requested: i64,
    default: i64,
    cap: i64,
    issuer_not_after: i64,
) -> Result<Validity, LifetimeError> {
    if requested < 0 {
        return Err(LifetimeError::Negative);
    }
    let ttl = if requested == 0 { default } else { requested };
    let ttl = if cap > 0 { ttl.min(cap) } else { ttl };
    let not_after = (now + ttl).min(issuer_not_after);
    if not_after <= now {
        return Err(LifetimeError::IssuerExpired);
    }
    Ok(Validity { not_before: now - BACKDATE_SECS, not_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_applies_when_nothing_requested() {
        assert_eq!(validity(1000, 0, 300, 0, 10_000), Ok(Validity { not_before: 990, not_after: 1300 }));
    }

    #[test]
    fn cap_limits_requested_ttl() {
        assert_eq!(validity(1000, 5000, 300, 600, 10_000).unwrap().not_after, 1600);
    }

    #[test]
    fn issuer_not_after_caps_everything() {
        assert_eq!(validity(1000, 5000, 300, 0, 1200).unwrap().not_after, 1200);
        assert_eq!(validity(1000, 5000, 300, 0, 1000), Err(LifetimeError::IssuerExpired));
    }
}
