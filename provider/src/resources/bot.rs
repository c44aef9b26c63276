//! `sigil_bot`: a machine identity holding roles.

use super::{check_name, check_non_negative, found, gone_ok, int, opt_int, opt_map, status, string, strings};
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::diag::{AttrPath, Diagnostics};
use crate::provider::Resource;
use crate::schema::{Attribute, Block, Schema};
use sigil_schemas::sigil::v1 as api;
use std::collections::{BTreeMap, HashMap};

/// The `sigil_bot` resource type.
pub struct Bot;

fn schema() -> Schema {
    Schema {
        version: 0,
        block: Block {
            description: "A bot is a machine identity: it joins with a join token and obtains SVIDs its roles allow.",
            attributes: vec![
                Attribute::computed("id", Type::String, "Same as `name`."),
                Attribute::required("name", Type::String, "Bot name. Changing it replaces the bot (and invalidates its identity).").force_new(),
                Attribute::required("roles", Type::list(Type::String), "Names of the roles the bot holds."),
                Attribute::optional("traits", Type::map(Type::list(Type::String)), "Traits usable in role templates as `{{bot.traits.KEY}}`."),
                Attribute::optional("max_session_ttl_seconds", Type::Number, "Longest bot identity certificate lifetime, in seconds (unset: broker default)."),
                Attribute::computed("revision", Type::Number, "Broker revision; changes on every update.").volatile(),
                Attribute::computed("generation", Type::Number, "Committed identity generation of the bot."),
                Attribute::computed("locked", Type::Bool, "Whether the bot is locked because a stale identity generation was presented (its identity was copied)."),
            ],
            blocks: vec![],
        },
    }
}

fn to_api(v: &Value, revision: i64) -> api::Bot {
    let traits: HashMap<String, api::StringList> = v
        .attr("traits")
        .entries()
        .map(|(k, vals)| (k.clone(), api::StringList { values: vals.as_string_vec().unwrap_or_default() }))
        .collect();
    api::Bot {
        name: string(v, "name"),
        roles: strings(v, "roles"),
        traits,
        max_session_ttl_seconds: int(v, "max_session_ttl_seconds"),
        revision,
        ..Default::default()
    }
}

fn to_state(b: &api::Bot, hint: &Value) -> Value {
    let traits: BTreeMap<String, Value> = b
        .traits
        .iter()
        .map(|(k, l)| (k.clone(), Value::string_list(l.values.iter().map(String::as_str))))
        .collect();
    Value::object([
        ("id", Value::string(&b.name)),
        ("name", Value::string(&b.name)),
        ("roles", Value::string_list(b.roles.iter().map(String::as_str))),
        ("traits", opt_map(traits, hint.attr("traits"))),
        ("max_session_ttl_seconds", opt_int(b.max_session_ttl_seconds, hint.attr("max_session_ttl_seconds"))),
        ("revision", Value::int(b.revision)),
        ("generation", Value::int(b.generation)),
        ("locked", Value::Bool(b.locked)),
    ])
}

#[async_trait::async_trait]
impl Resource for Bot {
    fn type_name(&self) -> &'static str {
        "sigil_bot"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_name(config, "name", diags);
        check_non_negative(config, "max_session_ttl_seconds", diags);
        for (i, role) in config.attr("roles").elements().iter().enumerate() {
            if role.as_str() == Some("") {
                diags.error_at(AttrPath::attr("roles").then_index(i), "Empty role name", "Role names cannot be empty.");
            }
        }
    }

    async fn create(&self, api: &Api, planned: &Value) -> Result<Value, ApiError> {
        let name = string(planned, "name");
        let b = api.client().create_bot(to_api(planned, 0)).await.map_err(status(&name))?;
        Ok(to_state(b.get_ref(), planned))
    }

    async fn read(&self, api: &Api, state: &Value) -> Result<Option<Value>, ApiError> {
        let name = string(state, "name");
        let b = found(api.client().get_bot(api::GetRequest { name: name.clone() }).await.map_err(status(&name)))?;
        Ok(b.map(|b| to_state(b.get_ref(), state)))
    }

    async fn update(&self, api: &Api, prior: &Value, planned: &Value) -> Result<Value, ApiError> {
        let name = string(planned, "name");
        let b = api.client().update_bot(to_api(planned, int(prior, "revision"))).await.map_err(status(&name))?;
        Ok(to_state(b.get_ref(), planned))
    }

    async fn delete(&self, api: &Api, state: &Value) -> Result<(), ApiError> {
        let name = string(state, "name");
        let r = api.client().delete_bot(api::DeleteRequest { name: name.clone(), revision: 0 }).await;
        gone_ok(r.map(|_| ()).map_err(status(&name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traits_map_of_lists_round_trips() {
        let planned = Value::object([
            ("name", Value::string("ci")),
            ("roles", Value::string_list(["deployer"])),
            ("traits", Value::Map([("team".to_string(), Value::string_list(["a", "b"]))].into())),
            ("max_session_ttl_seconds", Value::Null),
        ]);
        let state = to_state(&to_api(&planned, 0), &planned);
        assert_eq!(state.attr("traits"), planned.attr("traits"));
        assert_eq!(state.attr("max_session_ttl_seconds"), &Value::Null);
        assert_eq!(state.attr("locked"), &Value::Bool(false));
    }
}
