//! Authorization decisions: given a caller (bot + its roles), may it do this?
//! Every denial says which rule failed.

use super::{glob, template, Attributes, Bot, Role, SpiffeId, TrustDomain, WorkloadIdentity};

/// A caller resolved from its identity certificate.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The bot.
    pub bot: Bot,
    /// Its roles, as currently stored.
    pub roles: Vec<Role>,
    /// Attributes from the join (join.method, join.KEY ...).
    pub join_attributes: Attributes,
}

/// A request was denied; the message names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission denied: {0}")]
pub struct Denied(pub String);

impl Caller {
    fn role_names(&self) -> String {
        let names: Vec<&str> = self.roles.iter().map(|r| r.name.as_str()).collect();
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    }

    /// All attributes of the caller (bot and join).
    pub fn attributes(&self) -> Attributes {
        let mut a = self.bot.attributes();
        a.extend(self.join_attributes.clone());
        a
    }

    /// Checks an admin verb on a resource kind.
    pub fn check_verb(&self, resource: &str, verb: &str) -> Result<(), Denied> {
        if self.roles.iter().any(|r| r.allow.rules.iter().any(|rule| rule.grants(resource, verb))) {
            return Ok(());
        }
        Err(Denied(format!(
            "bot {:?} has no role granting verb {verb:?} on {resource:?} (roles: {})",
            self.bot.name.as_str(),
            self.role_names()
        )))
    }

    /// Checks that the caller may obtain `id`; returns the largest TTL its matching
    /// roles allow, a role without a cap counting as `default_max_ttl`.
    pub fn check_spiffe_id(
        &self,
        trust_domain: &TrustDomain,
        id: &SpiffeId,
        attrs: &Attributes,
        x509: bool,
        default_max_ttl: i64,
    ) -> Result<i64, Denied> {
        if id.trust_domain() != trust_domain {
            return Err(Denied(format!(
                "SPIFFE ID {id} is outside trust domain {trust_domain}"
            )));
        }
        if id.path().starts_with(super::BOT_IDENTITY_PREFIX) {
            return Err(Denied(format!(
                "SPIFFE ID {id} is under the reserved bot identity prefix {}",
                super::BOT_IDENTITY_PREFIX
            )));
        }
        let mut best: Option<i64> = None;
        let mut tried = Vec::new();
        for role in &self.roles {
            for pattern in &role.allow.spiffe_ids {
                let rendered = match template::render(pattern, attrs) {
                    Ok(p) => p,
                    Err(e) => {
                        tried.push(format!("{}: {pattern} ({e})", role.name));
                        continue;
                    }
                };
                if glob::matches_path(&rendered, id.path()) {
                    let cap = if x509 { role.allow.max_x509_ttl_seconds } else { role.allow.max_jwt_ttl_seconds };
                    let cap = if cap == 0 { default_max_ttl } else { cap };
                    best = Some(best.map_or(cap, |b: i64| b.max(cap)));
                } else {
                    tried.push(format!("{}: {rendered}", role.name));
                }
            }
        }
        best.ok_or_else(|| {
            Denied(format!(
                "SPIFFE ID {id} matches no spiffe_ids pattern of bot {:?}'s roles (tried: {})",
                self.bot.name.as_str(),
                if tried.is_empty() { "no patterns".to_string() } else { tried.join("; ") }
            ))
        })
    }

    /// Checks that every audience is allowed by some role.
    pub fn check_audiences(&self, audiences: &[String]) -> Result<(), Denied> {
        for aud in audiences {
            if !self.roles.iter().any(|r| r.allows_audience(aud)) {
                return Err(Denied(format!(
                    "audience {aud:?} matches no audiences pattern of bot {:?}'s roles ({})",
                    self.bot.name.as_str(),
                    self.role_names()
                )));
            }
        }
        Ok(())
    }

    /// Checks that the caller may use `wi` with these attributes; returns the
    /// SPIFFE ID path it renders to.
    pub fn check_workload_identity(
        &self,
        wi: &WorkloadIdentity,
        attrs: &Attributes,
    ) -> Result<String, Denied> {
        if !self.roles.iter().any(|r| r.allows_workload_identity(wi.name.as_str())) {
            return Err(Denied(format!(
                "workload identity {:?} matches no workload_identities pattern of bot {:?}'s roles ({})",
                wi.name.as_str(),
                self.bot.name.as_str(),
                self.role_names()
            )));
        }
        wi.check_conditions(attrs).map_err(Denied)?;
        wi.render_path(attrs).map_err(|e| Denied(format!("workload identity {:?}: {e}", wi.name.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Name, RoleAllow, Rule};

    fn caller(allow: RoleAllow) -> Caller {
        let role = Role { name: Name::parse("r").unwrap(), description: String::new(), allow, revision: 1 };
        Caller {
            bot: Bot {
                name: Name::parse("ci").unwrap(),
                roles: vec![role.name.clone()],
                traits: Default::default(),
                max_session_ttl_seconds: 0,
                revision: 1,
                generation: 0,
                locked: false,
            },
            roles: vec![role],
            join_attributes: Default::default(),
        }
    }

    fn td() -> TrustDomain {
        "example.org".parse().unwrap()
    }

    #[test]
    fn templated_pattern_allows_only_the_bots_own_path() {
        let c = caller(RoleAllow { spiffe_ids: vec!["/bot/{{bot.name}}/*".into()], max_x509_ttl_seconds: 600, ..Default::default() });
        let attrs = c.attributes();
        let ok: SpiffeId = "spiffe://example.org/bot/ci/web".parse().unwrap();
        assert_eq!(c.check_spiffe_id(&td(), &ok, &attrs, true, 3600), Ok(600));
        let other: SpiffeId = "spiffe://example.org/bot/other/web".parse().unwrap();
        let err = c.check_spiffe_id(&td(), &other, &attrs, true, 3600).unwrap_err();
        assert!(err.0.contains("/bot/ci/*"), "{err}");
    }

    #[test]
    fn bot_identity_prefix_is_never_issuable() {
        let c = caller(RoleAllow { spiffe_ids: vec!["/**".into()], ..Default::default() });
        let id: SpiffeId = "spiffe://example.org/sigil/bot/admin".parse().unwrap();
        assert!(c.check_spiffe_id(&td(), &id, &c.attributes(), true, 3600).is_err());
    }

    #[test]
    fn foreign_trust_domain_is_denied() {
        let c = caller(RoleAllow { spiffe_ids: vec!["/**".into()], ..Default::default() });
        let id: SpiffeId = "spiffe://evil.org/a".parse().unwrap();
        assert!(c.check_spiffe_id(&td(), &id, &c.attributes(), true, 3600).is_err());
    }

    #[test]
    fn verb_denial_names_bot_and_roles() {
        let c = caller(RoleAllow { rules: vec![Rule { resources: vec!["bot".into()], verbs: vec!["read".into()] }], ..Default::default() });
        assert!(c.check_verb("bot", "read").is_ok());
        let err = c.check_verb("bot", "delete").unwrap_err();
        assert!(err.0.contains("\"delete\"") && err.0.contains("roles: r"), "{err}");
    }

    #[test]
    fn unlisted_audience_is_denied() {
        let c = caller(RoleAllow { audiences: vec!["sts.amazonaws.com".into()], ..Default::default() });
        assert!(c.check_audiences(&["sts.amazonaws.com".into()]).is_ok());
        assert!(c.check_audiences(&["api://AzureADTokenExchange".into()]).is_err());
    }
}
