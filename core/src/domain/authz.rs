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
    /// The bot instance whose identity made the call (recorded with what it
    /// is issued, so it can be revoked by instance).
    pub instance: String,
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

    /// Checks an admin verb on every resource of a kind (a rule without `names`).
    pub fn check_verb(&self, resource: &str, verb: &str) -> Result<(), Denied> {
        if self.rules().any(|rule| rule.grants(resource, verb)) {
            return Ok(());
        }
        Err(Denied(format!(
            "bot {:?} has no role granting verb {verb:?} on {resource:?} (roles: {})",
            self.bot.name.as_str(),
            self.role_names()
        )))
    }

    /// Checks an admin verb on the resource `name` of a kind.
    pub fn check_verb_on(&self, resource: &str, verb: &str, name: &str) -> Result<(), Denied> {
        if self.rules().any(|rule| rule.grants_on(resource, verb, name)) {
            return Ok(());
        }
        Err(Denied(format!(
            "bot {:?} has no role granting verb {verb:?} on {resource:?} named {name:?} (roles: {})",
            self.bot.name.as_str(),
            self.role_names()
        )))
    }

    /// Which names of a kind the caller may apply `verb` to: `Ok(None)` for all,
    /// `Ok(Some(globs))` when only name-limited rules grant it, `Err` when none does.
    pub fn names_granted(&self, resource: &str, verb: &str) -> Result<Option<Vec<String>>, Denied> {
        self.check_verb(resource, verb).map(|()| None).or_else(|denied| {
            let globs: Vec<String> =
                self.rules().filter(|r| r.grants_kind(resource, verb)).flat_map(|r| r.names.iter().cloned()).collect();
            if globs.is_empty() {
                Err(denied)
            } else {
                Ok(Some(globs))
            }
        })
    }

    /// Every admin rule of every role.
    pub(super) fn rules(&self) -> impl Iterator<Item = &super::Rule> {
        self.roles.iter().flat_map(|r| r.allow.rules.iter())
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
        check_not_reserved(id.path())?;
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
                    let cap = role.ttl_cap(x509, default_max_ttl);
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
    /// SPIFFE ID path it renders to and the largest TTL allowed: the largest cap
    /// of the roles granting `wi` (0 counting as `default_max_ttl`), lowered to
    /// the workload identity's own cap if it has one. The reserved bot identity
    /// prefix is refused as on every other path.
    pub fn check_workload_identity(
        &self,
        wi: &WorkloadIdentity,
        attrs: &Attributes,
        x509: bool,
        default_max_ttl: i64,
    ) -> Result<(String, i64), Denied> {
        let cap = self
            .roles
            .iter()
            .filter(|r| r.allows_workload_identity(wi.name.as_str()))
            .map(|r| r.ttl_cap(x509, default_max_ttl))
            .max()
            .ok_or_else(|| {
                Denied(format!(
                    "workload identity {:?} matches no workload_identities pattern of bot {:?}'s roles ({})",
                    wi.name.as_str(),
                    self.bot.name.as_str(),
                    self.role_names()
                ))
            })?;
        wi.check_conditions(attrs).map_err(Denied)?;
        let path = wi.render_path(attrs).map_err(|e| Denied(format!("workload identity {:?}: {e}", wi.name.as_str())))?;
        check_not_reserved(&path)?;
        let wi_cap = if x509 { wi.max_x509_ttl_seconds } else { wi.max_jwt_ttl_seconds };
        Ok((path, if wi_cap > 0 { cap.min(wi_cap) } else { cap }))
    }
}

/// Refuses a path under the bot identity prefix, which no SVID may carry.
fn check_not_reserved(path: &str) -> Result<(), Denied> {
    if path.starts_with(super::BOT_IDENTITY_PREFIX) || path == super::BOT_IDENTITY_PREFIX.trim_end_matches('/') {
        return Err(Denied(format!("SPIFFE ID path {path} is under the reserved bot identity prefix {}", super::BOT_IDENTITY_PREFIX)));
    }
    Ok(())
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
            instance: String::new(),
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
        let c = caller(RoleAllow { rules: vec![Rule { resources: vec!["bot".into()], verbs: vec!["read".into()], names: vec![] }], ..Default::default() });
        assert!(c.check_verb("bot", "read").is_ok());
        let err = c.check_verb("bot", "delete").unwrap_err();
        assert!(err.0.contains("\"delete\"") && err.0.contains("roles: r"), "{err}");
    }

    #[test]
    fn a_name_limited_rule_grants_only_matching_names() {
        let c = caller(RoleAllow {
            rules: vec![Rule { resources: vec!["bot".into()], verbs: vec!["update".into(), "list".into()], names: vec!["team-*".into()] }],
            ..Default::default()
        });
        assert!(c.check_verb_on("bot", "update", "team-web").is_ok());
        assert!(c.check_verb_on("bot", "update", "admin").is_err());
        assert!(c.check_verb("bot", "update").is_err(), "not granted on every name");
        assert_eq!(c.names_granted("bot", "list"), Ok(Some(vec!["team-*".to_string()])));
        assert!(c.names_granted("role", "list").is_err());
    }

    fn wi(spiffe_id: &str, x509_cap: i64) -> WorkloadIdentity {
        WorkloadIdentity {
            name: Name::parse("web").unwrap(),
            spiffe_id: spiffe_id.into(),
            dns_sans: vec![],
            jwt_extra_claims: Default::default(),
            max_x509_ttl_seconds: x509_cap,
            max_jwt_ttl_seconds: 0,
            allow: vec![],
            revision: 1,
        }
    }

    #[test]
    fn workload_identity_obeys_the_roles_ttl_caps() {
        let c = caller(RoleAllow { workload_identities: vec!["web".into()], max_x509_ttl_seconds: 300, max_jwt_ttl_seconds: 60, ..Default::default() });
        let a = c.attributes();
        assert_eq!(c.check_workload_identity(&wi("/svc/web", 0), &a, true, 86400), Ok(("/svc/web".into(), 300)));
        assert_eq!(c.check_workload_identity(&wi("/svc/web", 0), &a, false, 86400), Ok(("/svc/web".into(), 60)));
        // The workload identity's own cap can only lower it.
        assert_eq!(c.check_workload_identity(&wi("/svc/web", 100), &a, true, 86400), Ok(("/svc/web".into(), 100)));
        assert_eq!(c.check_workload_identity(&wi("/svc/web", 9000), &a, true, 86400), Ok(("/svc/web".into(), 300)));
    }

    #[test]
    fn workload_identity_cannot_render_under_the_bot_identity_prefix() {
        let c = caller(RoleAllow { workload_identities: vec!["*".into()], ..Default::default() });
        let mut a = c.attributes();
        a.insert("workload.name".into(), "admin".into());
        let err = c.check_workload_identity(&wi("/sigil/bot/{{workload.name}}", 0), &a, true, 86400).unwrap_err();
        assert!(err.0.contains("reserved"), "{err}");
    }

    #[test]
    fn unlisted_audience_is_denied() {
        let c = caller(RoleAllow { audiences: vec!["sts.amazonaws.com".into()], ..Default::default() });
        assert!(c.check_audiences(&["sts.amazonaws.com".into()]).is_ok());
        assert!(c.check_audiences(&["api://AzureADTokenExchange".into()]).is_err());
    }
}
