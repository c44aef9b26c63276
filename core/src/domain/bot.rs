//! Bots: non-human identities that join and obtain SVIDs.

use super::{DomainError, Name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bot {
    /// Name; the bot identity is `spiffe://<td>/sigil/bot/<name>`.
    pub name: Name,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<Name>,
    /// Traits usable in templates as `bot.traits.KEY` (first value).
    #[serde(default)]
    pub traits: BTreeMap<String, Vec<String>>,
    /// Longest identity lifetime in seconds (0 = broker default).
    #[serde(default)]
    pub max_session_ttl_seconds: i64,
    /// Store revision.
    #[serde(default)]
    pub revision: i64,
    /// Committed identity generation (output only).
    #[serde(default)]
    pub generation: i64,
    /// Locked after a stale identity generation was presented (output only).
    #[serde(default)]
    pub locked: bool,
}

impl Bot {
    /// Checks the bot's contents.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.max_session_ttl_seconds < 0 {
            return Err(DomainError::invalid("max_session_ttl_seconds", "must not be negative"));
        }
        for key in self.traits.keys() {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
                return Err(DomainError::invalid(format!("traits.{key}"), "trait keys use letters, digits, '_', '-', '.'"));
            }
        }
        Ok(())
    }

    /// The attributes this bot contributes to templates and conditions.
    pub fn attributes(&self) -> super::Attributes {
        let mut a = super::Attributes::new();
        a.insert("bot.name".into(), self.name.to_string());
        for (k, v) in &self.traits {
            if let Some(first) = v.first() {
                a.insert(format!("bot.traits.{k}"), first.clone());
            }
        }
        a
    }
}

/// The role names a stored bot spec (JSON text) lists, in its order: what a
/// store reads together with the bot, in one snapshot, to authenticate a
/// caller. Only `roles` is read. Text that does not parse is an error.
pub fn role_names(spec: &str) -> Result<Vec<String>, serde_json::Error> {
    #[derive(Deserialize)]
    struct RoleNames {
        #[serde(default)]
        roles: Vec<String>,
    }
    serde_json::from_str::<RoleNames>(spec).map(|r| r.roles)
}

#[cfg(test)]
mod role_names_tests {
    #![allow(clippy::unwrap_used)]
    use super::role_names;

    #[test]
    fn a_bot_spec_names_its_roles_in_order_and_corrupt_text_is_an_error() {
        assert_eq!(role_names(r#"{"name":"b","roles":["r2","r1"],"traits":{}}"#).unwrap(), ["r2", "r1"]);
        assert!(role_names(r#"{"name":"b"}"#).unwrap().is_empty());
        for corrupt in ["{not json", "null", r#"{"roles":"r1"}"#, ""] {
            assert!(role_names(corrupt).is_err(), "{corrupt}");
        }
    }
}
