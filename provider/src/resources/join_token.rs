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

/// Join methods named in messages; the broker decides which it supports.
pub const TOKEN_METHODS: &[&str] = &["token", "terraform_cloud", "spacelift", "github", "kubernetes"];

/// The `sigil_join_token` resource type.
pub struct JoinToken;

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
        if let Some(m) = config.attr("method").as_str() {
            if m.is_empty() || !m.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                diags.error_at(AttrPath::attr("method"), "Invalid join method", format!("{m:?} is not a join method name such as {}.", TOKEN_METHODS.join(", ")));
            }
        }
        if let Some(n) = config.attr("max_uses").as_i64() {
            if n < 1 {
                diags.error_at(AttrPath::attr("max_uses"), "Invalid max_uses", format!("A token must allow at least one join, not {n}."));
            }
        }
        if let Some(t) = config.attr("expires_at").as_i64() {
            if t <= 0 {
                diags.error_at(AttrPath::attr("expires_at"), "Invalid expiry", "`expires_at` is a Unix time in seconds, e.g. 1893456000 for 2030-01-01.");
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
        let mut parts = broker_field.splitn(2, '.');
        match (parts.next(), parts.next()) {
            (Some(rule), Some(claim)) if rule.starts_with("allow[") && claim != "claims" && !claim.starts_with("claims.") => format!("{rule}.claims.{claim}"),
            _ => broker_field.to_string(),
        }
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
            let segs = crate::broker_field::parse(&JoinToken.schema_field(f)).unwrap();
            crate::broker_field::to_attr_path(&schema().block, &segs).map(|p| p.to_string())
        };
        assert_eq!(at("allow[1].repository").as_deref(), Some("allow[1].claims[\"repository\"]"));
        assert_eq!(at("config.audience").as_deref(), Some("config[\"audience\"]"));
        assert_eq!(at("allow[0]").as_deref(), Some("allow[0]"));
        assert_eq!(at("expires_at").as_deref(), Some("expires_at"));
    }

    #[test]
    fn zero_uses_is_rejected_at_max_uses() {
        let mut d = Diagnostics::default();
        JoinToken.validate(&Value::object([("max_uses", Value::int(0))]), &mut d);
        assert_eq!(d.0[0].path, Some(AttrPath::attr("max_uses")));
    }
}
