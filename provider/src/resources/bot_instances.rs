//! `sigil_bot_instances` data source: the joined agents of a bot (or of every
//! bot) that have not expired, with their last heartbeat.

use super::status;
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::provider::DataSource;
use crate::schema::{Attribute, Block, Schema};
use sigil_schemas::sigil::v1 as api;

/// The `sigil_bot_instances` data source type.
pub struct BotInstances;

/// Most pages one read fetches (a page holds up to 1,000 instances).
const MAX_PAGES: usize = 1000;

fn instance_type() -> Type {
    Type::object([
        ("id", Type::String),
        ("bot", Type::String),
        ("join_method", Type::String),
        ("join_attributes", Type::map(Type::String)),
        ("first_seen", Type::Number),
        ("last_seen", Type::Number),
        ("expires_at", Type::Number),
        ("generation", Type::Number),
        ("host_name", Type::String),
        ("os", Type::String),
        ("agent_version", Type::String),
        ("outputs", Type::list(Type::String)),
        ("last_renewal", Type::Number),
    ])
}

fn instance_value(i: api::BotInstance) -> Value {
    let hb = i.heartbeat.unwrap_or_default();
    let method = i.join_attributes.get("join.method").cloned().unwrap_or_default();
    let attrs = i.join_attributes.into_iter().map(|(k, v)| (k, Value::string(v))).collect();
    Value::object([
        ("id", Value::string(i.id)),
        ("bot", Value::string(i.bot)),
        ("join_method", Value::string(method)),
        ("join_attributes", Value::Map(attrs)),
        ("first_seen", Value::int(i.first_seen)),
        ("last_seen", Value::int(i.last_seen)),
        ("expires_at", Value::int(i.expires_at)),
        ("generation", Value::int(i.generation)),
        ("host_name", Value::string(hb.host_name)),
        ("os", Value::string(hb.os)),
        ("agent_version", Value::string(hb.agent_version)),
        ("outputs", Value::string_list(hb.outputs)),
        ("last_renewal", Value::int(hb.last_renewal)),
    ])
}

#[async_trait::async_trait]
impl DataSource for BotInstances {
    fn type_name(&self) -> &'static str {
        "sigil_bot_instances"
    }

    fn schema(&self) -> Schema {
        Schema {
            version: 0,
            block: Block {
                description: "Bot instances (one per successful join) not expired, with each agent's last heartbeat. Needs verb `list` on `bot_instance` (for `bot`'s name, or for every bot when `bot` is unset).",
                attributes: vec![
                    Attribute::optional("bot", Type::String, "Only this bot's instances; unset: every bot's."),
                    Attribute::computed("id", Type::String, "The bot name, or `*` for every bot."),
                    Attribute::computed(
                        "instances",
                        Type::list(instance_type()),
                        "Instances by id: `id`, `bot`, `join_method`, `join_attributes`, `first_seen`, `last_seen`, `expires_at` (Unix seconds), `generation`, and from the last heartbeat (empty/0 before the first) `host_name`, `os`, `agent_version`, `outputs`, `last_renewal`.",
                    ),
                ],
                blocks: vec![],
            },
        }
    }

    async fn read(&self, api: &Api, config: &Value) -> Result<Value, ApiError> {
        let bot = config.attr("bot").as_str().unwrap_or_default().to_string();
        let mut items = Vec::new();
        let mut after = String::new();
        for _ in 0..MAX_PAGES {
            let req = api::ListBotInstancesRequest { limit: 0, after: after.clone(), bot: bot.clone() };
            let page = api.client().list_bot_instances(req).await.map_err(status("bot instances"))?.into_inner().items;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            items.extend(page.into_iter().map(instance_value));
        }
        Ok(Value::object([
            ("bot", if bot.is_empty() { Value::Null } else { Value::string(&bot) }),
            ("id", Value::string(if bot.is_empty() { "*" } else { bot.as_str() })),
            ("instances", Value::List(items)),
        ]))
    }
}
