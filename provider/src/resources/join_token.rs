//! `sigil_join_token`: a credential a bot joins with. The secret exists only in
//! the broker's create response: it is computed, sensitive, kept from then on
//! from prior state, and never shown in plans.

use super::{check_name, found, gone_ok, int, opt_map, status, string};
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::diag::{AttrPath, Diagnostics};
use crate::provider::Resource;
use crate::schema::{Attribute, Block, NestedBlock, Nesting, Schema};
use sigil_schemas::sigil::v1 as api;

use sigil_core::domain::join_method::config::ConfigError;
use sigil_core::domain::join_method::{Method, RuleFields};
use std::collections::BTreeMap;

/// The `sigil_join_token` resource type.
pub struct JoinToken {
    /// The clock (Unix seconds) an expiry is compared with at validation.
    now: fn() -> i64,
}

impl Default for JoinToken {
    fn default() -> Self {
        Self { now: crate::clock::now_unix }
    }
}

/// The broker's rule-field paths (`allow[0].repository`) in this schema's terms.
fn schema_field(broker_field: &str) -> String {
    let mut parts = broker_field.splitn(2, '.');
    match (parts.next(), parts.next()) {
        (Some(rule), Some(claim)) if rule.starts_with("allow[") && claim != "claims" && !claim.starts_with("claims.") => format!("{rule}.claims.{claim}"),
        _ => broker_field.to_string(),
    }
}

fn schema() -> Schema {
    let allow = Block {
        description: "Method-specific rule; the join is allowed when any `allow` block matches (methods other than `token`).",
        attributes: vec![Attribute::required(
            "claims",
            Type::map(Type::String),
            "Claim or attribute name (method-defined, e.g. `repository`, `sub`, `aws_account`) to the glob its value must match.",
        )],
        blocks: vec![],
    };
    Schema {
        version: 0,
        block: Block {
            description: "A join token lets a bot obtain its first identity. For method `token` the broker generates a secret, available once as the sensitive `secret` attribute. Other methods prove themselves with their platform's credential and have no secret (`secret` is null), except `bound_keypair` without `config.public_key`, whose secret registers the agent's key at its first join, once.",
            attributes: vec![
                Attribute::computed("id", Type::String, "Same as `name`."),
                Attribute::required("name", Type::String, "Public name of the token (not secret). Changing it replaces the token.").force_new(),
                Attribute::required("bot", Type::String, "Name of the bot that joins with this token. Changing it replaces the token.").force_new(),
                Attribute::with_default("method", Type::String, Value::string("token"), "Join method; `token` (default) uses a generated secret. Changing it replaces the token.").force_new(),
                Attribute::required("expires_at", Type::Number, "Expiry, in Unix seconds (UTC)."),
                Attribute::with_default("max_uses", Type::Number, Value::int(1), "How many joins the token allows, whatever the method (default 1: single use)."),
                Attribute::computed("uses", Type::Number, "How many times the token was used."),
                Attribute::computed("revision", Type::Number, "Broker revision; changes on every update.").volatile(),
                Attribute::optional("config", Type::map(Type::String), "Method-specific settings (e.g. `issuer`, `audience`, `jwks`)."),
                Attribute::computed("secret", Type::String, "The join secret (method `token`; for `bound_keypair` without `config.public_key`, the one-time registration secret; null for other methods). Sensitive; only known to Terraform when it created the token, null after import.").sensitive(),
            ],
            blocks: vec![NestedBlock { name: "allow", nesting: Nesting::List, block: allow, force_new: false }],
        },
    }
}

fn to_api(v: &Value, revision: i64) -> api::JoinToken {
    api::JoinToken {
        name: string(v, "name"),
        bot: string(v, "bot"),
        method: string(v, "method"),
        expires_at: int(v, "expires_at"),
        max_uses: int(v, "max_uses"),
        revision,
        allow: v
            .attr("allow")
            .elements()
            .iter()
            .map(|rule| api::AllowRule {
                claims: rule.attr("claims").entries().map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_string())).collect(),
            })
            .collect(),
        config: v.attr("config").entries().map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_string())).collect(),
        ..Default::default()
    }
}

/// The secret comes from the create response, else from prior state.
fn to_state(t: &api::JoinToken, hint: &Value) -> Value {
    let secret = if t.secret.is_empty() { hint.attr("secret").clone() } else { Value::string(&t.secret) };
    let secret = if secret.is_unknown() { Value::Null } else { secret };
    let string_map = |m: &std::collections::HashMap<String, String>| -> std::collections::BTreeMap<String, Value> {
        m.iter().map(|(k, v)| (k.clone(), Value::string(v))).collect()
    };
    let allow = t.allow.iter().map(|r| Value::object([("claims", Value::Map(string_map(&r.claims)))])).collect();
    Value::object([
        ("id", Value::string(&t.name)),
        ("name", Value::string(&t.name)),
        ("bot", Value::string(&t.bot)),
        ("method", Value::string(&t.method)),
        ("expires_at", Value::int(t.expires_at)),
        ("max_uses", Value::int(t.max_uses)),
        ("uses", Value::int(t.uses)),
        ("revision", Value::int(t.revision)),
        ("config", opt_map(string_map(&t.config), hint.attr("config"))),
        ("allow", Value::List(allow)),
        ("secret", secret),
    ])
}

/// A `map(string)` value's keys, its known entries, and whether every value is
/// known; `None` when the map itself is unknown.
fn known_entries(v: &Value) -> Option<(Vec<String>, BTreeMap<String, String>, bool)> {
    if v.is_unknown() {
        return None;
    }
    let keys = v.entries().map(|(k, _)| k.clone()).collect();
    let entries: BTreeMap<_, _> = v.entries().filter_map(|(k, x)| x.as_str().map(|s| (k.clone(), s.to_string()))).collect();
    let all_known = !v.entries().any(|(_, x)| x.is_unknown());
    Some((keys, entries, all_known))
}

/// What the broker's registry says of the token's method, checked at plan
/// time with the broker's own code (`sigil-core`): the method exists, `config`
/// has only the method's keys and the required ones, rules name only the
/// method's claims. Values unknown until apply are skipped.
fn check_method_settings(config: &Value, diags: &mut Diagnostics) {
    let method = match config.attr("method") {
        Value::Null => Method::Token,
        v => match v.as_str() {
            None => return,
            Some(name) => match Method::parse(name) {
                Ok(m) => m,
                Err(e) => {
                    diags.error_at(AttrPath::attr("method"), "Unknown join method", format!("invalid method: {e}."));
                    return;
                }
            },
        },
    };
    let at = |field: &str| {
        crate::broker_field::parse(&schema_field(field))
            .and_then(|segs| crate::broker_field::to_attr_path(&schema().block, &segs))
            .unwrap_or_else(|| AttrPath::attr(field.split(['.', '[']).next().unwrap_or(field)))
    };
    if let Some((keys, entries, all_known)) = known_entries(config.attr("config")) {
        let known = method.config_keys();
        let unknown_key = keys.iter().find(|k| !known.contains(&k.as_str()));
        match (unknown_key, all_known) {
            (Some(k), _) => {
                let e = ConfigError::Unknown { key: k.clone(), known };
                diags.error_at(AttrPath::attr("config").then_key(k), "Unknown join token setting", format!("invalid {}: {}.", e.field(), e.message(method)));
            }
            (None, true) => {
                if let Err(e) = method.parse_config(&entries) {
                    let path = match &e {
                        ConfigError::Missing { .. } | ConfigError::Other(_) => AttrPath::attr("config"),
                        _ => at(&e.field()),
                    };
                    diags.error_at(path, "Invalid join token settings", format!("invalid {}: {}.", e.field(), e.message(method)));
                }
            }
            (None, false) => {}
        }
    }
    let allow = config.attr("allow");
    if allow.is_unknown() {
        return;
    }
    let fields = method.spec().rule_fields;
    if fields == RuleFields::NoRules && !allow.elements().is_empty() {
        diags.error_at(AttrPath::attr("allow"), "Allow rules not used by this method", format!("join method {:?} has no allow rules: the bound key is the rule.", method.name()));
        return;
    }
    let RuleFields::Only(names) = fields else { return };
    for (i, rule) in allow.elements().iter().enumerate() {
        let Some((claims, _, _)) = known_entries(rule.attr("claims")) else { continue };
        for k in claims.iter().filter(|k| !names.contains(&k.as_str())) {
            diags.error_at(
                at(&format!("allow[{i}].{k}")),
                "Unknown claim for this join method",
                format!("invalid allow[{i}].{k}: not a field of join method {:?} (fields: {}).", method.name(), names.join(", ")),
            );
        }
    }
}

#[async_trait::async_trait]
impl Resource for JoinToken {
    fn type_name(&self) -> &'static str {
        "sigil_join_token"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_name(config, "name", diags);
        check_name(config, "bot", diags);
        check_method_settings(config, diags);
        if let Some(n) = config.attr("max_uses").as_i64() {
            if n < 1 {
                diags.error_at(AttrPath::attr("max_uses"), "Invalid max_uses", format!("A token must allow at least one join, not {n}."));
            }
        }
        if let Some(t) = config.attr("expires_at").as_i64() {
            if t <= 0 {
                diags.error_at(AttrPath::attr("expires_at"), "Invalid expiry", "`expires_at` is a Unix time in seconds, e.g. 1893456000 for 2030-01-01.");
            } else if t <= (self.now)() {
                // A warning: a token that expired since it was created still plans (and can be destroyed).
                diags.warning_at(
                    AttrPath::attr("expires_at"),
                    "Join token expiry in the past",
                    format!("`expires_at` ({t}) has passed: the token admits no join, and the broker refuses to create or update it with this value. Set a future time."),
                );
            }
        }
    }

    async fn create(&self, api: &Api, planned: &Value) -> Result<Value, ApiError> {
        let name = string(planned, "name");
        let t = api.client().create_join_token(to_api(planned, 0)).await.map_err(status(&name))?;
        Ok(to_state(t.get_ref(), planned))
    }

    async fn read(&self, api: &Api, state: &Value) -> Result<Option<Value>, ApiError> {
        let name = string(state, "name");
        let t = found(api.client().get_join_token(api::GetRequest { name: name.clone() }).await.map_err(status(&name)))?;
        Ok(t.map(|t| to_state(t.get_ref(), state)))
    }

    async fn update(&self, api: &Api, prior: &Value, planned: &Value) -> Result<Value, ApiError> {
        let name = string(planned, "name");
        let t = api.client().update_join_token(to_api(planned, int(prior, "revision"))).await.map_err(status(&name))?;
        Ok(to_state(t.get_ref(), prior))
    }

    async fn delete(&self, api: &Api, state: &Value) -> Result<(), ApiError> {
        let name = string(state, "name");
        let r = api.client().delete_join_token(api::DeleteRequest { name: name.clone(), revision: 0 }).await;
        gone_ok(r.map(|_| ()).map_err(status(&name)))
    }

    /// The broker names a rule's claim `allow[0].repository`; here it is an
    /// entry of the rule's `claims` map.
    fn schema_field(&self, broker_field: &str) -> String {
        schema_field(broker_field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_kept_from_prior_state_when_the_broker_omits_it() {
        let prior = Value::object([("secret", Value::string("s3cret"))]);
        let t = api::JoinToken { name: "t".into(), ..Default::default() };
        assert_eq!(to_state(&t, &prior).attr("secret"), &Value::string("s3cret"));
        let created = api::JoinToken { secret: "new".into(), ..t };
        assert_eq!(to_state(&created, &Value::Null).attr("secret"), &Value::string("new"));
    }

    #[test]
    fn a_method_without_a_secret_leaves_it_null_not_unknown() {
        // Planned: `secret` unknown (computed). A github token comes back without one.
        let planned = Value::object([("secret", Value::Unknown)]);
        let t = api::JoinToken { name: "gh".into(), method: "github".into(), ..Default::default() };
        assert_eq!(to_state(&t, &planned).attr("secret"), &Value::Null);
    }

    #[test]
    fn secret_attribute_is_computed_and_sensitive() {
        let s = schema();
        let a = s.block.attribute("secret").unwrap();
        assert!(a.sensitive && a.is_computed() && !a.is_configurable());
    }

    #[test]
    fn allow_rules_and_config_round_trip() {
        let planned = Value::object([
            ("name", Value::string("t")),
            ("config", Value::Map([("audience".to_string(), Value::string("sigil"))].into())),
            ("allow", Value::List(vec![Value::object([(
                "claims",
                Value::Map([("repository".to_string(), Value::string("org/*"))].into()),
            )])])),
        ]);
        let state = to_state(&to_api(&planned, 0), &planned);
        assert_eq!(state.attr("config"), planned.attr("config"));
        assert_eq!(state.attr("allow"), planned.attr("allow"));
        assert_eq!(to_state(&api::JoinToken::default(), &Value::Null).attr("config"), &Value::Null);
    }

    #[test]
    fn broker_fields_map_to_the_attributes_terraform_shows() {
        let at = |f: &str| {
            let segs = crate::broker_field::parse(&JoinToken::default().schema_field(f)).unwrap();
            crate::broker_field::to_attr_path(&schema().block, &segs).map(|p| p.to_string())
        };
        assert_eq!(at("allow[1].repository").as_deref(), Some("allow[1].claims[\"repository\"]"));
        assert_eq!(at("config.audience").as_deref(), Some("config[\"audience\"]"));
        assert_eq!(at("allow[0]").as_deref(), Some("allow[0]"));
        assert_eq!(at("expires_at").as_deref(), Some("expires_at"));
    }

    fn token(method: Value, config: Value, claims: &[&[(&str, &str)]]) -> Value {
        let allow = claims
            .iter()
            .map(|c| Value::object([("claims", Value::Map(c.iter().map(|(k, v)| (k.to_string(), Value::string(*v))).collect()))]))
            .collect();
        Value::object([("name", Value::string("t")), ("bot", Value::string("b")), ("method", method), ("config", config), ("allow", Value::List(allow))])
    }

    fn map(pairs: &[(&str, &str)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| (k.to_string(), Value::string(*v))).collect())
    }

    fn check(v: &Value) -> Vec<(String, String)> {
        let mut d = Diagnostics::default();
        JoinToken { now: || 1_000 }.validate(v, &mut d);
        d.0.iter().map(|d| (d.path.as_ref().map(ToString::to_string).unwrap_or_default(), d.detail.clone())).collect()
    }

    #[test]
    fn an_unknown_method_is_named_with_the_known_ones_at_method() {
        let got = check(&token(Value::string("githb"), Value::Null, &[]));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "method");
        assert!(got[0].1.contains("\"githb\"") && got[0].1.contains("github") && got[0].1.contains("terraform_cloud"), "{}", got[0].1);
    }

    #[test]
    fn a_claim_the_method_does_not_define_is_named_at_its_map_key() {
        let got = check(&token(Value::string("github"), map(&[("audience", "sigil")]), &[&[("repository", "a/b")], &[("repo", "a/b")]]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "allow[1].claims[\"repo\"]");
        assert!(got[0].1.contains("repository"), "lists the fields: {}", got[0].1);
        // Methods whose rules take any claim accept any name.
        assert!(check(&token(Value::string("oidc"), map(&[("audience", "a"), ("issuer", "https://i")]), &[&[("anything", "x")]])).is_empty());
    }

    #[test]
    fn a_missing_required_setting_is_named_at_config() {
        let got = check(&token(Value::string("github"), Value::Null, &[&[("repository", "a/b")]]));
        assert_eq!(got, vec![("config".to_string(), "invalid config.audience: join method \"github\" requires config.audience.".to_string())]);
        let got = check(&token(Value::string("terraform_cloud"), map(&[("audiance", "x")]), &[]));
        assert_eq!(got[0].0, "config[\"audiance\"]");
        assert!(got[0].1.contains("unknown setting for join method \"terraform_cloud\""), "{}", got[0].1);
        // The default method `token` takes no settings.
        assert_eq!(check(&token(Value::Null, map(&[("audience", "x")]), &[]))[0].0, "config[\"audience\"]");
        assert!(check(&token(Value::Null, Value::Null, &[])).is_empty());
    }

    #[test]
    fn values_unknown_at_plan_time_are_not_checked() {
        assert!(check(&token(Value::Unknown, Value::Null, &[&[("repo", "x")]])).is_empty());
        assert!(check(&token(Value::string("github"), Value::Unknown, &[])).is_empty());
        // A setting whose value is unknown: its key is still checked, the value is not.
        let partly = Value::Map([("audience".to_string(), Value::Unknown)].into());
        assert!(check(&token(Value::string("github"), partly, &[])).is_empty());
        let typo = Value::Map([("audiance".to_string(), Value::Unknown)].into());
        assert_eq!(check(&token(Value::string("github"), typo, &[]))[0].0, "config[\"audiance\"]");
        let mut unknown_rules = token(Value::string("github"), map(&[("audience", "a")]), &[]);
        unknown_rules.set_attr("allow", Value::Unknown);
        assert!(check(&unknown_rules).is_empty());
    }

    #[test]
    fn plan_time_checks_agree_with_the_broker_registry() {
        // Every method: a config with its required keys and rules naming its fields passes.
        for m in Method::ALL {
            let cfg: Vec<(&str, &str)> = m.required_config().into_iter().map(|k| (k, "https://x.example")).collect();
            let rules: Vec<(&str, &str)> = match m.spec().rule_fields {
                RuleFields::Only(f) => vec![(f[0], "x")],
                RuleFields::Any => vec![("any", "x")],
                RuleFields::NoRules => vec![],
            };
            let rule_list = [rules.as_slice()];
            let v = token(Value::string(m.name()), map(&cfg), if rules.is_empty() { &[] } else { &rule_list });
            let core = sigil_core::domain::JoinToken {
                name: sigil_core::domain::Name::parse("t").unwrap(),
                bot: sigil_core::domain::Name::parse("b").unwrap(),
                method: m.name().into(),
                expires_at: 1,
                max_uses: 1,
                uses: 0,
                revision: 0,
                allow: if rules.is_empty() { vec![] } else { vec![rules.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()] },
                config: cfg.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            };
            assert_eq!(check(&v).is_empty(), core.check_settings().is_ok(), "{m}: {:?}", check(&v));
        }
    }

    #[test]
    fn zero_uses_is_rejected_at_max_uses() {
        let mut d = Diagnostics::default();
        JoinToken::default().validate(&Value::object([("max_uses", Value::int(0))]), &mut d);
        assert_eq!(d.0[0].path, Some(AttrPath::attr("max_uses")));
    }

    #[test]
    fn a_past_expiry_is_a_warning_at_expires_at() {
        let token = JoinToken { now: || 1_000 };
        let mut d = Diagnostics::default();
        token.validate(&Value::object([("expires_at", Value::int(999))]), &mut d);
        assert_eq!(d.0.len(), 1);
        assert_eq!((d.0[0].severity, d.0[0].path.clone()), (crate::diag::Severity::Warning, Some(AttrPath::attr("expires_at"))));
        let mut future = Diagnostics::default();
        token.validate(&Value::object([("expires_at", Value::int(1_001))]), &mut future);
        assert!(future.0.is_empty());
    }
}
