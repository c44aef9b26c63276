//! `sigil_role`: what bots holding the role may obtain and administer.

use super::role_access;
use super::{check_name, check_non_negative, check_paths, gone_ok, found, int, opt_int, opt_list, opt_str, status, string, strings};
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::diag::{AttrPath, Diagnostics};
use crate::provider::Resource;
use crate::schema::{Attribute, Block, NestedBlock, Nesting, Schema};
use sigil_schemas::sigil::v1 as api;

/// Resource kinds a rule may name: the broker's (`sigil_core::domain::role::RESOURCE_KINDS`,
/// compared in a test) and `*`.
pub const RULE_RESOURCES: &[&str] = &["role", "bot", "join_token", "workload_identity", "audit", "bot_instance", "lock", "ca", "revocation", "*"];
/// Verbs a rule may name.
pub const RULE_VERBS: &[&str] = &["create", "read", "list", "update", "delete", "escalate", "bind", "*"];

/// The `sigil_role` resource type.
pub struct Role;

fn schema() -> Schema {
    let rule = Block {
        description: "Admin rule: which verbs the role grants on which resource kinds (and names). A bot can only create or update roles, bots, join tokens and workload identities that grant nothing beyond its own roles, unless it holds `escalate` or `bind`.",
        attributes: vec![
            Attribute::required("resources", Type::list(Type::String), "Resource kinds: `role`, `bot`, `join_token`, `workload_identity`, `audit`, `bot_instance` (names: bot names; verbs `read`, `list`), `lock`, `ca` (names: key purposes `x509-svid`, `internal`, `jwt-svid`; verbs `read`, `update`), `revocation` (verb `create`) or `*`."),
            Attribute::required("verbs", Type::list(Type::String), "Verbs: `create`, `read`, `list`, `update`, `delete`, `escalate` (on `role`, `workload_identity`: write grants beyond the bot's own), `bind` (on `role`: attach a role the bot does not hold, or make a join token for a bot holding it) or `*` (all, including `escalate` and `bind`)."),
            Attribute::optional("names", Type::list(Type::String), "Resource names (`*` globs) the rule is limited to; unset: every name."),
        ],
        blocks: vec![],
    };
    Schema {
        version: 0,
        block: Block {
            description: "A role grants bots SPIFFE IDs, JWT audiences, workload identities, SSH, database and Kubernetes certificates, and admin rules.",
            attributes: vec![
                Attribute::computed("id", Type::String, "Same as `name`."),
                Attribute::required("name", Type::String, "Role name. Changing it replaces the role.").force_new(),
                Attribute::optional("description", Type::String, "Free-form description."),
                Attribute::optional("spiffe_ids", Type::list(Type::String), "SPIFFE ID path patterns a bot may obtain, e.g. `/svc/web`, `/svc/*`, `/ci/**`; templates `{{bot.name}}`, `{{bot.traits.KEY}}`, `{{join.KEY}}`, `{{workload.KEY}}` (a value must be letters, digits, `.`, `-`, `_`)."),
                Attribute::optional("audiences", Type::list(Type::String), "JWT-SVID audiences a bot may request (`*` globs allowed)."),
                Attribute::optional("workload_identities", Type::list(Type::String), "Names (globs) of workload identities a bot may use."),
                Attribute::optional("max_x509_ttl_seconds", Type::Number, "Longest X.509-SVID lifetime, in seconds (unset: broker default)."),
                Attribute::optional("max_jwt_ttl_seconds", Type::Number, "Longest JWT-SVID lifetime, in seconds (unset: broker default)."),
                Attribute::computed("revision", Type::Number, "Broker revision; changes on every update.").volatile(),
            ],
            blocks: std::iter::once(NestedBlock { name: "rule", nesting: Nesting::List, block: rule, force_new: false }).chain(role_access::blocks()).collect(),
        },
    }
}

fn to_api(v: &Value, revision: i64) -> api::Role {
    let rules = v
        .attr("rule")
        .elements()
        .iter()
        .map(|r| api::Rule { resources: strings(r, "resources"), verbs: strings(r, "verbs"), names: strings(r, "names") })
        .collect();
    let (ssh, database, kubernetes) = role_access::to_api(v);
    api::Role {
        name: string(v, "name"),
        description: string(v, "description"),
        allow: Some(api::RoleAllow {
            spiffe_ids: strings(v, "spiffe_ids"),
            audiences: strings(v, "audiences"),
            workload_identities: strings(v, "workload_identities"),
            max_x509_ttl_seconds: int(v, "max_x509_ttl_seconds"),
            max_jwt_ttl_seconds: int(v, "max_jwt_ttl_seconds"),
            rules,
            ssh,
            database,
            kubernetes,
        }),
        revision,
    }
}

/// Broker role to state; `hint` is the planned or prior state.
fn to_state(r: &api::Role, hint: &Value) -> Value {
    let allow = r.allow.clone().unwrap_or_default();
    let hint_rules = hint.attr("rule").elements();
    let rules = allow
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let names_hint = hint_rules.get(i).map_or(&Value::Null, |h| h.attr("names"));
            Value::object([
                ("resources", Value::string_list(rule.resources.iter().map(String::as_str))),
                ("verbs", Value::string_list(rule.verbs.iter().map(String::as_str))),
                ("names", opt_list(&rule.names, names_hint)),
            ])
        })
        .collect();
    let fields = [
        ("id", Value::string(&r.name)),
        ("name", Value::string(&r.name)),
        ("description", opt_str(&r.description, hint.attr("description"))),
        ("spiffe_ids", opt_list(&allow.spiffe_ids, hint.attr("spiffe_ids"))),
        ("audiences", opt_list(&allow.audiences, hint.attr("audiences"))),
        ("workload_identities", opt_list(&allow.workload_identities, hint.attr("workload_identities"))),
        ("max_x509_ttl_seconds", opt_int(allow.max_x509_ttl_seconds, hint.attr("max_x509_ttl_seconds"))),
        ("max_jwt_ttl_seconds", opt_int(allow.max_jwt_ttl_seconds, hint.attr("max_jwt_ttl_seconds"))),
        ("rule", Value::List(rules)),
        ("revision", Value::int(r.revision)),
    ];
    Value::object(fields.into_iter().chain(role_access::to_state(&allow, hint)))
}

fn check_words(values: &Value, allowed: &[&str], path: AttrPath, what: &str, diags: &mut Diagnostics) {
    for (i, v) in values.elements().iter().enumerate() {
        if let Some(s) = v.as_str() {
            if !allowed.contains(&s) {
                diags.error_at(path.then_index(i), format!("Invalid {what}"), format!("{s:?} is not one of {}.", allowed.join(", ")));
            }
        }
    }
}

#[async_trait::async_trait]
impl Resource for Role {
    fn type_name(&self) -> &'static str {
        "sigil_role"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_name(config, "name", diags);
        check_paths(config.attr("spiffe_ids"), AttrPath::attr("spiffe_ids"), diags);
        check_non_negative(config, "max_x509_ttl_seconds", diags);
        check_non_negative(config, "max_jwt_ttl_seconds", diags);
        for (i, rule) in config.attr("rule").elements().iter().enumerate() {
            let at = AttrPath::attr("rule").then_index(i);
            check_words(rule.attr("resources"), RULE_RESOURCES, at.then_attr("resources"), "resource kind", diags);
            check_words(rule.attr("verbs"), RULE_VERBS, at.then_attr("verbs"), "verb", diags);
        }
        role_access::validate(config, diags);
    }

    async fn create(&self, api: &Api, planned: &Value) -> Result<Value, ApiError> {
        let name = string(planned, "name");
        let r = api.client().create_role(to_api(planned, 0)).await.map_err(status(&name))?;
        Ok(to_state(r.get_ref(), planned))
    }

    async fn read(&self, api: &Api, state: &Value) -> Result<Option<Value>, ApiError> {
        let name = string(state, "name");
        let r = found(api.client().get_role(api::GetRequest { name: name.clone() }).await.map_err(status(&name)))?;
        Ok(r.map(|r| to_state(r.get_ref(), state)))
    }

    async fn update(&self, api: &Api, prior: &Value, planned: &Value) -> Result<Value, ApiError> {
        let name = string(planned, "name");
        let r = api.client().update_role(to_api(planned, int(prior, "revision"))).await.map_err(status(&name))?;
        Ok(to_state(r.get_ref(), planned))
    }

    async fn delete(&self, api: &Api, state: &Value) -> Result<(), ApiError> {
        let name = string(state, "name");
        let r = api.client().delete_role(api::DeleteRequest { name: name.clone(), revision: 0 }).await;
        gone_ok(r.map(|_| ()).map_err(status(&name)))
    }

    /// The broker nests the rules under `allow` (`allow.rules[0].verbs`,
    /// `allow.spiffe_ids[0]`, `allow.ssh.principals[1]`); here they are
    /// top-level, a rule is a `rule` block and `ssh` a block of its own.
    fn schema_field(&self, broker_field: &str) -> String {
        let f = broker_field.strip_prefix("allow.").unwrap_or(broker_field);
        match f.strip_prefix("rules") {
            Some(rest) => format!("rule{rest}"),
            None => f.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_kinds_and_verbs_are_the_brokers() {
        // A kind the broker knows but the provider refuses makes a valid role
        // impossible to write in Terraform (e.g. `lock` rules for `sigil_lock`).
        let mine = |l: &[&str]| l.iter().filter(|k| **k != "*").map(|k| k.to_string()).collect::<std::collections::BTreeSet<_>>();
        let broker = |l: &[&str]| l.iter().map(|k| k.to_string()).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(
            mine(RULE_RESOURCES),
            broker(sigil_core::domain::role::RESOURCE_KINDS),
            "provider/src/resources/role.rs RULE_RESOURCES must list sigil_core::domain::role::RESOURCE_KINDS (and the schema description)"
        );
        assert_eq!(mine(RULE_VERBS), broker(sigil_core::domain::role::VERBS), "RULE_VERBS must list sigil_core::domain::role::VERBS");
    }

    #[test]
    fn broker_fields_under_allow_map_to_the_flat_schema() {
        let at = |f: &str| {
            let segs = crate::broker_field::parse(&Role.schema_field(f)).unwrap();
            crate::broker_field::to_attr_path(&schema().block, &segs).map(|p| p.to_string())
        };
        assert_eq!(at("allow.rules[1].names[0]").as_deref(), Some("rule[1].names[0]"));
        assert_eq!(at("allow.spiffe_ids[2]").as_deref(), Some("spiffe_ids[2]"));
        assert_eq!(at("name").as_deref(), Some("name"));
        assert_eq!(at("allow.ssh.principals[1]").as_deref(), Some("ssh.principals[1]"));
        assert_eq!(at("allow.kubernetes.max_ttl_seconds").as_deref(), Some("kubernetes.max_ttl_seconds"));
    }

    #[test]
    fn state_round_trips_through_the_api_shape() {
        let planned = Value::object([
            ("name", Value::string("web")),
            ("description", Value::Null),
            ("spiffe_ids", Value::string_list(["/svc/web"])),
            ("audiences", Value::List(vec![])),
            ("workload_identities", Value::Null),
            ("max_x509_ttl_seconds", Value::int(3600)),
            ("max_jwt_ttl_seconds", Value::Null),
            ("rule", Value::List(vec![
                Value::object([
                    ("resources", Value::string_list(["bot"])),
                    ("verbs", Value::string_list(["read"])),
                    ("names", Value::Null),
                ]),
                Value::object([
                    ("resources", Value::string_list(["role"])),
                    ("verbs", Value::string_list(["bind"])),
                    ("names", Value::string_list(["team-*"])),
                ]),
            ])),
            ("revision", Value::Unknown),
        ]);
        let mut role = to_api(&planned, 0);
        role.revision = 1;
        let state = to_state(&role, &planned);
        for attr in ["name", "description", "spiffe_ids", "audiences", "workload_identities", "max_x509_ttl_seconds", "max_jwt_ttl_seconds", "rule"] {
            assert_eq!(state.attr(attr), planned.attr(attr), "{attr}");
        }
        assert_eq!(state.attr("revision"), &Value::int(1));
    }

    #[test]
    fn bad_verb_is_reported_at_its_index() {
        let config = Value::object([
            ("name", Value::string("r")),
            ("rule", Value::List(vec![Value::object([
                ("resources", Value::string_list(["bot"])),
                ("verbs", Value::string_list(["read", "destroy"])),
            ])])),
        ]);
        let mut d = Diagnostics::default();
        Role.validate(&config, &mut d);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].path.as_ref().map(ToString::to_string).as_deref(), Some("rule[0].verbs[1]"));
    }

    #[test]
    fn spiffe_paths_must_be_absolute() {
        let config = Value::object([("spiffe_ids", Value::string_list(["svc/web"]))]);
        let mut d = Diagnostics::default();
        Role.validate(&config, &mut d);
        assert_eq!(d.0[0].path.as_ref().map(ToString::to_string).as_deref(), Some("spiffe_ids[0]"));
    }
}
