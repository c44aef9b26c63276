//! Roles: what a bot may obtain (SPIFFE IDs, audiences, workload identities, TTLs)
//! and which admin verbs it has on which resources.

pub use super::access_rules::{DatabaseRules, KubernetesRules, SshRules};
use super::{glob, DomainError, Name};
use serde::{Deserialize, Serialize};

/// Resource kinds that admin rules refer to.
pub const RESOURCE_KINDS: &[&str] = &["role", "bot", "join_token", "workload_identity", "audit", "bot_instance", "lock", "ca", "revocation"];
/// Admin verbs. `escalate` (on `role` and `workload_identity`) lets a caller write
/// grants it does not hold itself; `bind` (on `role`) lets it attach a role it does
/// not hold to a bot, or create a join token for a bot holding it. `*` includes
/// both, as in Kubernetes RBAC.
pub const VERBS: &[&str] = &["create", "read", "list", "update", "delete", "escalate", "bind"];

/// The resource kinds each of the special verbs applies to.
const SPECIAL_VERBS: &[(&str, &[&str])] = &[("escalate", &["role", "workload_identity"]), ("bind", &["role"])];

/// One admin rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Resource kinds (or "*").
    #[serde(default)]
    pub resources: Vec<String>,
    /// Verbs (or "*").
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resource names (globs) the rule is limited to; empty = every name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

impl Rule {
    /// Whether this rule grants `verb` on every resource of kind `resource`.
    pub fn grants(&self, resource: &str, verb: &str) -> bool {
        self.grants_kind(resource, verb) && self.covers_name("*")
    }

    /// Whether this rule grants `verb` on the resource `name` of kind `resource`.
    pub fn grants_on(&self, resource: &str, verb: &str, name: &str) -> bool {
        self.grants_kind(resource, verb) && (self.names.is_empty() || self.names.iter().any(|p| glob::matches(p, name)))
    }

    /// Whether this rule grants `verb` on kind `resource` for some names.
    /// `"*"` as `resource` or `verb` is granted only by a `"*"` in the rule.
    pub fn grants_kind(&self, resource: &str, verb: &str) -> bool {
        self.resources.iter().any(|r| r == "*" || r == resource) && self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    /// Whether this rule applies to every name the glob `pattern` matches.
    pub fn covers_name(&self, pattern: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|p| glob::covers(p, pattern))
    }
}

/// What a role allows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleAllow {
    /// SPIFFE ID path patterns (templates allowed).
    #[serde(default)]
    pub spiffe_ids: Vec<String>,
    /// JWT audiences (globs).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Workload identity names (globs).
    #[serde(default)]
    pub workload_identities: Vec<String>,
    /// Maximum X.509-SVID lifetime in seconds (0 = broker default).
    #[serde(default)]
    pub max_x509_ttl_seconds: i64,
    /// Maximum JWT-SVID lifetime in seconds (0 = broker default).
    #[serde(default)]
    pub max_jwt_ttl_seconds: i64,
    /// Admin rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// SSH certificates.
    #[serde(default, skip_serializing_if = "SshRules::is_empty")]
    pub ssh: SshRules,
    /// Database certificates.
    #[serde(default, skip_serializing_if = "DatabaseRules::is_empty")]
    pub database: DatabaseRules,
    /// Kubernetes client certificates.
    #[serde(default, skip_serializing_if = "KubernetesRules::is_empty")]
    pub kubernetes: KubernetesRules,
}

/// A role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Name.
    pub name: Name,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Grants.
    #[serde(default)]
    pub allow: RoleAllow,
    /// Store revision (0 before creation).
    #[serde(default)]
    pub revision: i64,
}

impl Role {
    /// Checks the role's contents; errors name the offending field.
    pub fn validate(&self) -> Result<(), DomainError> {
        let a = &self.allow;
        for (i, p) in a.spiffe_ids.iter().enumerate() {
            check_path_pattern(p).map_err(|m| DomainError::invalid(format!("allow.spiffe_ids[{i}]"), m))?;
        }
        super::ssh_policy::validate(&a.ssh).map_err(|(field, m)| DomainError::invalid(field, m))?;
        super::tls_policy::validate(&a.database, &a.kubernetes).map_err(|(field, m)| DomainError::invalid(field, m))?;
        for (field, v) in [("allow.max_x509_ttl_seconds", a.max_x509_ttl_seconds), ("allow.max_jwt_ttl_seconds", a.max_jwt_ttl_seconds)] {
            if v < 0 {
                return Err(DomainError::invalid(field, "must not be negative"));
            }
        }
        for (i, r) in a.rules.iter().enumerate() {
            for res in &r.resources {
                if res != "*" && !RESOURCE_KINDS.contains(&res.as_str()) {
                    return Err(DomainError::invalid(
                        format!("allow.rules[{i}].resources"),
                        format!("unknown resource {res:?} (known: {}, *)", RESOURCE_KINDS.join(", ")),
                    ));
                }
            }
            for verb in &r.verbs {
                if verb != "*" && !VERBS.contains(&verb.as_str()) {
                    return Err(DomainError::invalid(
                        format!("allow.rules[{i}].verbs"),
                        format!("unknown verb {verb:?} (known: {}, *)", VERBS.join(", ")),
                    ));
                }
                if let Some((_, kinds)) = SPECIAL_VERBS.iter().find(|(v, _)| v == verb) {
                    if let Some(res) = r.resources.iter().find(|res| *res != "*" && !kinds.contains(&res.as_str())) {
                        return Err(DomainError::invalid(
                            format!("allow.rules[{i}].verbs"),
                            format!("verb {verb:?} applies only to {}, not to {res:?}; put it in a rule of its own", kinds.join(" and ")),
                        ));
                    }
                }
            }
            for (j, n) in r.names.iter().enumerate() {
                if n.is_empty() || n.len() > 253 {
                    return Err(DomainError::invalid(format!("allow.rules[{i}].names[{j}]"), "must be a name glob of 1 to 253 characters"));
                }
            }
            if !r.names.is_empty() && r.resources.iter().any(|res| res == "audit") {
                return Err(DomainError::invalid(
                    format!("allow.rules[{i}].names"),
                    "audit events have no names; put audit in a rule without names",
                ));
            }
        }
        Ok(())
    }

    /// The role's lifetime cap for X.509-SVIDs (`x509`) or JWT-SVIDs, a cap of 0
    /// standing for `default_max`.
    pub fn ttl_cap(&self, x509: bool, default_max: i64) -> i64 {
        let cap = if x509 { self.allow.max_x509_ttl_seconds } else { self.allow.max_jwt_ttl_seconds };
        if cap == 0 {
            default_max
        } else {
            cap
        }
    }

    /// Whether any audience pattern matches.
    pub fn allows_audience(&self, aud: &str) -> bool {
        self.allow.audiences.iter().any(|p| glob::matches(p, aud))
    }

    /// Whether any workload identity pattern matches.
    pub fn allows_workload_identity(&self, name: &str) -> bool {
        self.allow.workload_identities.iter().any(|p| glob::matches(p, name))
    }
}

/// Checks the shape of a SPIFFE ID path pattern (`/svc/*`, `/ci/**`): what a
/// role's `spiffe_ids` and a lock's `spiffe_id` target accept. Says what is
/// wrong.
pub fn check_path_pattern(p: &str) -> Result<(), String> {
    let ok = p.starts_with('/') && !p.contains("//") && !p.ends_with('/') && p.len() <= 2048;
    if !ok {
        return Err(format!("{p:?} must be a path pattern like /svc/* (starting with '/', no trailing '/')"));
    }
    if p.matches('/').count() > super::MAX_PATTERN_SEGMENTS {
        return Err(format!("at most {} segments in a pattern", super::MAX_PATTERN_SEGMENTS));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(allow: RoleAllow) -> Role {
        Role { name: Name::parse("r").unwrap(), description: String::new(), allow, revision: 0 }
    }

    fn rule(resources: &[&str], verbs: &[&str], names: &[&str]) -> Rule {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Rule { resources: v(resources), verbs: v(verbs), names: v(names) }
    }

    #[test]
    fn escalate_and_bind_apply_only_to_their_kinds() {
        let ok = |r: Rule| role(RoleAllow { rules: vec![r], ..Default::default() }).validate();
        assert!(ok(rule(&["role", "workload_identity"], &["escalate"], &[])).is_ok());
        assert!(ok(rule(&["role"], &["bind"], &["team-*"])).is_ok());
        assert!(ok(rule(&["*"], &["bind"], &[])).is_ok());
        assert_eq!(ok(rule(&["bot"], &["bind"], &[])).unwrap_err().field(), "allow.rules[0].verbs");
        assert!(ok(rule(&["join_token"], &["escalate"], &[])).is_err());
        assert_eq!(ok(rule(&["audit"], &["list"], &["x"])).unwrap_err().field(), "allow.rules[0].names");
        assert!(ok(rule(&["bot"], &["read"], &[""])).is_err());
    }

    #[test]
    fn patterns_have_at_most_64_segments() {
        let ok = |p: String| role(RoleAllow { spiffe_ids: vec![p], ..Default::default() }).validate();
        assert!(ok("/a".repeat(64)).is_ok());
        assert_eq!(ok("/a".repeat(65)).unwrap_err().field(), "allow.spiffe_ids[0]");
    }
}
