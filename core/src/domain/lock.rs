//! Locks: an operator's "stop this now" for a bot, one bot instance, a join
//! token, or the SVIDs of a SPIFFE ID pattern.
//!
//! Threat model: a bot's credential (its identity file, a join token, a
//! workload's key) is suspected stolen. Deleting the bot or the token loses
//! the audit trail and the configuration; waiting for expiry leaves an hour of
//! use. A lock refuses, from the next request on, what its target would do:
//!
//! | target         | refused                                                     |
//! |----------------|-------------------------------------------------------------|
//! | `bot`          | joins as the bot, and every authenticated request of any of its instances (renewal, issuance, heartbeat, admin calls), on connections opened before the lock too |
//! | `bot_instance` | every authenticated request of that one instance (its renewal first) |
//! | `join_token`   | joins (and `BeginJoin`) with that token                     |
//! | `spiffe_id`    | issuance of an SVID whose path matches the pattern (same syntax as a role's `spiffe_ids`, no templates) |
//!
//! Mistakes this module prevents: a lock that silently locks nothing (every
//! target is validated: exactly one, a valid name or pattern), a lock that
//! never ends by accident (an expiry in the past is refused, a lock past its
//! expiry no longer applies, judged at each read with the caller's clock), a
//! reason that floods logs (bounded), and a matcher whose cost grows with the
//! number of locks for bots, instances and tokens (hash lookups; only
//! patterns are scanned, and their number is bounded by [`MAX_LOCKS`]).
//!
//! Pure: no I/O, time comes in as an argument. The broker keeps one
//! [`LockSet`] per replica, rebuilt when the store changes.

use super::{glob, role, DomainError, Name};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Longest lock reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most locks stored at once (expired ones count until deleted): keeps the
/// per-replica lock set, rebuilt on every store change, small.
pub const MAX_LOCKS: usize = 10_000;
/// Longest bot instance id a lock may name (instance ids are 32 hex digits).
pub const MAX_INSTANCE_ID_BYTES: usize = 128;

/// What a lock stops: exactly one thing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LockTarget {
    /// Every instance of this bot, and joins as it.
    Bot(Name),
    /// One bot instance, by id.
    BotInstance(String),
    /// Joins with this join token.
    JoinToken(Name),
    /// SVIDs whose SPIFFE ID path matches this pattern.
    SpiffeId(String),
}

impl LockTarget {
    /// The target's kind as the API names it (`bot`, `bot_instance`,
    /// `join_token`, `spiffe_id`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bot(_) => "bot",
            Self::BotInstance(_) => "bot_instance",
            Self::JoinToken(_) => "join_token",
            Self::SpiffeId(_) => "spiffe_id",
        }
    }

    /// The locked bot, instance id, token name or pattern.
    pub fn value(&self) -> &str {
        match self {
            Self::Bot(n) | Self::JoinToken(n) => n.as_str(),
            Self::BotInstance(s) | Self::SpiffeId(s) => s,
        }
    }

    /// Builds a target from the four optional fields of the wire form:
    /// exactly one must be non-empty. Errors name the field.
    pub fn from_fields(bot: &str, bot_instance: &str, join_token: &str, spiffe_id: &str) -> Result<Self, DomainError> {
        let set: Vec<&str> = [("bot", bot), ("bot_instance", bot_instance), ("join_token", join_token), ("spiffe_id", spiffe_id)]
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| *k)
            .collect();
        let parse_name = |field: &str, v: &str| Name::parse(v).map_err(|e| DomainError::invalid(format!("target.{field}"), e.to_string()));
        let t = match set.as_slice() {
            ["bot"] => Self::Bot(parse_name("bot", bot)?),
            ["bot_instance"] => Self::BotInstance(bot_instance.to_string()),
            ["join_token"] => Self::JoinToken(parse_name("join_token", join_token)?),
            ["spiffe_id"] => Self::SpiffeId(spiffe_id.to_string()),
            [] => return Err(DomainError::invalid("target", "name what to lock: one of bot, bot_instance, join_token, spiffe_id")),
            many => return Err(DomainError::invalid("target", format!("a lock has exactly one target; got {}", many.join(", ")))),
        };
        t.validate()?;
        Ok(t)
    }

    /// Checks the target's value.
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            Self::Bot(_) | Self::JoinToken(_) => Ok(()),
            Self::BotInstance(id) => {
                let ok = !id.is_empty() && id.len() <= MAX_INSTANCE_ID_BYTES && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
                if ok {
                    Ok(())
                } else {
                    Err(DomainError::invalid("target.bot_instance", format!("{id:?} is not a bot instance id (see `sigil bot instance list`)")))
                }
            }
            Self::SpiffeId(p) => {
                role::check_path_pattern(p).map_err(|m| DomainError::invalid("target.spiffe_id", m))?;
                if p.contains("{{") || p.contains("}}") {
                    return Err(DomainError::invalid("target.spiffe_id", format!("{p:?}: a lock pattern has no templates; use * or **")));
                }
                Ok(())
            }
        }
    }
}

/// A lock as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Name.
    pub name: Name,
    /// What it stops.
    pub target: LockTarget,
    /// Why: for operators (the audit log, `sigil lock list`), never told to
    /// the locked caller.
    #[serde(default)]
    pub reason: String,
    /// Expiry, Unix seconds; 0 = until deleted.
    #[serde(default)]
    pub expires_at: i64,
    /// Store revision (0 before creation).
    #[serde(default)]
    pub revision: i64,
    /// The bot that created it (set by the broker).
    #[serde(default)]
    pub created_by: String,
    /// When it was created, Unix seconds (set by the broker).
    #[serde(default)]
    pub created_at: i64,
}

impl Lock {
    /// Checks a lock about to be created at `now`.
    pub fn validate(&self, now: i64) -> Result<(), DomainError> {
        self.target.validate()?;
        if self.reason.len() > MAX_REASON_BYTES {
            return Err(DomainError::invalid("reason", format!("at most {MAX_REASON_BYTES} bytes")));
        }
        if self.reason.chars().any(char::is_control) {
            return Err(DomainError::invalid("reason", "no control characters (newlines, tabs, escapes)"));
        }
        if self.expires_at < 0 || (self.expires_at != 0 && self.expires_at <= now) {
            return Err(DomainError::invalid("expires_at", "must be in the future (Unix seconds), or 0 for a lock that lasts until deleted"));
        }
        Ok(())
    }

    /// Whether the lock applies at `now` (not expired).
    pub fn in_force(&self, now: i64) -> bool {
        self.expires_at == 0 || now < self.expires_at
    }
}

/// What a request is about, as far as locks are concerned. `None`: the
/// request does not involve that kind of target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The bot acting (authenticated caller) or being joined as.
    pub bot: Option<&'a str>,
    /// The caller's bot instance.
    pub instance: Option<&'a str>,
    /// The join token of a join.
    pub join_token: Option<&'a str>,
    /// The path of the SPIFFE ID about to be issued.
    pub spiffe_path: Option<&'a str>,
}

/// Every stored lock, indexed for the questions requests ask.
#[derive(Debug, Clone, Default)]
pub struct LockSet {
    locks: Vec<Lock>,
    by_target: HashMap<LockTarget, Vec<usize>>,
    patterns: Vec<usize>,
}

impl LockSet {
    /// Indexes `locks` (in any order; the first in force wins a match).
    pub fn new(locks: Vec<Lock>) -> Self {
        let mut by_target: HashMap<LockTarget, Vec<usize>> = HashMap::new();
        let mut patterns = Vec::new();
        for (i, l) in locks.iter().enumerate() {
            match &l.target {
                LockTarget::SpiffeId(_) => patterns.push(i),
                t => by_target.entry(t.clone()).or_default().push(i),
            }
        }
        Self { locks, by_target, patterns }
    }

    /// Number of stored locks, expired or not.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether no lock is stored.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Whether some lock in force at `now` targets a bot or a join token,
    /// i.e. whether a join must find out its token and bot before it spends
    /// anything.
    pub fn locks_joins(&self, now: i64) -> bool {
        self.by_target.iter().any(|(t, ids)| matches!(t, LockTarget::Bot(_) | LockTarget::JoinToken(_)) && ids.iter().any(|&i| self.locks[i].in_force(now)))
    }

    /// The first lock in force at `now` that stops `s`, if any.
    pub fn find(&self, s: &Subject<'_>, now: i64) -> Option<&Lock> {
        let exact = |t: LockTarget| self.by_target.get(&t).into_iter().flatten().map(|&i| &self.locks[i]).find(|l| l.in_force(now));
        let name = |v: &str| Name::parse(v).ok();
        if let Some(l) = s.bot.and_then(name).and_then(|n| exact(LockTarget::Bot(n))) {
            return Some(l);
        }
        if let Some(l) = s.instance.and_then(|i| exact(LockTarget::BotInstance(i.to_string()))) {
            return Some(l);
        }
        if let Some(l) = s.join_token.and_then(name).and_then(|n| exact(LockTarget::JoinToken(n))) {
            return Some(l);
        }
        let path = s.spiffe_path?;
        self.patterns
            .iter()
            .map(|&i| &self.locks[i])
            .find(|l| l.in_force(now) && matches!(&l.target, LockTarget::SpiffeId(p) if glob::matches_path(p, path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn lock(name: &str, target: LockTarget, expires_at: i64) -> Lock {
        Lock { name: Name::parse(name).unwrap(), target, reason: "stolen".into(), expires_at, revision: 1, created_by: "admin".into(), created_at: NOW - 10 }
    }

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn set() -> LockSet {
        LockSet::new(vec![
            lock("l-bot", LockTarget::Bot(n("ci")), 0),
            lock("l-inst", LockTarget::BotInstance("abc123".into()), 0),
            lock("l-tok", LockTarget::JoinToken(n("tok1")), 0),
            lock("l-web", LockTarget::SpiffeId("/svc/web/*".into()), 0),
            lock("l-old", LockTarget::Bot(n("old")), NOW),
        ])
    }

    fn found(s: Subject<'_>) -> Option<String> {
        set().find(&s, NOW).map(|l| l.name.to_string())
    }

    #[test]
    fn each_target_kind_stops_only_its_own_subject() {
        let table: &[(Subject<'_>, Option<&str>)] = &[
            (Subject { bot: Some("ci"), ..Default::default() }, Some("l-bot")),
            (Subject { bot: Some("cd"), ..Default::default() }, None),
            (Subject { bot: Some("cd"), instance: Some("abc123"), ..Default::default() }, Some("l-inst")),
            (Subject { bot: Some("cd"), instance: Some("abc124"), ..Default::default() }, None),
            (Subject { join_token: Some("tok1"), ..Default::default() }, Some("l-tok")),
            (Subject { join_token: Some("tok2"), bot: Some("cd"), ..Default::default() }, None),
            (Subject { spiffe_path: Some("/svc/web/a"), ..Default::default() }, Some("l-web")),
            (Subject { spiffe_path: Some("/svc/web"), ..Default::default() }, None),
            (Subject { spiffe_path: Some("/svc/web/a/b"), ..Default::default() }, None),
            // A bot name is not a token name, nor an instance id.
            (Subject { join_token: Some("ci"), instance: Some("ci"), ..Default::default() }, None),
            (Subject::default(), None),
        ];
        for (s, want) in table {
            assert_eq!(found(*s).as_deref(), *want, "{s:?}");
        }
    }

    #[test]
    fn an_expired_lock_no_longer_applies() {
        let s = set();
        let old = Subject { bot: Some("old"), ..Default::default() };
        assert_eq!(s.find(&old, NOW - 1).map(|l| l.name.as_str()), Some("l-old"));
        assert!(s.find(&old, NOW).is_none(), "expired at its expires_at");
        assert!(s.find(&old, NOW + 1000).is_none());
        assert!(s.find(&Subject { bot: Some("ci"), ..Default::default() }, i64::MAX - 1).is_some(), "0 = until deleted");
    }

    #[test]
    fn joins_need_a_lookup_only_while_a_bot_or_token_lock_is_in_force() {
        assert!(set().locks_joins(NOW));
        let only_patterns = LockSet::new(vec![lock("p", LockTarget::SpiffeId("/**".into()), 0), lock("i", LockTarget::BotInstance("x".into()), 0)]);
        assert!(!only_patterns.locks_joins(NOW));
        let expired = LockSet::new(vec![lock("b", LockTarget::Bot(n("b")), NOW - 1)]);
        assert!(!expired.locks_joins(NOW));
        assert!(!LockSet::default().locks_joins(NOW) && LockSet::default().is_empty());
    }

    #[test]
    fn a_target_names_exactly_one_thing() {
        assert_eq!(LockTarget::from_fields("ci", "", "", "").unwrap(), LockTarget::Bot(n("ci")));
        assert_eq!(LockTarget::from_fields("", "", "", "/a/**").unwrap(), LockTarget::SpiffeId("/a/**".into()));
        assert_eq!(LockTarget::from_fields("", "", "", "").unwrap_err().field(), "target");
        let two = LockTarget::from_fields("ci", "", "tok", "").unwrap_err();
        assert!(two.message().contains("exactly one") && two.message().contains("bot, join_token"), "{two}");
        assert_eq!(LockTarget::from_fields("CI!", "", "", "").unwrap_err().field(), "target.bot");
        assert_eq!(LockTarget::from_fields("", "", "Tok", "").unwrap_err().field(), "target.join_token");
        assert_eq!(LockTarget::from_fields("", "a/b", "", "").unwrap_err().field(), "target.bot_instance");
        assert_eq!(LockTarget::from_fields("", &"a".repeat(129), "", "").unwrap_err().field(), "target.bot_instance");
    }

    #[test]
    fn a_pattern_has_the_role_syntax_without_templates() {
        let p = |s: &str| LockTarget::SpiffeId(s.into()).validate();
        for ok in ["/svc/web", "/svc/*", "/ci/**", "/**"] {
            assert!(p(ok).is_ok(), "{ok}");
        }
        for bad in ["svc/web", "/svc/", "/a//b", "/bot/{{bot.name}}", "", &"/a".repeat(65)] {
            assert_eq!(p(bad).unwrap_err().field(), "target.spiffe_id", "{bad}");
        }
    }

    #[test]
    fn reason_and_expiry_are_bounded() {
        let l = |reason: &str, exp: i64| Lock { reason: reason.into(), ..lock("l", LockTarget::Bot(n("b")), exp) };
        assert!(l("key found on pastebin", 0).validate(NOW).is_ok());
        assert!(l("", NOW + 1).validate(NOW).is_ok());
        assert_eq!(l(&"x".repeat(MAX_REASON_BYTES + 1), 0).validate(NOW).unwrap_err().field(), "reason");
        assert_eq!(l("line\nbreak", 0).validate(NOW).unwrap_err().field(), "reason");
        assert_eq!(l("", NOW).validate(NOW).unwrap_err().field(), "expires_at");
        assert_eq!(l("", -5).validate(NOW).unwrap_err().field(), "expires_at");
    }

    #[test]
    fn a_stored_lock_reads_back_as_written() {
        for t in [LockTarget::Bot(n("b")), LockTarget::BotInstance("i".into()), LockTarget::JoinToken(n("t")), LockTarget::SpiffeId("/x/*".into())] {
            let l = lock("l", t, 7);
            let json = serde_json::to_value(&l).unwrap();
            assert_eq!(json["target"].as_object().unwrap().len(), 1);
            assert_eq!(serde_json::from_value::<Lock>(json).unwrap(), l);
        }
    }
}
