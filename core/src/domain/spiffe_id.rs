//! SPIFFE IDs and trust domains as validated newtypes: an instance is always valid.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// Missing `spiffe://` scheme.
    #[error("SPIFFE ID must start with spiffe:// (got {0:?})")]
    Scheme(String),
    /// The trust domain is empty or uses characters other than a-z 0-9 . - _.
    #[error("invalid trust domain {0:?}: use lowercase letters, digits, '.', '-', '_'")]
    TrustDomain(String),
    /// A path segment is empty, `.`/`..`, or uses characters other than A-Z a-z 0-9 . - _.
    #[error("invalid SPIFFE ID path {0:?}: segments use letters, digits, '.', '-', '_', none empty, '.' or '..'")]
    Path(String),
    /// Longer than 2048 bytes.
    #[error("SPIFFE ID longer than 2048 bytes")]
    TooLong,
    /// Query or fragment present.
    #[error("SPIFFE ID must not have a query, fragment, port or user info")]
    Extra,
}

/// A SPIFFE trust domain, e.g. `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself (`spiffe://td`).
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(SpiffeIdError::TrustDomain(s.to_string()))
        }
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = SpiffeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TrustDomain> for String {
    fn from(td: TrustDomain) -> String {
        td.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID with a non-empty path, e.g. `spiffe://example.org/svc/web`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    path: String,
}

/// Checks a SPIFFE ID path (`/a/b`): non-empty segments of the allowed characters.
pub fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    let bad = || SpiffeIdError::Path(path.to_string());
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    for seg in rest.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

impl SpiffeId {
    /// Builds `spiffe://td/path` from a trust domain and a path starting with `/`.
    pub fn new(trust_domain: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        validate_path(path)?;
        let id = Self { trust_domain: trust_domain.clone(), path: path.to_string() };
        if id.to_string().len() > 2048 {
            return Err(SpiffeIdError::TooLong);
        }
        Ok(id)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 2048 {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_string()))?;
        if rest.contains(['?', '#', '@', ':']) {
            return Err(SpiffeIdError::Extra);
        }
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let td: TrustDomain = td.parse()?;
        SpiffeId::new(&td, path)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> String {
        id.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_id_round_trips() {
        let id: SpiffeId = "spiffe://example.org/svc/web-1".parse().unwrap();
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.path(), "/svc/web-1");
        assert_eq!(id.to_string(), "spiffe://example.org/svc/web-1");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "http://example.org/a",
            "spiffe://Example.org/a",
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://example.org/a/",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org:443/a",
            "spiffe://example.org/a b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ids_longer_than_2048_bytes_are_rejected() {
        let long = format!("spiffe://example.org/{}", "a".repeat(2100));
        assert_eq!(long.parse::<SpiffeId>(), Err(SpiffeIdError::TooLong));
    }
}
