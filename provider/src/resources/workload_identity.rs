//! `sigil_workload_identity`: a SPIFFE ID template plus the conditions under
//! which a bot may issue it to a workload.

use super::{check_name, check_non_negative, found, gone_ok, int, opt_int, opt_list, opt_map, status, string, strings};
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::diag::{AttrPath, Diagnostics};
use crate::provider::Resource;
use crate::schema::{Attribute, Block, NestedBlock, Nesting, Schema};
use sigil_schemas::sigil::v1 as api;

/// Attributes a condition may test (`KEY` parts are free-form).
pub const CONDITION_PREFIXES: &[&str] = &["bot.name", "bot.traits.", "join.", "workload.unix.uid", "workload.unix.gid", "workload.unix.pid", "workload.unix.path", "workload.unix.sha256"];

/// The `sigil_workload_identity` resource type.
pub struct WorkloadIdentity;

fn schema() -> Schema {
    let allow = Block {
        description: "Condition on request attributes; all `allow` blocks must hold.",
        attributes: vec![
            Attribute::required("attribute", Type::String, "Attribute tested: `bot.name`, `bot.traits.KEY`, `join.KEY`, `workload.unix.uid`, `workload.unix.gid`, `workload.unix.pid`, `workload.unix.path`, `workload.unix.sha256`."),
            Attribute::required("values", Type::list(Type::String), "Accepted values (globs); any one matching suffices."),
        ],
        blocks: vec![],
    };
    Schema {
        version: 0,
        block: Block {
            description: "A workload identity describes the SVIDs a bot may issue to workloads, evaluated by the broker per request.",
            attributes: vec![
                Attribute::computed("id", Type::String, "Same as `name`."),
                Attribute::required("name", Type::String, "Workload identity name. Changing it replaces the object.").force_new(),
                Attribute::required("spiffe_id", Type::String, "SPIFFE ID path template, e.g. `/svc/{{bot.name}}/uid-{{workload.unix.uid}}`."),
                Attribute::optional("dns_sans", Type::list(Type::String), "DNS names added to X.509-SVIDs."),
                Attribute::optional("jwt_extra_claims", Type::map(Type::String), "Extra claims added to JWT-SVIDs."),
                Attribute::optional("max_x509_ttl_seconds", Type::Number, "Longest X.509-SVID lifetime, in seconds (unset: broker default)."),
                Attribute::optional("max_jwt_ttl_seconds", Type::Number, "Longest JWT-SVID lifetime, in seconds (unset: broker default)."),
                Attribute::computed("revision", Type::Number, "Broker revision; changes on every update.").volatile(),
            ],
            blocks: vec![NestedBlock { name: "allow", nesting: Nesting::List, block: allow, force_new: false }],
        },
    }
}

fn to_api(v: &Value, revision: i64) -> api::WorkloadIdentity {
    api::WorkloadIdentity {
        name: string(v, "name"),
        spiffe_id: string(v, "spiffe_id"),
        dns_sans: strings(v, "dns_sans"),
        jwt_extra_claims: v
            .attr("jwt_extra_claims")
            .entries()
            .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_string()))
            .collect(),
        max_x509_ttl_seconds: int(v, "max_x509_ttl_seconds"),
        max_jwt_ttl_seconds: int(v, "max_jwt_ttl_seconds"),
        allow: v
            .attr("allow")
            .elements()
            .iter()
            .map(|c| api::Condition { attribute: string(c, "attribute"), values: strings(c, "values") })
            .collect(),
        revision,
    }
}

fn to_state(w: &api::WorkloadIdentity, hint: &Value) -> Value {
    let claims = w.jwt_extra_claims.iter().map(|(k, v)| (k.clone(), Value::string(v))).collect();
    let allow = w
        .allow
        .iter()
        .map(|c| {
            Value::object([
                ("attribute", Value::string(&c.attribute)),
                ("values", Value::string_list(c.values.iter().map(String::as_str))),
            ])
        })
        .collect();
    Value::object([
        ("id", Value::string(&w.name)),
        ("name", Value::string(&w.name)),
        ("spiffe_id", Value::string(&w.spiffe_id)),
        ("dns_sans", opt_list(&w.dns_sans, hint.attr("dns_sans"))),
        ("jwt_extra_claims", opt_map(claims, hint.attr("jwt_extra_claims"))),
        ("max_x509_ttl_seconds", opt_int(w.max_x509_ttl_seconds, hint.attr("max_x509_ttl_seconds"))),
        ("max_jwt_ttl_seconds", opt_int(w.max_jwt_ttl_seconds, hint.attr("max_jwt_ttl_seconds"))),
        ("allow", Value::List(allow)),
        ("revision", Value::int(w.revision)),
    ])
}

#[async_trait::async_trait]
impl Resource for WorkloadIdentity {
    fn type_name(&self) -> &'static str {
        "sigil_workload_identity"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_name(config, "name", diags);
        check_non_negative(config, "max_x509_ttl_seconds", diags);
        check_non_negative(config, "max_jwt_ttl_seconds", diags);
        if let Some(s) = config.attr("spiffe_id").as_str() {
            if !s.starts_with('/') {
                diags.error_at(AttrPath::attr("spiffe_id"), "Invalid SPIFFE ID template", format!("{s:?} must be a path starting with '/' (the broker adds spiffe://TRUST-DOMAIN)."));
            }
        }
        for (i, cond) in config.attr("allow").elements().iter().enumerate() {
            if let Some(a) = cond.attr("attribute").as_str() {
                let known = CONDITION_PREFIXES.iter().any(|p| if p.ends_with('.') { a.starts_with(p) && a.len() > p.len() } else { a == *p });
                if !known {
                    diags.error_at(
                        AttrPath::attr("allow").then_index(i).then_attr("attribute"),
                        "Unknown condition attribute",
                        format!("{a:?} is not a request attribute; use bot.name, bot.traits.KEY, join.KEY or workload.unix.(uid|gid|pid|path|sha256)."),
                    );
                }
            }
        }
    }

    async fn create(&self, api: &Api, planned: &Value) -> Result<Value, ApiError> {
        let name = string(planned, "name");
        let w = api.client().create_workload_identity(to_api(planned, 0)).await.map_err(status(&name))?;
        Ok(to_state(w.get_ref(), planned))
    }

    async fn read(&self, api: &Api, state: &Value) -> Result<Option<Value>, ApiError> {
        let name = string(state, "name");
        let w = found(api.client().get_workload_identity(api::GetRequest { name: name.clone() }).await.map_err(status(&name)))?;
        Ok(w.map(|w| to_state(w.get_ref(), state)))
    }

    async fn update(&self, api: &Api, prior: &Value, planned: &Value) -> Result<Value, ApiError> {
        let name = string(planned, "name");
        let w = api.client().update_workload_identity(to_api(planned, int(prior, "revision"))).await.map_err(status(&name))?;
        Ok(to_state(w.get_ref(), planned))
    }

    async fn delete(&self, api: &Api, state: &Value) -> Result<(), ApiError> {
        let name = string(state, "name");
        let r = api.client().delete_workload_identity(api::DeleteRequest { name: name.clone(), revision: 0 }).await;
        gone_ok(r.map(|_| ()).map_err(status(&name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_condition_attribute_is_reported_at_the_block() {
        let config = Value::object([(
            "allow",
            Value::List(vec![
                Value::object([("attribute", Value::string("bot.traits.team"))]),
                Value::object([("attribute", Value::string("workload.unix.user"))]),
            ]),
        )]);
        let mut d = Diagnostics::default();
        WorkloadIdentity.validate(&config, &mut d);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].path.as_ref().map(ToString::to_string).as_deref(), Some("allow[1].attribute"));
    }
}
