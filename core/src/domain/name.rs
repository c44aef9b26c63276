//! Resource names: the identifier of roles, bots, join tokens and workload identities.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {0:?}: use 1-63 characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit")]
pub struct NameError(pub String);

/// A validated resource name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(NameError(s.to_string()))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_identifiers() {
        assert!(Name::parse("ci-bot_1.a").is_ok());
        for bad in ["", "-a", "A", "a b", "a/b", &"a".repeat(64)] {
            assert!(Name::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
