//! "Grants nothing beyond what the caller holds": the check that keeps a
//! delegated bot from raising its own power (Kubernetes RBAC's rule, with its
//! `escalate` and `bind` verbs as the explicit way out).
//!
//! Where it applies (see `service::resources`): a role's contents on create and
//! update, the roles of a bot on create and update, the roles of the bot a join
//! token is created or updated for, and a workload identity's SPIFFE ID on
//! create and update. Without it, `join_token:create` alone let a bot join as
//! the admin bot, and `bot:update` let a bot attach any role to itself.
//!
//! How coverage is decided, grant by grant (each grant of the target must be
//! covered by a single grant of one of the caller's roles):
//! - `spiffe_ids`: the target pattern is read with every `{{...}}` as `*` (it
//!   may be rendered for any bot); the caller's pattern is rendered for the
//!   caller (`bot.*`, `join.*` filled in, `workload.*` as `*`, since the caller
//!   asserts those itself); then [`glob::path_covers`]. The covering role's
//!   lifetime caps must be at least the target role's.
//! - `workload_identities`: [`glob::covers`] on the name globs, with the same
//!   condition on lifetime caps.
//! - `audiences`: [`glob::covers`].
//! - `rules`: every (resource, verb, name glob) the target rule names, `*`
//!   included, must be granted by one caller rule (a `*` only by a `*`).
//! - a workload identity's `spiffe_id` template: as a `spiffe_ids` pattern.
//!
//! The check is sound, not complete: it never lets a wider grant through, and
//! may refuse a grant that is covered only by a union of the caller's grants.

use super::{glob, template, Caller, Role, RoleAllow};

/// The lifetime caps a role cap of 0 stands for (the broker's maxima).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultCaps {
    /// Largest X.509-SVID lifetime, seconds.
    pub x509: i64,
    /// Largest JWT-SVID lifetime, seconds.
    pub jwt: i64,
    /// Largest SSH certificate lifetime, seconds (`ssh.max_ttl_seconds`).
    pub ssh: i64,
    /// Largest database / Kubernetes certificate lifetime, seconds
    /// (`tls_certificates.max_ttl_seconds`).
    pub tls: i64,
}

/// A role's effective (X.509, JWT) caps.
fn caps(allow: &RoleAllow, d: DefaultCaps) -> (i64, i64) {
    let eff = |v: i64, dflt: i64| if v == 0 { dflt } else { v };
    (eff(allow.max_x509_ttl_seconds, d.x509), eff(allow.max_jwt_ttl_seconds, d.jwt))
}

impl Caller {
    /// `Ok` when every grant of `allow` is covered by the caller's roles;
    /// otherwise the first grant beyond the caller, described for the operator.
    pub fn covers_allow(&self, allow: &RoleAllow, d: DefaultCaps) -> Result<(), String> {
        let (tx, tj) = caps(allow, d);
        let caps_ok = |r: &Role| {
            let (cx, cj) = caps(&r.allow, d);
            cx >= tx && cj >= tj
        };
        let attrs = self.attributes();
        for q in &allow.spiffe_ids {
            let want = template::as_pattern(q).map_err(|e| format!("spiffe_ids pattern {q:?}: {e}"))?;
            let held = self.roles.iter().filter(|r| caps_ok(r)).any(|r| {
                r.allow.spiffe_ids.iter().any(|p| template::as_holder_pattern(p, &attrs).is_ok_and(|h| glob::path_covers(&h, &want)))
            });
            if !held {
                return Err(format!(
                    "spiffe_ids pattern {q:?} (max TTL {tx} s X.509, {tj} s JWT) is not within a spiffe_ids pattern and lifetime caps of the caller's roles"
                ));
            }
        }
        for q in &allow.workload_identities {
            let held = self.roles.iter().filter(|r| caps_ok(r)).any(|r| r.allow.workload_identities.iter().any(|p| glob::covers(p, q)));
            if !held {
                return Err(format!(
                    "workload_identities pattern {q:?} (max TTL {tx} s X.509, {tj} s JWT) is not within a workload_identities pattern and lifetime caps of the caller's roles"
                ));
            }
        }
        for q in &allow.audiences {
            if !self.roles.iter().any(|r| r.allow.audiences.iter().any(|p| glob::covers(p, q))) {
                return Err(format!("audience {q:?} is not within an audiences pattern of the caller's roles"));
            }
        }
        for (i, t) in allow.rules.iter().enumerate() {
            let all = ["*".to_string()];
            let names: &[String] = if t.names.is_empty() { &all } else { &t.names };
            for res in &t.resources {
                for verb in &t.verbs {
                    for n in names {
                        if !self.rules().any(|c| c.grants_kind(res, verb) && c.covers_name(n)) {
                            return Err(format!(
                                "rules[{i}] grants verb {verb:?} on {res:?} named {n:?}, which the caller's roles do not grant"
                            ));
                        }
                    }
                }
            }
        }
        // ssh: principals / host_names, with extensions, critical options and cap.
        self.covers_ssh(&allow.ssh, d.ssh)?;
        // database / kubernetes: users, groups, server_names, with the cap.
        self.covers_tls(&allow.database, &allow.kubernetes, d.tls)?;
        Ok(())
    }

    /// `Ok` when every SPIFFE ID the path template can render to is within the
    /// caller's `spiffe_ids` patterns.
    pub fn covers_path_template(&self, template_path: &str) -> Result<(), String> {
        let want = template::as_pattern(template_path).map_err(|e| format!("spiffe_id {template_path:?}: {e}"))?;
        let attrs = self.attributes();
        let held = self
            .roles
            .iter()
            .flat_map(|r| r.allow.spiffe_ids.iter())
            .any(|p| template::as_holder_pattern(p, &attrs).is_ok_and(|h| glob::path_covers(&h, &want)));
        if held {
            Ok(())
        } else {
            Err(format!("spiffe_id {template_path:?} is not within a spiffe_ids pattern of the caller's roles"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Bot, Name, Rule};

    const D: DefaultCaps = DefaultCaps { x509: 86400, jwt: 86400, ssh: 28800, tls: 43200 };

    fn caller(allows: Vec<RoleAllow>) -> Caller {
        let roles: Vec<Role> = allows
            .into_iter()
            .enumerate()
            .map(|(i, allow)| Role { name: Name::parse(&format!("r{i}")).unwrap(), description: String::new(), allow, revision: 1 })
            .collect();
        Caller {
            bot: Bot {
                name: Name::parse("team-lead").unwrap(),
                roles: roles.iter().map(|r| r.name.clone()).collect(),
                traits: [("team".to_string(), vec!["web".to_string()])].into_iter().collect(),
                max_session_ttl_seconds: 0,
                revision: 1,
                generation: 0,
                locked: false,
            },
            roles,
            join_attributes: Default::default(),
            instance: String::new(),
        }
    }

    fn rule(resources: &[&str], verbs: &[&str], names: &[&str]) -> Rule {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Rule { resources: v(resources), verbs: v(verbs), names: v(names) }
    }

    fn ids(p: &[&str]) -> RoleAllow {
        RoleAllow { spiffe_ids: p.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn admin() -> RoleAllow {
        RoleAllow {
            spiffe_ids: vec!["/**".into()],
            audiences: vec!["*".into()],
            workload_identities: vec!["*".into()],
            rules: vec![rule(&["*"], &["*"], &[])],
            ..Default::default()
        }
    }

    #[test]
    fn admin_covers_every_grant_at_default_caps() {
        let c = caller(vec![admin()]);
        assert_eq!(c.covers_allow(&admin(), D), Ok(()));
        let mut a = ids(&["/svc/{{bot.name}}/**", "/x"]);
        a.rules = vec![rule(&["bot"], &["update"], &["team-*"])];
        assert_eq!(c.covers_allow(&a, D), Ok(()));
    }

    #[test]
    fn a_join_token_creator_does_not_cover_the_admin_role() {
        let c = caller(vec![RoleAllow { rules: vec![rule(&["join_token"], &["create"], &[])], ..Default::default() }]);
        assert!(c.covers_allow(&admin(), D).unwrap_err().contains("/**"));
        assert_eq!(c.covers_allow(&RoleAllow::default(), D), Ok(()));
    }

    #[test]
    fn wider_spiffe_id_pattern_is_not_covered() {
        let c = caller(vec![ids(&["/team/**"])]);
        assert_eq!(c.covers_allow(&ids(&["/team/web/*"]), D), Ok(()));
        assert!(c.covers_allow(&ids(&["/prod/db"]), D).is_err());
        assert!(c.covers_allow(&ids(&["/**"]), D).is_err());
    }

    #[test]
    fn a_template_in_the_target_counts_as_any_value() {
        // The caller holds only its own name's subtree; a role templated on
        // bot.name would give every bot holding it its own subtree.
        let c = caller(vec![ids(&["/bot/{{bot.name}}/**"])]);
        assert_eq!(c.covers_allow(&ids(&["/bot/team-lead/web"]), D), Ok(()));
        assert!(c.covers_allow(&ids(&["/bot/{{bot.name}}/**"]), D).is_err());
        // A workload.* template of the caller is asserted by the caller: any value.
        let c = caller(vec![ids(&["/svc/{{workload.unix.uid}}"])]);
        assert_eq!(c.covers_allow(&ids(&["/svc/{{workload.unix.uid}}"]), D), Ok(()));
        assert!(c.covers_allow(&ids(&["/svc/**"]), D).is_err());
        // Traits are the caller's own.
        let c = caller(vec![ids(&["/team/{{bot.traits.team}}/**"])]);
        assert_eq!(c.covers_allow(&ids(&["/team/web/api"]), D), Ok(()));
        assert!(c.covers_allow(&ids(&["/team/db/api"]), D).is_err());
    }

    #[test]
    fn longer_lifetimes_are_not_covered() {
        let mut held = ids(&["/team/**"]);
        held.max_x509_ttl_seconds = 300;
        held.max_jwt_ttl_seconds = 60;
        let c = caller(vec![held]);
        let mut want = ids(&["/team/web"]);
        assert!(c.covers_allow(&want, D).is_err(), "cap 0 means the broker maximum");
        want.max_x509_ttl_seconds = 300;
        want.max_jwt_ttl_seconds = 61;
        assert!(c.covers_allow(&want, D).is_err());
        want.max_jwt_ttl_seconds = 60;
        assert_eq!(c.covers_allow(&want, D), Ok(()));
    }

    #[test]
    fn rules_are_covered_verb_by_verb_and_name_by_name() {
        let c = caller(vec![RoleAllow {
            rules: vec![rule(&["bot", "join_token"], &["create", "read"], &["team-*"]), rule(&["role"], &["read"], &[])],
            ..Default::default()
        }]);
        assert_eq!(c.covers_allow(&RoleAllow { rules: vec![rule(&["bot"], &["read"], &["team-web"])], ..Default::default() }, D), Ok(()));
        assert_eq!(c.covers_allow(&RoleAllow { rules: vec![rule(&["role"], &["read"], &["x"])], ..Default::default() }, D), Ok(()));
        for wider in [
            rule(&["bot"], &["read"], &[]),
            rule(&["bot"], &["update"], &["team-web"]),
            rule(&["*"], &["read"], &["team-web"]),
            rule(&["bot"], &["*"], &["team-web"]),
            rule(&["role"], &["bind"], &["x"]),
            rule(&["bot"], &["read"], &["*"]),
        ] {
            assert!(c.covers_allow(&RoleAllow { rules: vec![wider.clone()], ..Default::default() }, D).is_err(), "{wider:?}");
        }
    }

    #[test]
    fn audiences_and_workload_identities_are_covered_by_globs() {
        let c = caller(vec![RoleAllow {
            audiences: vec!["sts.*.com".into()],
            workload_identities: vec!["web-*".into()],
            ..Default::default()
        }]);
        let ok = RoleAllow { audiences: vec!["sts.amazonaws.com".into()], workload_identities: vec!["web-a".into()], ..Default::default() };
        assert_eq!(c.covers_allow(&ok, D), Ok(()));
        assert!(c.covers_allow(&RoleAllow { audiences: vec!["*".into()], ..Default::default() }, D).is_err());
        assert!(c.covers_allow(&RoleAllow { workload_identities: vec!["db".into()], ..Default::default() }, D).is_err());
    }

    #[test]
    fn a_workload_identity_template_must_stay_within_the_callers_ids() {
        let c = caller(vec![ids(&["/team/{{bot.traits.team}}/**"])]);
        assert_eq!(c.covers_path_template("/team/web/{{workload.unix.uid}}"), Ok(()));
        assert!(c.covers_path_template("/team/{{workload.unix.uid}}/x").is_err());
        assert!(c.covers_path_template("/sigil/bot/admin").is_err());
    }
}
