//! The protocol-agnostic provider: resource and data source traits, generic
//! planning from schema metadata, and request handling over cty values. The
//! tfplugin6 layer (`tfproto`) only converts in and out of this.

use crate::api::{Api, ApiError};
use crate::config::{self, EnvLookup, Settings};
use crate::cty::Value;
use crate::diag::{AttrPath, Diagnostics};
use crate::schema::{Mode, Schema};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{OnceCell, RwLock};

/// A managed resource type.
#[async_trait::async_trait]
pub trait Resource: Send + Sync {
    /// Terraform type name, e.g. `sigil_role`.
    fn type_name(&self) -> &'static str;
    /// Schema of the resource.
    fn schema(&self) -> Schema;
    /// Checks beyond types that need no broker. Unknown values must be skipped.
    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}
    /// Creates the object; returns the new state.
    async fn create(&self, api: &Api, planned: &Value) -> Result<Value, ApiError>;
    /// Reads the object; `None` when it no longer exists.
    async fn read(&self, api: &Api, state: &Value) -> Result<Option<Value>, ApiError>;
    /// Updates in place; returns the new state.
    async fn update(&self, api: &Api, prior: &Value, planned: &Value) -> Result<Value, ApiError>;
    /// Deletes the object. Deleting what is already gone succeeds.
    async fn delete(&self, api: &Api, state: &Value) -> Result<(), ApiError>;
    /// A field the broker blamed, renamed into this schema's terms (see
    /// [`crate::broker_field`]); by default the names are the same.
    fn schema_field(&self, broker_field: &str) -> String {
        broker_field.to_string()
    }
}

/// A data source type.
#[async_trait::async_trait]
pub trait DataSource: Send + Sync {
    /// Terraform type name, e.g. `sigil_trust_bundle`.
    fn type_name(&self) -> &'static str;
    /// Schema of the data source.
    fn schema(&self) -> Schema;
    /// Checks beyond types that need no broker.
    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}
    /// Reads the data; returns the full state.
    async fn read(&self, api: &Api, config: &Value) -> Result<Value, ApiError>;
}

/// Result of planning one resource change.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The planned new state.
    pub planned: Value,
    /// Attributes whose change forces replacement.
    pub requires_replace: Vec<AttrPath>,
}

/// Plans a change from schema metadata alone, like the plugin frameworks do:
/// defaults fill unset optional-computed attributes; on create, other computed
/// attributes become unknown; on update, volatile ones do, and changes to
/// force-new attributes require replacement.
pub fn plan(schema: &Schema, prior: &Value, proposed: &Value, config: &Value) -> Plan {
    if proposed.is_null() {
        return Plan { planned: Value::Null, requires_replace: vec![] };
    }
    let mut planned = proposed.clone();
    let block = &schema.block;
    // Terraform 1.0 proposes the prior value of a single block the
    // configuration removed, then refuses a plan that keeps it ("planned for
    // existence but config wants absence"): an absent block is planned absent.
    for b in block.blocks.iter().filter(|b| b.nesting == crate::schema::Nesting::Single) {
        if config.attr(b.name).is_null() && !planned.attr(b.name).is_null() {
            planned.set_attr(b.name, Value::Null);
        }
    }
    for a in &block.attributes {
        if a.is_computed() && config.attr(a.name).is_null() {
            if let Some(d) = &a.default {
                planned.set_attr(a.name, d.clone());
            } else if prior.is_null() {
                planned.set_attr(a.name, Value::Unknown);
            }
        }
    }
    if prior.is_null() {
        return Plan { planned, requires_replace: vec![] };
    }
    let differs = |name: &str| planned.attr(name) != prior.attr(name);
    let mut requires_replace = Vec::new();
    for a in block.attributes.iter().filter(|a| a.force_new && differs(a.name)) {
        requires_replace.push(AttrPath::attr(a.name));
    }
    for b in block.blocks.iter().filter(|b| b.force_new && differs(b.name)) {
        requires_replace.push(AttrPath::attr(b.name));
    }
    let changed = block.attributes.iter().any(|a| a.mode != Mode::Computed && differs(a.name))
        || block.blocks.iter().any(|b| differs(b.name));
    if changed {
        for a in block.attributes.iter().filter(|a| a.volatile) {
            planned.set_attr(a.name, Value::Unknown);
        }
    }
    Plan { planned, requires_replace }
}

/// The Sigil provider: its resource types, data sources and broker connection.
pub struct Provider {
    resources: BTreeMap<&'static str, Arc<dyn Resource>>,
    data_sources: BTreeMap<&'static str, Arc<dyn DataSource>>,
    settings: RwLock<Option<Settings>>,
    api: OnceCell<Api>,
    env: Box<EnvLookup>,
}

impl Provider {
    /// A provider with the given types, reading settings from `env`.
    pub fn new(resources: Vec<Arc<dyn Resource>>, data_sources: Vec<Arc<dyn DataSource>>, env: Box<EnvLookup>) -> Self {
        Self {
            resources: resources.into_iter().map(|r| (r.type_name(), r)).collect(),
            data_sources: data_sources.into_iter().map(|d| (d.type_name(), d)).collect(),
            settings: RwLock::new(None),
            api: OnceCell::new(),
            env,
        }
    }

    /// The provider block schema.
    pub fn provider_schema(&self) -> Schema {
        config::provider_schema()
    }

    /// Resource type by name.
    pub fn resource(&self, name: &str) -> Option<&Arc<dyn Resource>> {
        self.resources.get(name)
    }

    /// Data source type by name.
    pub fn data_source(&self, name: &str) -> Option<&Arc<dyn DataSource>> {
        self.data_sources.get(name)
    }

    /// All resource types.
    pub fn resources(&self) -> impl Iterator<Item = &Arc<dyn Resource>> {
        self.resources.values()
    }

    /// All data source types.
    pub fn data_sources(&self) -> impl Iterator<Item = &Arc<dyn DataSource>> {
        self.data_sources.values()
    }

    /// ValidateProviderConfig.
    pub fn validate_provider(&self, config: &Value) -> Diagnostics {
        config::validate(config)
    }

    /// ConfigureProvider: resolves settings; the connection opens on first use,
    /// so plans that need no broker call work without one.
    pub async fn configure(&self, config: &Value) -> Diagnostics {
        match config::resolve(config, self.env.as_ref()) {
            Ok(settings) => {
                *self.settings.write().await = Some(settings);
                Diagnostics::default()
            }
            Err(diags) => diags,
        }
    }

    /// The broker connection, opened on first use.
    pub async fn api(&self) -> Result<&Api, ApiError> {
        self.api
            .get_or_try_init(|| async {
                let settings = self.settings.read().await.clone().ok_or_else(|| {
                    ApiError::Unavailable("the provider was not configured before use".into())
                })?;
                config::connect(&settings).await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cty::Type;
    use crate::schema::{Attribute, Block};

    fn schema() -> Schema {
        Schema {
            version: 0,
            block: Block {
                description: "",
                attributes: vec![
                    Attribute::computed("id", Type::String, ""),
                    Attribute::required("name", Type::String, "").force_new(),
                    Attribute::optional("description", Type::String, ""),
                    Attribute::with_default("max_uses", Type::Number, Value::int(1), ""),
                    Attribute::computed("revision", Type::Number, "").volatile(),
                    Attribute::computed("secret", Type::String, "").sensitive(),
                ],
                blocks: vec![],
            },
        }
    }

    fn obj(pairs: &[(&str, Value)]) -> Value {
        let mut v = Value::object(schema().block.attributes.iter().map(|a| (a.name, Value::Null)));
        for (k, x) in pairs {
            v.set_attr(k, x.clone());
        }
        v
    }

    #[test]
    fn create_plans_computed_attributes_as_unknown_and_applies_defaults() {
        let cfg = obj(&[("name", Value::string("a"))]);
        let p = plan(&schema(), &Value::Null, &cfg, &cfg);
        assert_eq!(p.planned.attr("id"), &Value::Unknown);
        assert_eq!(p.planned.attr("secret"), &Value::Unknown);
        assert_eq!(p.planned.attr("max_uses"), &Value::int(1));
        assert_eq!(p.planned.attr("description"), &Value::Null);
        assert!(p.requires_replace.is_empty());
    }

    #[test]
    fn a_single_block_removed_from_the_config_is_planned_absent() {
        // Terraform 1.0 proposes the prior block; the plan must follow the config.
        let mut s = schema();
        let inner = Block { description: "", attributes: vec![Attribute::optional("users", Type::list(Type::String), "")], blocks: vec![] };
        s.block.blocks.push(crate::schema::NestedBlock { name: "database", nesting: crate::schema::Nesting::Single, block: inner, force_new: false });
        let mut prior = obj(&[("id", Value::string("a")), ("name", Value::string("a")), ("revision", Value::int(3))]);
        prior.set_attr("database", Value::object([("users", Value::string_list(["app"]))]));
        let cfg = obj(&[("name", Value::string("a"))]);
        let p = plan(&s, &prior, &prior, &cfg);
        assert_eq!(p.planned.attr("database"), &Value::Null);
        assert_eq!(p.planned.attr("revision"), &Value::Unknown, "a change: the revision moves");
    }

    #[test]
    fn no_change_plans_the_prior_state() {
        let prior = obj(&[
            ("id", Value::string("a")),
            ("name", Value::string("a")),
            ("max_uses", Value::int(1)),
            ("revision", Value::int(3)),
            ("secret", Value::string("s")),
        ]);
        let cfg = obj(&[("name", Value::string("a"))]);
        let p = plan(&schema(), &prior, &prior, &cfg);
        assert_eq!(p.planned, prior);
        assert!(p.requires_replace.is_empty());
    }

    #[test]
    fn in_place_change_marks_only_volatile_attributes_unknown() {
        let prior = obj(&[
            ("id", Value::string("a")),
            ("name", Value::string("a")),
            ("max_uses", Value::int(1)),
            ("revision", Value::int(3)),
            ("secret", Value::string("s")),
        ]);
        let mut proposed = prior.clone();
        proposed.set_attr("description", Value::string("new"));
        let cfg = obj(&[("name", Value::string("a")), ("description", Value::string("new"))]);
        let p = plan(&schema(), &prior, &proposed, &cfg);
        assert_eq!(p.planned.attr("revision"), &Value::Unknown);
        assert_eq!(p.planned.attr("secret"), &Value::string("s"));
        assert!(p.requires_replace.is_empty());
    }

    #[test]
    fn force_new_change_requires_replacement() {
        let prior = obj(&[("name", Value::string("a")), ("revision", Value::int(1))]);
        let mut proposed = prior.clone();
        proposed.set_attr("name", Value::string("b"));
        let p = plan(&schema(), &prior, &proposed, &proposed);
        assert_eq!(p.requires_replace, vec![AttrPath::attr("name")]);
    }

    #[test]
    fn destroy_plans_null() {
        let prior = obj(&[("name", Value::string("a"))]);
        assert_eq!(plan(&schema(), &prior, &Value::Null, &Value::Null).planned, Value::Null);
    }
}
