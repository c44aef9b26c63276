//! The infrastructure-access blocks of `sigil_role`: `ssh`, `database` and
//! `kubernetes` (the broker's `RoleAllow.ssh/database/kubernetes`).
//!
//! Mistakes this module prevents:
//! - a Terraform update silently wiping rules: the blocks are managed, read
//!   back into state (so rules set with `sigil role apply` show as drift and an
//!   import brings them in), and sent whole on every write;
//! - an apply that fails half-way on a mistake visible in the configuration: a
//!   negative lifetime, an empty pattern, a control character, an SSH extension
//!   or critical option OpenSSH does not know (the broker's lists, compared
//!   in a test) are errors at plan time, at their attribute;
//! - a perpetual diff: an unset attribute stays null when the broker reports
//!   "unset" (empty list, 0), like the rest of the role.

use super::{int, opt_int, opt_list, opt_map, strings};
use crate::cty::{Type, Value};
use crate::diag::{AttrPath, Diagnostics};
use crate::schema::{Attribute, Block, NestedBlock, Nesting};
use sigil_schemas::sigil::v1 as api;
use std::collections::{BTreeMap, HashMap};

/// SSH extensions the broker signs: `sigil_core::ssh::cert::KNOWN_EXTENSIONS`
/// (compared in a test; the provider does not link the broker's core).
pub const SSH_EXTENSIONS: [&str; 7] = [
    "no-touch-required",
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
    "no-presence-required",
];
/// SSH critical options the broker signs: `sigil_core::ssh::cert::KNOWN_CRITICAL_OPTIONS`.
pub const SSH_CRITICAL_OPTIONS: [&str; 3] = ["force-command", "source-address", "verify-required"];

/// Longest pattern or option value accepted at plan time.
const MAX_VALUE: usize = 1024;

const TEMPLATES: &str = "globs (`*`) and the templates of `spiffe_ids` (`{{bot.name}}`, `{{bot.traits.KEY}}`, `{{join.KEY}}`)";

/// The three nested blocks, each zero or one.
pub(super) fn blocks() -> Vec<NestedBlock> {
    let ttl = || Attribute::optional("max_ttl_seconds", Type::Number, "Longest certificate lifetime, in seconds (unset: the broker's maximum).");
    let single = |name, block| NestedBlock { name, nesting: Nesting::Single, block, force_new: false };
    vec![
        single(
            "ssh",
            Block {
                description: "SSH certificates bots holding the role may obtain (signed by the broker's `ssh-user` and `ssh-host` CAs).",
                attributes: vec![
                    Attribute::optional("principals", Type::list(Type::String), "Login names a user certificate may carry as principals: globs and templates, e.g. `deploy`, `ci-{{bot.name}}`."),
                    Attribute::optional("host_names", Type::list(Type::String), "Host names and addresses a host certificate may carry, e.g. `*.internal`."),
                    Attribute::optional("extensions", Type::list(Type::String), "Extensions of user certificates (unset: the OpenSSH defaults `permit-X11-forwarding`, `permit-agent-forwarding`, `permit-port-forwarding`, `permit-pty`, `permit-user-rc`). A request may ask for fewer, never more."),
                    Attribute::optional("critical_options", Type::map(Type::String), "Critical options of user certificates: `force-command`, `source-address` (e.g. `{{join.source_ip}}/32`), `verify-required`. A template whose attribute is missing refuses issuance."),
                    ttl(),
                ],
                blocks: vec![],
            },
        ),
        single(
            "database",
            Block {
                description: "Database certificates (signed by the broker's `database` CA): client certificates with CN = a database user, server certificates for database servers.",
                attributes: vec![
                    Attribute::optional("users", Type::list(Type::String), "Database users a client certificate may carry as CN: globs and templates."),
                    Attribute::optional("server_names", Type::list(Type::String), "DNS names and IP addresses a database server certificate may carry."),
                    ttl(),
                ],
                blocks: vec![],
            },
        ),
        single(
            "kubernetes",
            Block {
                description: "Kubernetes client certificates (signed by the broker's `kubernetes` CA, the API server's `--client-ca-file`): CN = user, O = groups.",
                attributes: vec![
                    Attribute::optional("users", Type::list(Type::String), "Kubernetes user names allowed as CN: globs and templates."),
                    Attribute::optional("groups", Type::list(Type::String), "Kubernetes groups allowed as O: globs and templates."),
                    ttl(),
                ],
                blocks: vec![],
            },
        ),
    ]
}

fn string_map(v: &Value, name: &str) -> HashMap<String, String> {
    v.attr(name).entries().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect()
}

/// The role's blocks in the API shape (`None` when a block is absent: the
/// broker then stores no rules of that kind).
pub(super) fn to_api(v: &Value) -> (Option<api::SshRules>, Option<api::DatabaseRules>, Option<api::KubernetesRules>) {
    let present = |name| Some(v.attr(name)).filter(|b| !b.is_null());
    let ssh = present("ssh").map(|b| api::SshRules {
        principals: strings(b, "principals"),
        host_names: strings(b, "host_names"),
        extensions: strings(b, "extensions"),
        critical_options: string_map(b, "critical_options"),
        max_ttl_seconds: int(b, "max_ttl_seconds"),
    });
    let database = present("database").map(|b| api::DatabaseRules {
        users: strings(b, "users"),
        server_names: strings(b, "server_names"),
        max_ttl_seconds: int(b, "max_ttl_seconds"),
    });
    let kubernetes = present("kubernetes").map(|b| api::KubernetesRules {
        users: strings(b, "users"),
        groups: strings(b, "groups"),
        max_ttl_seconds: int(b, "max_ttl_seconds"),
    });
    (ssh, database, kubernetes)
}

/// A block's state: null when the broker has no such rules and the hint
/// (planned or prior state) has no block; otherwise the rules, each unset
/// attribute kept null where the hint's is.
fn block_state(empty: bool, hint: &Value, attrs: Vec<(&str, Value)>) -> Value {
    if empty && hint.is_null() {
        Value::Null
    } else {
        Value::object(attrs)
    }
}

/// The three blocks as state, from the broker's role.
pub(super) fn to_state(allow: &api::RoleAllow, hint: &Value) -> [(&'static str, Value); 3] {
    let s = allow.ssh.clone().unwrap_or_default();
    let h = hint.attr("ssh");
    let options: BTreeMap<String, Value> = s.critical_options.iter().map(|(k, v)| (k.clone(), Value::string(v))).collect();
    let ssh = block_state(
        s == api::SshRules::default(),
        h,
        vec![
            ("principals", opt_list(&s.principals, h.attr("principals"))),
            ("host_names", opt_list(&s.host_names, h.attr("host_names"))),
            ("extensions", opt_list(&s.extensions, h.attr("extensions"))),
            ("critical_options", opt_map(options, h.attr("critical_options"))),
            ("max_ttl_seconds", opt_int(s.max_ttl_seconds, h.attr("max_ttl_seconds"))),
        ],
    );
    let d = allow.database.clone().unwrap_or_default();
    let h = hint.attr("database");
    let database = block_state(
        d == api::DatabaseRules::default(),
        h,
        vec![
            ("users", opt_list(&d.users, h.attr("users"))),
            ("server_names", opt_list(&d.server_names, h.attr("server_names"))),
            ("max_ttl_seconds", opt_int(d.max_ttl_seconds, h.attr("max_ttl_seconds"))),
        ],
    );
    let k = allow.kubernetes.clone().unwrap_or_default();
    let h = hint.attr("kubernetes");
    let kubernetes = block_state(
        k == api::KubernetesRules::default(),
        h,
        vec![
            ("users", opt_list(&k.users, h.attr("users"))),
            ("groups", opt_list(&k.groups, h.attr("groups"))),
            ("max_ttl_seconds", opt_int(k.max_ttl_seconds, h.attr("max_ttl_seconds"))),
        ],
    );
    [("ssh", ssh), ("database", database), ("kubernetes", kubernetes)]
}

/// Why a pattern or value cannot be used, if it cannot.
fn bad_value(s: &str) -> Option<String> {
    if s.trim().is_empty() {
        Some("must not be empty (an empty pattern matches nothing; remove it)".into())
    } else if s.chars().any(char::is_control) {
        Some("must not contain control characters".into())
    } else if s.len() > MAX_VALUE {
        Some(format!("must be at most {MAX_VALUE} bytes"))
    } else {
        None
    }
}

fn check_strings(block: &Value, attr: &str, at: &AttrPath, known: Option<&[&str]>, diags: &mut Diagnostics) {
    for (i, v) in block.attr(attr).elements().iter().enumerate() {
        let Some(s) = v.as_str() else { continue };
        let path = at.then_attr(attr).then_index(i);
        if let Some(why) = bad_value(s) {
            diags.error_at(path, "Invalid value", format!("`{attr}` entries {why}; {s:?} is not. Allowed: {TEMPLATES}."));
        } else if let Some(known) = known.filter(|k| !k.contains(&s)) {
            diags.error_at(path, "Unknown SSH extension", format!("{s:?} is not an extension OpenSSH knows ({}).", known.join(", ")));
        }
    }
}

fn check_ttl(block: &Value, at: &AttrPath, diags: &mut Diagnostics) {
    let path = at.then_attr("max_ttl_seconds");
    match block.attr("max_ttl_seconds") {
        Value::Number(n) => match n.as_i64() {
            Some(v) if v < 0 => diags.error_at(path, "Invalid duration", format!("`max_ttl_seconds` must be 0 (broker maximum) or a positive number of seconds, not {v}.")),
            Some(_) => {}
            None => diags.error_at(path, "Invalid duration", format!("`max_ttl_seconds` must be a whole number of seconds, not {n}.")),
        },
        _ => {}
    }
}

/// Plan-time checks of the three blocks; unknown values are skipped.
pub(super) fn validate(config: &Value, diags: &mut Diagnostics) {
    let ssh = config.attr("ssh");
    if !ssh.is_null() && !ssh.is_unknown() {
        let at = AttrPath::attr("ssh");
        check_strings(ssh, "principals", &at, None, diags);
        check_strings(ssh, "host_names", &at, None, diags);
        check_strings(ssh, "extensions", &at, Some(&SSH_EXTENSIONS), diags);
        for (k, v) in ssh.attr("critical_options").entries() {
            let path = at.then_attr("critical_options").then_key(k);
            let Some(v) = v.as_str() else { continue };
            if !SSH_CRITICAL_OPTIONS.contains(&k.as_str()) {
                diags.error_at(path, "Unknown SSH critical option", format!("{k:?} is not one of {}.", SSH_CRITICAL_OPTIONS.join(", ")));
            } else if k == "verify-required" {
                // A flag: OpenSSH takes no value, and the broker refuses one.
                if !v.is_empty() {
                    diags.error_at(path, "Invalid value", "`verify-required` takes no value: write \"verify-required\" = \"\".");
                }
            } else if let Some(why) = bad_value(v) {
                diags.error_at(path, "Invalid value", format!("The value of {k:?} {why}."));
            }
        }
        check_ttl(ssh, &at, diags);
    }
    for (name, lists) in [("database", ["users", "server_names"]), ("kubernetes", ["users", "groups"])] {
        let block = config.attr(name);
        if block.is_null() || block.is_unknown() {
            continue;
        }
        let at = AttrPath::attr(name);
        for l in lists {
            check_strings(block, l, &at, None, diags);
        }
        check_ttl(block, &at, diags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(blocks: Vec<(&str, Value)>) -> Value {
        Value::object(blocks)
    }

    fn paths(config: &Value) -> Vec<String> {
        let mut d = Diagnostics::default();
        validate(config, &mut d);
        d.0.iter().map(|x| x.path.as_ref().map(ToString::to_string).unwrap_or_default()).collect()
    }

    #[test]
    fn ssh_extensions_and_critical_options_are_the_brokers() {
        assert_eq!(SSH_EXTENSIONS, sigil_core::ssh::cert::KNOWN_EXTENSIONS, "role_access.rs SSH_EXTENSIONS must equal sigil_core::ssh::cert::KNOWN_EXTENSIONS");
        assert_eq!(SSH_CRITICAL_OPTIONS, sigil_core::ssh::cert::KNOWN_CRITICAL_OPTIONS, "SSH_CRITICAL_OPTIONS must equal sigil_core::ssh::cert::KNOWN_CRITICAL_OPTIONS");
    }

    #[test]
    fn mistakes_in_the_blocks_are_reported_at_their_attribute() {
        let c = config(vec![
            ("ssh", Value::object([
                ("principals", Value::string_list(["deploy", ""])),
                ("extensions", Value::string_list(["permit-pty", "permit-everything"])),
                ("critical_options", Value::Map([("source-address".to_string(), Value::string(" ")), ("no-such".to_string(), Value::string("x")), ("verify-required".to_string(), Value::string("yes"))].into())),
                ("max_ttl_seconds", Value::int(-1)),
            ])),
            ("database", Value::object([("users", Value::string_list(["app\n"])), ("max_ttl_seconds", Value::int(60))])),
            ("kubernetes", Value::object([("groups", Value::string_list(["dev", "ops"])), ("max_ttl_seconds", Value::int(-5))])),
        ]);
        let got = paths(&c);
        for want in [
            "ssh.principals[1]",
            "ssh.extensions[1]",
            "ssh.critical_options[\"no-such\"]",
            "ssh.critical_options[\"source-address\"]",
            "ssh.critical_options[\"verify-required\"]",
            "ssh.max_ttl_seconds",
            "database.users[0]",
            "kubernetes.max_ttl_seconds",
        ] {
            assert!(got.iter().any(|p| p == want), "{want} not in {got:?}");
        }
        assert_eq!(got.len(), 8, "{got:?}");
    }

    #[test]
    fn valid_blocks_and_unknown_values_pass() {
        let c = config(vec![
            ("ssh", Value::object([
                ("principals", Value::List(vec![Value::string("ci-{{bot.name}}"), Value::Unknown])),
                ("critical_options", Value::Map([("source-address".to_string(), Value::string("{{join.source_ip}}/32")), ("verify-required".to_string(), Value::string(""))].into())),
                ("max_ttl_seconds", Value::Unknown),
            ])),
            ("kubernetes", Value::Unknown),
        ]);
        assert_eq!(paths(&c), Vec::<String>::new());
    }

    #[test]
    fn blocks_round_trip_and_absent_blocks_stay_null() {
        let planned = config(vec![
            ("ssh", Value::object([
                ("principals", Value::string_list(["deploy"])),
                ("host_names", Value::Null),
                ("extensions", Value::List(vec![])),
                ("critical_options", Value::Map([("force-command".to_string(), Value::string("/bin/true"))].into())),
                ("max_ttl_seconds", Value::int(600)),
            ])),
            ("database", Value::Null),
            ("kubernetes", Value::object([("users", Value::string_list(["ci"])), ("groups", Value::Null), ("max_ttl_seconds", Value::Null)])),
        ]);
        let (ssh, database, kubernetes) = to_api(&planned);
        assert!(database.is_none());
        let allow = api::RoleAllow { ssh, database, kubernetes, ..Default::default() };
        for (name, value) in to_state(&allow, &planned) {
            assert_eq!(&value, planned.attr(name), "{name}");
        }
    }

    #[test]
    fn rules_set_elsewhere_show_in_state_so_terraform_sees_them() {
        // Imported, or written by `sigil role apply` behind Terraform's back: the
        // hint has no block, yet the rules appear (as drift to remove or keep).
        let allow = api::RoleAllow {
            database: Some(api::DatabaseRules { users: vec!["app".into()], ..Default::default() }),
            ..Default::default()
        };
        let [ssh, database, kubernetes] = to_state(&allow, &Value::Null);
        assert_eq!(ssh.1, Value::Null);
        assert_eq!(kubernetes.1, Value::Null);
        assert_eq!(database.1.attr("users"), &Value::string_list(["app"]));
        assert_eq!(database.1.attr("server_names"), &Value::Null);
    }
}
