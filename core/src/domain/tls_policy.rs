//! Which database or Kubernetes X.509 certificate a caller may have: the
//! subject values a request names (database user, Kubernetes user and
//! groups, database server names) under its roles' `database` and
//! `kubernetes` rules, the longest lifetime; the shape of those role blocks;
//! and the escalation check for writing them.
//!
//! Mistakes this module exists to prevent:
//! - a subject value no role grants: the user (CN), every group (O) and every
//!   server name (SAN) must each match a pattern of one of the caller's roles,
//!   rendered for the caller like `spiffe_ids` (a template whose attribute is
//!   missing matches nothing);
//! - one kind of certificate standing for another: each kind has its own rule
//!   list and its own CA (`database` or `kubernetes`), so a database user
//!   grant never yields a Kubernetes login (CN=admin on the database CA is
//!   not trusted by an API server whose `--client-ca-file` is the kubernetes
//!   CA);
//! - subject values that change meaning downstream: control characters, an
//!   empty or overlong CN (X.520 ub-common-name: 64), a `/` in a database
//!   user (MariaDB's `REQUIRE SUBJECT` compares OpenSSL's one-line form,
//!   where `CN=app/CN=admin` would read as two attributes), more than
//!   [`MAX_GROUPS`] groups, server names that are neither DNS names nor IP
//!   addresses (no wildcards);
//! - a lifetime longer than every granting role allows: the cap is the
//!   smallest, over the requested values, of the largest cap of the roles
//!   granting that value, and never above the broker's maximum.

use super::access_rules::{DatabaseRules, KubernetesRules};
use super::{glob, template, Attributes, Caller, Denied, Role};
use std::net::IpAddr;

/// Longest CN (and O) value: X.520 ub-common-name / ub-organization-name.
pub const MAX_SUBJECT_VALUE: usize = 64;
/// Most groups (O attributes) in one Kubernetes certificate.
pub const MAX_GROUPS: usize = 64;
/// Most server names (SANs) in one database server certificate.
pub const MAX_SERVER_NAMES: usize = 64;
/// Most patterns in one list of a role's `database` / `kubernetes` block.
pub const MAX_PATTERNS: usize = 256;
/// Longest pattern in those lists.
pub const MAX_PATTERN_LEN: usize = 256;

/// A kind of TLS certificate the broker issues beyond SVIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKind {
    /// Database client: CN = database user, EKU clientAuth (database CA).
    DatabaseClient,
    /// Database server: DNS/IP SANs, CN = first name, EKU serverAuth (database CA).
    DatabaseServer,
    /// Kubernetes client: CN = user, O = groups, EKU clientAuth (kubernetes CA).
    KubernetesClient,
}

impl TlsKind {
    /// Every kind.
    pub const ALL: [TlsKind; 3] = [TlsKind::DatabaseClient, TlsKind::DatabaseServer, TlsKind::KubernetesClient];

    /// API name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsKind::DatabaseClient => "database-client",
            TlsKind::DatabaseServer => "database-server",
            TlsKind::KubernetesClient => "kubernetes-client",
        }
    }

    /// From the API name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The CA purpose that signs this kind.
    pub fn purpose(self) -> super::ca_rotation::Purpose {
        match self {
            TlsKind::DatabaseClient | TlsKind::DatabaseServer => super::ca_rotation::Purpose::Database,
            TlsKind::KubernetesClient => super::ca_rotation::Purpose::Kubernetes,
        }
    }
}

/// A checked request: what goes into the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsGrant {
    /// Subject CN (none for a server whose first name is longer than 64).
    pub common_name: Option<String>,
    /// Subject O values (Kubernetes groups), in request order, deduplicated.
    pub organizations: Vec<String>,
    /// DNS SANs (lowercase).
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Longest lifetime, seconds.
    pub max_ttl: i64,
}

/// A request's subject values.
#[derive(Debug, Clone, Copy)]
pub struct TlsRequest<'a> {
    /// Kind.
    pub kind: TlsKind,
    /// User (client kinds).
    pub user: &'a str,
    /// Groups (Kubernetes).
    pub groups: &'a [String],
    /// Server names (database server).
    pub server_names: &'a [String],
}

/// A request is malformed (field, message): not a permission question.
pub type Invalid = (String, String);

fn invalid(field: impl Into<String>, m: impl Into<String>) -> Invalid {
    (field.into(), m.into())
}

/// Checks one subject value (CN or O): 1 to 64 characters, no control characters.
fn check_subject_value(field: &str, v: &str) -> Result<(), Invalid> {
    if v.is_empty() || v.chars().count() > MAX_SUBJECT_VALUE {
        return Err(invalid(field, format!("must be 1 to {MAX_SUBJECT_VALUE} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    if v.trim() != v {
        return Err(invalid(field, "must not start or end with white space"));
    }
    Ok(())
}

/// A server name: an IP address, or a lowercase DNS name (letters, digits,
/// `-`, labels of 1 to 63, at most 253 in all; no wildcard).
pub fn parse_server_name(v: &str) -> Result<ServerName, String> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(ServerName::Ip(ip));
    }
    let ok_label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if v.is_empty() || v.len() > 253 || !v.split('.').all(ok_label) {
        return Err(format!("{v:?} is neither an IP address nor a lowercase DNS name (letters, digits, '-', no wildcard)"));
    }
    Ok(ServerName::Dns(v.to_string()))
}

/// A parsed server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    /// DNS name.
    Dns(String),
    /// IP address.
    Ip(IpAddr),
}

impl ServerName {
    /// The text patterns are matched against (an IP address in its canonical form).
    pub fn text(&self) -> String {
        match self {
            ServerName::Dns(d) => d.clone(),
            ServerName::Ip(ip) => ip.to_string(),
        }
    }
}

/// Checks the request's shape (bounded, well-formed values), before any
/// role is consulted.
pub fn check_request(r: &TlsRequest<'_>) -> Result<(), Invalid> {
    match r.kind {
        TlsKind::DatabaseClient | TlsKind::KubernetesClient => {
            check_subject_value("user", r.user)?;
            if r.kind == TlsKind::DatabaseClient && r.user.contains('/') {
                return Err(invalid("user", "a database user must not contain '/' (MariaDB REQUIRE SUBJECT reads '/' as an attribute separator)"));
            }
            if !r.server_names.is_empty() {
                return Err(invalid("server_names", format!("{} certificates take no server_names", r.kind.as_str())));
            }
        }
        TlsKind::DatabaseServer => {
            if !r.user.is_empty() {
                return Err(invalid("user", "database-server certificates take no user; name the server in server_names"));
            }
            if r.server_names.is_empty() || r.server_names.len() > MAX_SERVER_NAMES {
                return Err(invalid("server_names", format!("give 1 to {MAX_SERVER_NAMES} server names")));
            }
            for (i, n) in r.server_names.iter().enumerate() {
                parse_server_name(n).map_err(|m| invalid(format!("server_names[{i}]"), m))?;
            }
        }
    }
    if r.kind != TlsKind::KubernetesClient && !r.groups.is_empty() {
        return Err(invalid("groups", format!("{} certificates take no groups", r.kind.as_str())));
    }
    if r.groups.len() > MAX_GROUPS {
        return Err(invalid("groups", format!("at most {MAX_GROUPS} groups")));
    }
    for (i, g) in r.groups.iter().enumerate() {
        check_subject_value(&format!("groups[{i}]"), g)?;
    }
    Ok(())
}

fn cap(v: i64, default_max: i64) -> i64 {
    if v == 0 {
        default_max
    } else {
        v.min(default_max)
    }
}

/// The rule list of `role` a value of `list` is matched against, with the role's cap.
fn list<'r>(role: &'r Role, which: List) -> (&'r [String], i64) {
    let (d, k) = (&role.allow.database, &role.allow.kubernetes);
    match which {
        List::DatabaseUsers => (&d.users, d.max_ttl_seconds),
        List::DatabaseServerNames => (&d.server_names, d.max_ttl_seconds),
        List::KubernetesUsers => (&k.users, k.max_ttl_seconds),
        List::KubernetesGroups => (&k.groups, k.max_ttl_seconds),
    }
}

/// One list of patterns in a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    DatabaseUsers,
    DatabaseServerNames,
    KubernetesUsers,
    KubernetesGroups,
}

impl List {
    const ALL: [List; 4] = [List::DatabaseUsers, List::DatabaseServerNames, List::KubernetesUsers, List::KubernetesGroups];

    fn field(self) -> &'static str {
        match self {
            List::DatabaseUsers => "database.users",
            List::DatabaseServerNames => "database.server_names",
            List::KubernetesUsers => "kubernetes.users",
            List::KubernetesGroups => "kubernetes.groups",
        }
    }

    fn what(self) -> &'static str {
        match self {
            List::DatabaseUsers => "database user",
            List::DatabaseServerNames => "database server name",
            List::KubernetesUsers => "Kubernetes user",
            List::KubernetesGroups => "Kubernetes group",
        }
    }
}

impl Caller {
    /// The largest cap of the roles granting `value` in `which`, or who was tried.
    fn tls_value_cap(&self, which: List, value: &str, attrs: &Attributes, default_max: i64) -> Result<i64, Denied> {
        let best = self
            .roles
            .iter()
            .filter_map(|r| {
                let (patterns, c) = list(r, which);
                patterns
                    .iter()
                    .any(|p| template::render(p, attrs).is_ok_and(|rendered| glob::matches(&rendered, value)))
                    .then(|| cap(c, default_max))
            })
            .max();
        best.ok_or_else(|| {
            Denied(format!(
                "{} {value:?} matches no {} pattern of bot {:?}'s roles",
                which.what(),
                which.field(),
                self.bot.name.as_str()
            ))
        })
    }

    /// Decides a certificate for a request already checked by
    /// [`check_request`]. `default_max` is the broker's
    /// `tls_certificates.max_ttl_seconds`.
    pub fn check_tls(&self, r: &TlsRequest<'_>, attrs: &Attributes, default_max: i64) -> Result<TlsGrant, Denied> {
        let mut g = TlsGrant { common_name: None, organizations: Vec::new(), dns_names: Vec::new(), ip_addresses: Vec::new(), max_ttl: default_max };
        match r.kind {
            TlsKind::DatabaseClient => {
                g.max_ttl = g.max_ttl.min(self.tls_value_cap(List::DatabaseUsers, r.user, attrs, default_max)?);
                g.common_name = Some(r.user.to_string());
            }
            TlsKind::KubernetesClient => {
                g.max_ttl = g.max_ttl.min(self.tls_value_cap(List::KubernetesUsers, r.user, attrs, default_max)?);
                g.common_name = Some(r.user.to_string());
                for grp in r.groups {
                    g.max_ttl = g.max_ttl.min(self.tls_value_cap(List::KubernetesGroups, grp, attrs, default_max)?);
                    if !g.organizations.contains(grp) {
                        g.organizations.push(grp.clone());
                    }
                }
            }
            TlsKind::DatabaseServer => {
                for n in r.server_names {
                    let name = parse_server_name(n).map_err(Denied)?;
                    let text = name.text();
                    g.max_ttl = g.max_ttl.min(self.tls_value_cap(List::DatabaseServerNames, &text, attrs, default_max)?);
                    match name {
                        ServerName::Dns(d) if !g.dns_names.contains(&d) => g.dns_names.push(d),
                        ServerName::Ip(ip) if !g.ip_addresses.contains(&ip) => g.ip_addresses.push(ip),
                        _ => {}
                    }
                }
                // CN = the first name, when it fits (clients check the SANs).
                g.common_name = r.server_names.first().map(|n| parse_server_name(n).map(|s| s.text()).unwrap_or_default()).filter(|t| !t.is_empty() && t.len() <= MAX_SUBJECT_VALUE);
            }
        }
        Ok(g)
    }

    /// `Ok` when every `database` / `kubernetes` pattern of `target` is
    /// within a pattern of the same list of one of the caller's roles whose
    /// lifetime cap (0 = `default_max`) is at least the target block's.
    pub fn covers_tls(&self, db: &DatabaseRules, kube: &KubernetesRules, default_max: i64) -> Result<(), String> {
        let attrs = self.attributes();
        let target = Role {
            name: self.bot.name.clone(),
            description: String::new(),
            allow: super::RoleAllow { database: db.clone(), kubernetes: kube.clone(), ..Default::default() },
            revision: 0,
        };
        for which in List::ALL {
            let (wanted, tcap) = list(&target, which);
            let tcap = cap(tcap, default_max);
            for q in wanted {
                let want = template::as_pattern(q).map_err(|e| format!("{} pattern {q:?}: {e}", which.field()))?;
                let held = self.roles.iter().any(|r| {
                    let (held, c) = list(r, which);
                    cap(c, default_max) >= tcap && held.iter().any(|p| template::as_holder_pattern(p, &attrs).is_ok_and(|h| glob::covers(&h, &want)))
                });
                if !held {
                    let f = which.field();
                    return Err(format!("{f} pattern {q:?} is not within a {f} pattern of the caller's roles with a lifetime cap of at least {tcap} s"));
                }
            }
        }
        Ok(())
    }
}

/// Checks a role's `database` and `kubernetes` blocks; the error names the field.
pub fn validate(db: &DatabaseRules, kube: &KubernetesRules) -> Result<(), Invalid> {
    for (field, v) in [("allow.database.max_ttl_seconds", db.max_ttl_seconds), ("allow.kubernetes.max_ttl_seconds", kube.max_ttl_seconds)] {
        if v < 0 {
            return Err(invalid(field, "must not be negative"));
        }
    }
    let lists: [(List, &[String]); 4] = [
        (List::DatabaseUsers, &db.users),
        (List::DatabaseServerNames, &db.server_names),
        (List::KubernetesUsers, &kube.users),
        (List::KubernetesGroups, &kube.groups),
    ];
    for (which, patterns) in lists {
        let base = format!("allow.{}", which.field());
        if patterns.len() > MAX_PATTERNS {
            return Err(invalid(base, format!("at most {MAX_PATTERNS} patterns")));
        }
        for (i, p) in patterns.iter().enumerate() {
            let f = format!("{base}[{i}]");
            if p.is_empty() || p.len() > MAX_PATTERN_LEN || p.chars().any(char::is_control) {
                return Err(invalid(f, format!("must be 1 to {MAX_PATTERN_LEN} bytes without control characters")));
            }
            let shape = template::as_pattern(p).map_err(|e| invalid(f.clone(), e.to_string()))?;
            if which == List::DatabaseServerNames {
                let ok = shape.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*:".contains(&b));
                if !ok {
                    return Err(invalid(f, format!("{p:?} is not a server name pattern: lowercase DNS names or IP addresses, '*' for any characters")));
                }
            }
            if which == List::DatabaseUsers && shape.contains('/') {
                return Err(invalid(f, "a database user pattern must not contain '/'"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Bot, Name, RoleAllow};

    const MAX: i64 = 43_200;

    fn caller(allows: Vec<RoleAllow>) -> Caller {
        let roles: Vec<Role> = allows
            .into_iter()
            .enumerate()
            .map(|(i, allow)| Role { name: Name::parse(&format!("r{i}")).unwrap(), description: String::new(), allow, revision: 1 })
            .collect();
        Caller {
            bot: Bot {
                name: Name::parse("ci").unwrap(),
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

    fn db(users: &[&str], servers: &[&str], ttl: i64) -> RoleAllow {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        RoleAllow { database: DatabaseRules { users: v(users), server_names: v(servers), max_ttl_seconds: ttl }, ..Default::default() }
    }

    fn kube(users: &[&str], groups: &[&str], ttl: i64) -> RoleAllow {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        RoleAllow { kubernetes: KubernetesRules { users: v(users), groups: v(groups), max_ttl_seconds: ttl }, ..Default::default() }
    }

    fn req<'a>(kind: TlsKind, user: &'a str, groups: &'a [String], server_names: &'a [String]) -> TlsRequest<'a> {
        TlsRequest { kind, user, groups, server_names }
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_database_user_is_granted_only_by_database_users() {
        let c = caller(vec![db(&["app", "ro-*", "{{bot.name}}-svc"], &[], 600), kube(&["admin"], &[], 0)]);
        let a = c.attributes();
        let g = c.check_tls(&req(TlsKind::DatabaseClient, "app", &[], &[]), &a, MAX).unwrap();
        assert_eq!((g.common_name.as_deref(), g.max_ttl), (Some("app"), 600));
        assert!(c.check_tls(&req(TlsKind::DatabaseClient, "ro-reports", &[], &[]), &a, MAX).is_ok());
        assert!(c.check_tls(&req(TlsKind::DatabaseClient, "ci-svc", &[], &[]), &a, MAX).is_ok());
        let err = c.check_tls(&req(TlsKind::DatabaseClient, "admin", &[], &[]), &a, MAX).unwrap_err();
        assert!(err.0.contains("database.users"), "{err}");
        // A Kubernetes user grant is not a database grant, and the reverse.
        assert!(c.check_tls(&req(TlsKind::KubernetesClient, "app", &[], &[]), &a, MAX).is_err());
        assert_eq!(c.check_tls(&req(TlsKind::KubernetesClient, "admin", &[], &[]), &a, MAX).unwrap().max_ttl, MAX);
    }

    #[test]
    fn every_group_needs_a_grant_and_the_smallest_cap_wins() {
        let c = caller(vec![kube(&["deploy"], &["dev"], 0), kube(&[], &["ops-*"], 300)]);
        let a = c.attributes();
        let ok = strings(&["dev", "ops-read", "dev"]);
        let g = c.check_tls(&req(TlsKind::KubernetesClient, "deploy", &ok, &[]), &a, MAX).unwrap();
        assert_eq!(g.organizations, strings(&["dev", "ops-read"]));
        assert_eq!(g.max_ttl, 300);
        let bad = strings(&["dev", "system:masters"]);
        let err = c.check_tls(&req(TlsKind::KubernetesClient, "deploy", &bad, &[]), &a, MAX).unwrap_err();
        assert!(err.0.contains("system:masters") && err.0.contains("kubernetes.groups"), "{err}");
    }

    #[test]
    fn server_names_must_each_be_granted() {
        let c = caller(vec![db(&[], &["*.db.internal", "127.0.0.1", "localhost"], 0)]);
        let a = c.attributes();
        let names = strings(&["pg1.db.internal", "127.0.0.1"]);
        let g = c.check_tls(&req(TlsKind::DatabaseServer, "", &[], &names), &a, MAX).unwrap();
        assert_eq!(g.common_name.as_deref(), Some("pg1.db.internal"));
        assert_eq!(g.dns_names, strings(&["pg1.db.internal"]));
        assert_eq!(g.ip_addresses, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        let names = strings(&["pg1.db.internal", "evil.example"]);
        assert!(c.check_tls(&req(TlsKind::DatabaseServer, "", &[], &names), &a, MAX).is_err());
    }

    #[test]
    fn a_template_whose_attribute_is_missing_grants_nothing() {
        let c = caller(vec![db(&["{{join.sub}}"], &[], 0)]);
        assert!(c.check_tls(&req(TlsKind::DatabaseClient, "x", &[], &[]), &c.attributes(), MAX).is_err());
    }

    #[test]
    fn malformed_subject_values_are_refused_before_any_role() {
        let long = "a".repeat(65);
        let many: Vec<String> = (0..65).map(|i| format!("g{i}")).collect();
        let cases: Vec<(TlsRequest<'_>, &str)> = vec![
            (req(TlsKind::DatabaseClient, "", &[], &[]), "user"),
            (req(TlsKind::DatabaseClient, &long, &[], &[]), "user"),
            (req(TlsKind::DatabaseClient, "a\nCN=admin", &[], &[]), "user"),
            (req(TlsKind::DatabaseClient, "app/CN=admin", &[], &[]), "user"),
            (req(TlsKind::DatabaseClient, " app", &[], &[]), "user"),
            (req(TlsKind::KubernetesClient, "u", &many, &[]), "groups"),
            (req(TlsKind::DatabaseServer, "", &[], &[]), "server_names"),
            (req(TlsKind::DatabaseServer, "u", &[], &[]), "user"),
        ];
        for (r, field) in cases {
            assert_eq!(check_request(&r).unwrap_err().0, field, "{r:?}");
        }
        let g = strings(&["ok", "bad\u{7}"]);
        assert_eq!(check_request(&req(TlsKind::KubernetesClient, "u", &g, &[])).unwrap_err().0, "groups[1]");
        for n in ["*.db", "UPPER.db", "a..b", "-a.b", "a b", ""] {
            let s = strings(&[n]);
            assert_eq!(check_request(&req(TlsKind::DatabaseServer, "", &[], &s)).unwrap_err().0, "server_names[0]", "{n:?}");
        }
        let s = strings(&["db.internal", "::1"]);
        assert!(check_request(&req(TlsKind::DatabaseServer, "", &[], &s)).is_ok());
    }

    #[test]
    fn writing_wider_grants_is_not_covered() {
        let c = caller(vec![db(&["app-*"], &["*.db.internal"], 600), kube(&["{{bot.name}}"], &["dev"], 0)]);
        let ok_db = DatabaseRules { users: strings(&["app-web"]), server_names: strings(&["pg.db.internal"]), max_ttl_seconds: 600 };
        assert_eq!(c.covers_tls(&ok_db, &KubernetesRules::default(), MAX), Ok(()));
        let ok_kube = KubernetesRules { users: strings(&["ci"]), groups: strings(&["dev"]), max_ttl_seconds: 0 };
        assert_eq!(c.covers_tls(&DatabaseRules::default(), &ok_kube, MAX), Ok(()));
        let wider: Vec<(DatabaseRules, KubernetesRules)> = vec![
            (DatabaseRules { users: strings(&["*"]), max_ttl_seconds: 600, ..Default::default() }, KubernetesRules::default()),
            (DatabaseRules { users: strings(&["app-web"]), ..Default::default() }, KubernetesRules::default()),
            (DatabaseRules { server_names: strings(&["*"]), max_ttl_seconds: 60, ..Default::default() }, KubernetesRules::default()),
            (DatabaseRules::default(), KubernetesRules { users: strings(&["{{bot.name}}"]), ..Default::default() }),
            (DatabaseRules::default(), KubernetesRules { groups: strings(&["system:masters"]), ..Default::default() }),
            (DatabaseRules::default(), KubernetesRules { users: strings(&["app-web"]), ..Default::default() }),
        ];
        for (d, k) in wider {
            assert!(c.covers_tls(&d, &k, MAX).is_err(), "{d:?} {k:?}");
        }
    }

    #[test]
    fn role_blocks_are_validated_with_field_names() {
        let bad: Vec<(DatabaseRules, KubernetesRules, &str)> = vec![
            (DatabaseRules { max_ttl_seconds: -1, ..Default::default() }, KubernetesRules::default(), "allow.database.max_ttl_seconds"),
            (DatabaseRules { users: strings(&[""]), ..Default::default() }, KubernetesRules::default(), "allow.database.users[0]"),
            (DatabaseRules { users: strings(&["a/b"]), ..Default::default() }, KubernetesRules::default(), "allow.database.users[0]"),
            (DatabaseRules { server_names: strings(&["ok", "Bad Name"]), ..Default::default() }, KubernetesRules::default(), "allow.database.server_names[1]"),
            (DatabaseRules::default(), KubernetesRules { users: strings(&["{{bot.name"]), ..Default::default() }, "allow.kubernetes.users[0]"),
            (DatabaseRules::default(), KubernetesRules { groups: strings(&["a\tb"]), ..Default::default() }, "allow.kubernetes.groups[0]"),
        ];
        for (d, k, field) in bad {
            assert_eq!(validate(&d, &k).unwrap_err().0, field);
        }
        let d = DatabaseRules { users: strings(&["{{bot.name}}", "app"]), server_names: strings(&["*.db.internal", "127.0.0.1", "::1"]), max_ttl_seconds: 0 };
        let k = KubernetesRules { users: strings(&["system:serviceaccount:ci:*"]), groups: strings(&["system:masters"]), max_ttl_seconds: 60 };
        assert_eq!(validate(&d, &k), Ok(()));
    }
}
