//! Which SSH certificate a caller may have: principals (user logins or host
//! names) under its roles' `ssh` rules, the extensions and critical options
//! those rules put in it, its longest lifetime; the shape of a role's `ssh`
//! block; and the escalation check for writing one.
//!
//! Mistakes this module exists to prevent:
//! - a principal no role grants (each requested principal must match a
//!   `principals` / `host_names` pattern, rendered for the caller like
//!   `spiffe_ids`; a template whose attribute is missing matches nothing);
//! - losing a role's restriction: every role a principal was granted by
//!   (the first in the bot's role order) contributes its critical options
//!   (two roles asking one option with different values refuse) and limits
//!   the extensions (intersection) and the lifetime (minimum);
//! - an empty or widened `source-address`: a critical option template whose
//!   attribute is missing refuses issuance; a substituted value must be a
//!   plain word or an IP address (never a comma or a prefix of its own), and
//!   the rendered list must parse as addresses;
//! - extensions or critical options sshd does not know (a typo would be
//!   ignored by sshd for extensions, and refuse every login for options).

use super::access_rules::SshRules;
use super::{glob, template, Attributes, Caller, Denied, Role};
use crate::ssh::cert::{check_principal, DEFAULT_EXTENSIONS, KNOWN_CRITICAL_OPTIONS, KNOWN_EXTENSIONS};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// User or host certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshCertType {
    /// Principals are login names (`ssh.principals`), signed by the ssh-user CA.
    User,
    /// Principals are host names (`ssh.host_names`), signed by the ssh-host CA.
    Host,
}

impl SshCertType {
    /// From the API name (`user`, `host`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "host" => Some(Self::Host),
            _ => None,
        }
    }
}

/// Most patterns in one list of a role's `ssh` block.
pub const MAX_PATTERNS: usize = 256;

/// What the roles allow for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshGrant {
    /// Extensions to write (user certificates).
    pub extensions: BTreeSet<String>,
    /// Critical options to write, rendered (user certificates).
    pub critical_options: BTreeMap<String, String>,
    /// Longest lifetime, seconds (the roles' caps; 0 in a role = `default_max`).
    pub max_ttl: i64,
}

fn patterns(rules: &SshRules, t: SshCertType) -> &[String] {
    match t {
        SshCertType::User => &rules.principals,
        SshCertType::Host => &rules.host_names,
    }
}

/// A role's extensions, the OpenSSH defaults standing for an empty list.
pub fn effective_extensions(rules: &SshRules) -> BTreeSet<String> {
    if rules.extensions.is_empty() {
        DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect()
    } else {
        rules.extensions.iter().cloned().collect()
    }
}

fn cap(rules: &SshRules, default_max: i64) -> i64 {
    if rules.max_ttl_seconds == 0 {
        default_max
    } else {
        rules.max_ttl_seconds.min(default_max)
    }
}

/// Whether `v` may be substituted into a critical option: a plain word
/// (letters, digits, `.`, `-`, `_`) or one IP address.
fn option_value_ok(v: &str) -> bool {
    template::is_literal_segment_value(v) || v.parse::<IpAddr>().is_ok()
}

/// Checks a rendered `source-address`: comma-separated addresses or CIDR blocks.
fn check_source_address(v: &str) -> Result<(), String> {
    for part in v.split(',') {
        let (addr, prefix) = part.split_once('/').map_or((part, None), |(a, p)| (a, Some(p)));
        let ip: IpAddr = addr.parse().map_err(|_| format!("source-address {v:?}: {part:?} is not an address or CIDR block"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if let Some(p) = prefix {
            if !p.parse::<u8>().is_ok_and(|n| n <= max) {
                return Err(format!("source-address {v:?}: bad prefix length in {part:?}"));
            }
        }
    }
    Ok(())
}

/// Renders a role's critical options for `attrs`.
pub fn render_options(options: &BTreeMap<String, String>, attrs: &Attributes) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in options {
        let rendered = template::render_checked(v, attrs, option_value_ok).map_err(|e| format!("critical option {k}: {e}"))?;
        if k == "source-address" {
            check_source_address(&rendered)?;
        }
        out.insert(k.clone(), rendered);
    }
    Ok(out)
}

impl Caller {
    /// The first role (in the bot's role order) whose `ssh` patterns of
    /// type `t`, rendered for `attrs`, match `principal`.
    fn ssh_role_for(&self, t: SshCertType, principal: &str, attrs: &Attributes) -> Option<&Role> {
        self.roles.iter().find(|r| {
            patterns(&r.allow.ssh, t).iter().any(|p| template::render(p, attrs).is_ok_and(|rendered| glob::matches(&rendered, principal)))
        })
    }

    /// Decides a certificate of type `t` for `principals`, with the
    /// `requested` extensions (empty: every one allowed; host certificates
    /// take none). `default_max` is the broker's `ssh.max_ttl`.
    pub fn check_ssh(&self, t: SshCertType, principals: &[String], requested: &[String], attrs: &Attributes, default_max: i64) -> Result<SshGrant, Denied> {
        let bot = self.bot.name.as_str();
        let mut used: Vec<&Role> = Vec::new();
        for p in principals {
            let role = self.ssh_role_for(t, p, attrs).ok_or_else(|| {
                let field = if t == SshCertType::User { "principals" } else { "host_names" };
                Denied(format!("SSH principal {p:?} matches no ssh.{field} pattern of bot {bot:?}'s roles"))
            })?;
            if !used.iter().any(|r| r.name == role.name) {
                used.push(role);
            }
        }
        let mut g = SshGrant { extensions: BTreeSet::new(), critical_options: BTreeMap::new(), max_ttl: default_max };
        for r in &used {
            g.max_ttl = g.max_ttl.min(cap(&r.allow.ssh, default_max));
        }
        if t == SshCertType::Host {
            return Ok(g);
        }
        let mut allowed: Option<BTreeSet<String>> = None;
        for r in &used {
            let e = effective_extensions(&r.allow.ssh);
            allowed = Some(match allowed {
                None => e,
                Some(a) => a.intersection(&e).cloned().collect(),
            });
            let opts = render_options(&r.allow.ssh.critical_options, attrs).map_err(|e| Denied(format!("role {:?}: {e}", r.name.as_str())))?;
            for (k, v) in opts {
                match g.critical_options.get(&k) {
                    Some(prev) if *prev != v => {
                        return Err(Denied(format!(
                            "the requested principals come from roles with different {k} critical options ({prev:?}, {v:?}); request them in separate certificates"
                        )))
                    }
                    _ => {
                        g.critical_options.insert(k, v);
                    }
                }
            }
        }
        let allowed = allowed.unwrap_or_default();
        if requested.is_empty() {
            g.extensions = allowed;
        } else {
            for e in requested {
                if !allowed.contains(e) {
                    return Err(Denied(format!(
                        "SSH extension {e:?} is not allowed by the roles granting these principals (allowed: {})",
                        allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
                g.extensions.insert(e.clone());
            }
        }
        Ok(g)
    }

    /// `Ok` when every `ssh` grant of `target` is within one of the caller's
    /// roles: each pattern covered by a pattern of a role whose lifetime cap
    /// is at least the target's, whose extensions include the target's and
    /// whose critical options the target keeps (same name and value).
    pub fn covers_ssh(&self, target: &SshRules, default_max: i64) -> Result<(), String> {
        let attrs = self.attributes();
        let tcap = cap(target, default_max);
        let text = effective_extensions(target);
        for t in [SshCertType::User, SshCertType::Host] {
            let field = if t == SshCertType::User { "principals" } else { "host_names" };
            for q in patterns(target, t) {
                let want = template::as_pattern(q).map_err(|e| format!("ssh.{field} pattern {q:?}: {e}"))?;
                let held = self.roles.iter().any(|r| {
                    let c = &r.allow.ssh;
                    let restrictions_kept = cap(c, default_max) >= tcap
                        && (t == SshCertType::Host
                            || (effective_extensions(c).is_superset(&text) && c.critical_options.iter().all(|(k, v)| target.critical_options.get(k) == Some(v))));
                    restrictions_kept
                        && patterns(c, t).iter().any(|p| template::as_holder_pattern(p, &attrs).is_ok_and(|h| glob::covers(&h, &want)))
                });
                if !held {
                    return Err(format!(
                        "ssh.{field} pattern {q:?} is not within an ssh.{field} pattern of the caller's roles with the same or wider extensions, the same critical options and a lifetime cap of at least {tcap} s"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks a role's `ssh` block; the error names the field.
pub fn validate(rules: &SshRules) -> Result<(), (String, String)> {
    for (field, list) in [("principals", &rules.principals), ("host_names", &rules.host_names)] {
        if list.len() > MAX_PATTERNS {
            return Err((format!("allow.ssh.{field}"), format!("at most {MAX_PATTERNS} patterns")));
        }
        for (i, p) in list.iter().enumerate() {
            let f = format!("allow.ssh.{field}[{i}]");
            let shape = template::as_pattern(p).map_err(|e| (f.clone(), e.to_string()))?;
            check_principal(&shape).map_err(|e| (f.clone(), format!("not a {} pattern: {e}", if field == "principals" { "login name" } else { "host name" })))?;
        }
    }
    for (i, e) in rules.extensions.iter().enumerate() {
        if !KNOWN_EXTENSIONS.contains(&e.as_str()) {
            return Err((format!("allow.ssh.extensions[{i}]"), format!("unknown extension {e:?} (known: {})", KNOWN_EXTENSIONS.join(", "))));
        }
    }
    for (k, v) in &rules.critical_options {
        let f = format!("allow.ssh.critical_options.{k}");
        if !KNOWN_CRITICAL_OPTIONS.contains(&k.as_str()) {
            return Err((f, format!("unknown critical option {k:?} (known: {})", KNOWN_CRITICAL_OPTIONS.join(", "))));
        }
        if v.len() > crate::ssh::MAX_FIELD || v.chars().any(char::is_control) {
            return Err((f, format!("at most {} bytes, no control characters", crate::ssh::MAX_FIELD)));
        }
        template::as_pattern(v).map_err(|e| (f.clone(), e.to_string()))?;
        // The shape with every placeholder as a sample address.
        let shape = substitute_sample(v);
        match k.as_str() {
            "source-address" => check_source_address(&shape).map_err(|e| (f.clone(), e))?,
            "verify-required" if !v.is_empty() => return Err((f, "verify-required takes no value (\"\")".into())),
            "force-command" if v.is_empty() => return Err((f, "force-command needs a command".into())),
            _ => {}
        }
    }
    if rules.max_ttl_seconds < 0 {
        return Err(("allow.ssh.max_ttl_seconds".into(), "must not be negative".into()));
    }
    Ok(())
}

/// `v` with every `{{...}}` replaced by a sample IP address (validation only).
fn substitute_sample(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find("}}") {
            Some(end) => {
                out.push_str("192.0.2.1");
                rest = &rest[start + 2 + end + 2..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Bot, Name, RoleAllow};

    fn caller(rules: Vec<SshRules>, join: &[(&str, &str)]) -> Caller {
        let roles: Vec<Role> = rules
            .into_iter()
            .enumerate()
            .map(|(i, ssh)| Role {
                name: Name::parse(&format!("r{i}")).unwrap(),
                description: String::new(),
                allow: RoleAllow { ssh, ..Default::default() },
                revision: 1,
            })
            .collect();
        Caller {
            bot: Bot {
                name: Name::parse("ci").unwrap(),
                roles: roles.iter().map(|r| r.name.clone()).collect(),
                traits: Default::default(),
                max_session_ttl_seconds: 0,
                revision: 1,
                generation: 0,
                locked: false,
            },
            roles,
            join_attributes: join.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            instance: "i1".into(),
        }
    }

    fn rules(principals: &[&str], extensions: &[&str], options: &[(&str, &str)], ttl: i64) -> SshRules {
        SshRules {
            principals: principals.iter().map(|s| s.to_string()).collect(),
            extensions: extensions.iter().map(|s| s.to_string()).collect(),
            critical_options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            max_ttl_seconds: ttl,
            ..Default::default()
        }
    }

    fn p(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_join_attribute_cannot_widen_source_address() {
        let r = rules(&["deploy"], &[], &[("source-address", "{{join.ip}}/32")], 0);
        let ok = caller(vec![r.clone()], &[("join.ip", "192.0.2.7")]);
        let g = ok.check_ssh(SshCertType::User, &p(&["deploy"]), &[], &ok.attributes(), 3600).unwrap();
        assert_eq!(g.critical_options["source-address"], "192.0.2.7/32");
        let v6 = caller(vec![r.clone()], &[("join.ip", "2001:db8::1")]);
        assert!(v6.check_ssh(SshCertType::User, &p(&["deploy"]), &[], &v6.attributes(), 3600).is_ok());
        for evil in ["192.0.2.7/0,0.0.0.0", "0.0.0.0/0", "192.0.2.7,0.0.0.0/0", "*", "", "a b"] {
            let c = caller(vec![r.clone()], &[("join.ip", evil)]);
            let e = c.check_ssh(SshCertType::User, &p(&["deploy"]), &[], &c.attributes(), 3600).unwrap_err();
            assert!(e.0.contains("source-address") || e.0.contains("join.ip"), "{evil:?}: {e}");
        }
        // A plain word passes the substitution but is no address: refused too.
        let c = caller(vec![r], &[("join.ip", "localhost")]);
        assert!(c.check_ssh(SshCertType::User, &p(&["deploy"]), &[], &c.attributes(), 3600).is_err());
    }

    #[test]
    fn principals_from_two_roles_keep_both_restrictions() {
        let c = caller(
            vec![
                rules(&["deploy"], &["permit-pty", "permit-port-forwarding"], &[("force-command", "/bin/deploy")], 600),
                rules(&["ops"], &["permit-pty"], &[("source-address", "10.0.0.0/8")], 0),
            ],
            &[],
        );
        let g = c.check_ssh(SshCertType::User, &p(&["deploy", "ops"]), &[], &c.attributes(), 3600).unwrap();
        assert_eq!(g.extensions.iter().cloned().collect::<Vec<_>>(), p(&["permit-pty"]), "intersection");
        assert_eq!(g.critical_options.len(), 2, "both roles' options: {:?}", g.critical_options);
        assert_eq!(g.max_ttl, 600, "the smaller cap");
        // One role alone: its own rules.
        let g = c.check_ssh(SshCertType::User, &p(&["ops"]), &[], &c.attributes(), 3600).unwrap();
        assert_eq!((g.max_ttl, g.critical_options.len()), (3600, 1));
        // The same option with different values in two roles: refused.
        let c = caller(
            vec![rules(&["a"], &[], &[("force-command", "/bin/a")], 0), rules(&["b"], &[], &[("force-command", "/bin/b")], 0)],
            &[],
        );
        assert!(c.check_ssh(SshCertType::User, &p(&["a", "b"]), &[], &c.attributes(), 3600).is_err());
    }

    #[test]
    fn role_validation_names_the_field() {
        let bad = [
            (rules(&["a b"], &[], &[], 0), "allow.ssh.principals[0]"),
            (rules(&["x"], &["permit-all"], &[], 0), "allow.ssh.extensions[0]"),
            (rules(&["x"], &[], &[("permit-root", "")], 0), "allow.ssh.critical_options.permit-root"),
            (rules(&["x"], &[], &[("verify-required", "yes")], 0), "allow.ssh.critical_options.verify-required"),
            (rules(&["x"], &[], &[("source-address", "{{join.ip}}/99")], 0), "allow.ssh.critical_options.source-address"),
            (rules(&["x"], &[], &[], -5), "allow.ssh.max_ttl_seconds"),
        ];
        for (r, field) in bad {
            assert_eq!(validate(&r).unwrap_err().0, field);
        }
        assert!(validate(&rules(&["{{bot.name}}", "deploy-*"], &["permit-pty"], &[("source-address", "{{join.ip}}/32,10.0.0.0/8")], 60)).is_ok());
    }
}
