//! Join tokens: how a bot proves it may join.

use super::join_method::config::Settings;
use super::join_method::{Method, RuleFields, SecretKind, UnknownMethod};
use secrecy::{ExposeSecret, SecretString};
use super::{glob, DomainError, Name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One allow rule: every listed claim must match its glob.
pub type AllowRule = BTreeMap<String, String>;

/// A join token. The secret is never stored: only its SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinToken {
    /// Public name.
    pub name: Name,
    /// Bot that joins with it.
    pub bot: Name,
    /// Join method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
    /// Joins allowed (1 = single use).
    #[serde(default = "one")]
    pub max_uses: i64,
    /// Joins done (output only).
    #[serde(default)]
    pub uses: i64,
    /// Store revision.
    #[serde(default)]
    pub revision: i64,
    /// Method-specific allow rules; the join is allowed when any rule matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowRule>,
    /// Method-specific settings (issuer, audience, static JWKS, host ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// Checks `claims` against `rules`: Ok when some rule has every claim matching.
/// The error names, for the closest rule, the first claim that did not match.
/// An empty rule (`{}`) would match every credential: it never matches here,
/// and [`JoinToken::validate`] refuses it.
pub fn match_rules(rules: &[AllowRule], claims: &BTreeMap<String, String>) -> Result<(), String> {
    if rules.is_empty() {
        return Err("the join token has no allow rules".into());
    }
    let mut reasons = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if rule.is_empty() {
            reasons.push(format!("allow[{i}] is empty and matches nothing"));
            continue;
        }
        let failed = rule.iter().find(|(k, pattern)| !claims.get(*k).is_some_and(|v| glob::matches(pattern, v)));
        match failed {
            None => return Ok(()),
            Some((k, pattern)) => reasons.push(format!(
                "allow[{i}]: {k} = {:?} does not match {pattern:?}",
                claims.get(k).map(String::as_str).unwrap_or("<absent>")
            )),
        }
    }
    Err(reasons.join("; "))
}

fn default_method() -> String {
    Method::Token.name().into()
}

fn one() -> i64 {
    1
}

impl JoinToken {
    /// The token's join method.
    pub fn join_method(&self) -> Result<Method, UnknownMethod> {
        Method::parse(&self.method)
    }

    /// Checks the token's contents against the current time: a known method,
    /// expiry and uses, no empty rule, then [`JoinToken::check_settings`].
    pub fn validate(&self, now: i64) -> Result<(), DomainError> {
        self.join_method().map_err(|e| DomainError::invalid("method", e.to_string()))?;
        if self.expires_at <= now {
            return Err(DomainError::invalid("expires_at", "must be in the future"));
        }
        if self.max_uses < 1 {
            return Err(DomainError::invalid("max_uses", "must be at least 1"));
        }
        if let Some(i) = self.allow.iter().position(|r| r.is_empty()) {
            return Err(DomainError::invalid(
                format!("allow[{i}]"),
                "is empty, and an empty rule would allow every credential of the method: name at least one claim and the pattern it must match",
            ));
        }
        self.check_settings().map(|_| ())
    }

    /// Checks what the registry says of the token's method: its `config`
    /// parses as the method's settings (an unknown key or a missing required
    /// key is named) and its rules name only the method's fields. Returns the
    /// method and its settings; run at creation, update and every join.
    pub fn check_settings(&self) -> Result<(Method, Settings), DomainError> {
        let method = self.join_method().map_err(|e| DomainError::invalid("method", e.to_string()))?;
        let settings = method.parse_config(&self.config).map_err(|e| e.into_domain(method))?;
        self.check_rule_fields(method)?;
        Ok((method, settings))
    }

    /// Refuses allow rules naming fields the method does not define.
    pub fn check_rule_fields(&self, method: Method) -> Result<(), DomainError> {
        match method.spec().rule_fields {
            RuleFields::Any => Ok(()),
            RuleFields::NoRules if self.allow.is_empty() => Ok(()),
            RuleFields::NoRules => Err(DomainError::invalid(
                "allow",
                format!("join method {:?} has no allow rules: the bound key is the rule", method.name()),
            )),
            RuleFields::Only(fields) => {
                for (i, rule) in self.allow.iter().enumerate() {
                    if let Some(k) = rule.keys().find(|k| !fields.contains(&k.as_str())) {
                        return Err(DomainError::invalid(
                            format!("allow[{i}].{k}"),
                            format!("not a field of join method {:?} (fields: {})", method.name(), fields.join(", ")),
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether the token has a secret, shown once at creation. Only a `token`
    /// secret joins by itself. A `bound_keypair` secret only registers the
    /// agent's key at its first join (none when `config.public_key` is set).
    /// Every other method proves itself with its platform's credential: a
    /// secret would be a way around that proof.
    pub fn has_secret(&self) -> bool {
        match self.join_method().map(|m| m.spec().secret) {
            Ok(SecretKind::Always) => true,
            Ok(SecretKind::UnlessConfigured(key)) => self.config.get(key).is_none_or(|k| k.trim().is_empty()),
            Ok(SecretKind::Never) | Err(_) => false,
        }
    }
}

/// A join token secret. Redacted in Debug, never Display, wiped from memory
/// when dropped (`secrecy`).
#[derive(Clone)]
pub struct TokenSecret(SecretString);

impl TokenSecret {
    /// Wraps a secret string.
    pub fn new(s: String) -> Self {
        Self(SecretString::from(s))
    }

    /// The secret itself, for returning once to the creator.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Hex SHA-256 of the secret: what the store keeps and looks up by.
    pub fn hash(&self) -> String {
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.expose().as_bytes()))
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

#[cfg(any(test, feature = "test-support"))]
impl JoinToken {
    /// Token `t` for bot `b`, expiring at 100, one use left, with `config` and
    /// `rules` (the unit tests' fixture).
    #[allow(clippy::unwrap_used)]
    pub fn for_test(method: &str, config: &[(&str, &str)], rules: &[&[(&str, &str)]]) -> JoinToken {
        JoinToken {
            name: Name::parse("t").unwrap(),
            bot: Name::parse("b").unwrap(),
            method: method.into(),
            expires_at: 100,
            max_uses: 1,
            uses: 0,
            revision: 0,
            allow: rules.iter().map(|r| r.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).collect(),
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_matching_rule_allows_and_failures_name_the_claim() {
        let rules = vec![
            [("repository".to_string(), "acme/*".to_string()), ("ref".into(), "refs/heads/main".into())].into_iter().collect(),
        ];
        let mut claims: BTreeMap<String, String> =
            [("repository".to_string(), "acme/web".to_string()), ("ref".into(), "refs/heads/main".into())].into_iter().collect();
        assert!(match_rules(&rules, &claims).is_ok());
        claims.insert("ref".into(), "refs/heads/dev".into());
        let err = match_rules(&rules, &claims).unwrap_err();
        assert!(err.contains("ref = \"refs/heads/dev\""), "{err}");
        assert!(match_rules(&[], &claims).is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = TokenSecret::new("hunter2-secret".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.hash().len(), 64);
    }

    #[test]
    fn expired_or_unusable_tokens_fail_validation() {
        let t = JoinToken::for_test("token", &[], &[]);
        assert!(t.validate(50).is_ok());
        assert_eq!(t.validate(100).unwrap_err().field(), "expires_at");
        let t2 = JoinToken { max_uses: 0, ..t.clone() };
        assert_eq!(t2.validate(50).unwrap_err().field(), "max_uses");
        let t3 = JoinToken { method: "magic".into(), ..t.clone() };
        assert_eq!(t3.validate(50).unwrap_err().field(), "method");
        let t4 = JoinToken { method: "github".into(), config: [("audience".to_string(), "a".to_string())].into(), allow: vec![[("repository".to_string(), "a/b".to_string())].into(), AllowRule::new()], ..t };
        assert_eq!(t4.validate(50).unwrap_err().field(), "allow[1]");
    }

    #[test]
    fn settings_and_rule_fields_are_checked_against_the_registry() {
        let t = JoinToken::for_test("github", &[("audience", "sigil"), ("enterprize_host", "x")], &[&[("repository", "a/b")]]);
        let e = t.validate(50).unwrap_err();
        assert_eq!(e.field(), "config.enterprize_host");
        let t = JoinToken::for_test("github", &[], &[&[("repository", "a/b")]]);
        assert_eq!(t.validate(50).unwrap_err().field(), "config.audience");
        let t = JoinToken::for_test("github", &[("audience", "sigil")], &[&[("repo", "a/b")]]);
        assert_eq!(t.validate(50).unwrap_err().field(), "allow[0].repo");
        let t = JoinToken::for_test("bound_keypair", &[], &[&[("sub", "x")]]);
        assert_eq!(t.validate(50).unwrap_err().field(), "allow");
        let (m, _) = JoinToken::for_test("oidc", &[("audience", "a"), ("issuer", "https://i")], &[&[("any", "x")]]).check_settings().unwrap();
        assert_eq!(m, Method::Oidc);
    }

    #[test]
    fn an_empty_rule_matches_no_credential() {
        let claims: BTreeMap<String, String> = [("repository".to_string(), "mallory/x".to_string())].into();
        assert!(match_rules(&[AllowRule::new()], &claims).is_err());
    }

    #[test]
    fn only_token_and_unkeyed_bound_keypair_tokens_have_a_secret() {
        let t = |method: &str, config: &[(&str, &str)]| JoinToken::for_test(method, config, &[]);
        assert!(t("token", &[]).has_secret());
        assert!(t("bound_keypair", &[]).has_secret());
        assert!(!t("bound_keypair", &[("public_key", "MCow...")]).has_secret());
        for m in Method::ALL.iter().filter(|m| !matches!(m, Method::Token | Method::BoundKeypair)) {
            assert!(!t(m.name(), &[]).has_secret(), "{m}");
        }
    }
}
