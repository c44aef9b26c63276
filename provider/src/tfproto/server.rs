//! `tfplugin6.Provider` over the protocol-agnostic [`Provider`]: every handler
//! converts in, calls, converts out. Failures travel as diagnostics; gRPC
//! errors are reserved for requests that cannot be understood at all.

use super::convert::{decode_dynamic, diags_to_proto, encode_dynamic, schema_to_proto};
use crate::api::ApiError;
use crate::broker_field;
use crate::cty::{Type, Value};
use crate::diag::Diagnostics;
use crate::provider::{plan, Provider, Resource};
use sigil_schemas::tfplugin6 as pb;
use sigil_schemas::tfplugin6::provider_server::Provider as ProviderRpc;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The tfplugin6 service.
#[derive(Clone)]
pub struct ProviderService {
    inner: Arc<Provider>,
}

impl ProviderService {
    /// Serves `provider`.
    pub fn new(provider: Arc<Provider>) -> Self {
        Self { inner: provider }
    }

    /// The tonic server for it, with go-plugin's message size limits.
    pub fn into_server(self) -> pb::provider_server::ProviderServer<Self> {
        let max = crate::plugin::MAX_MESSAGE_BYTES;
        pb::provider_server::ProviderServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

fn error(summary: impl Into<String>, detail: impl Into<String>) -> Diagnostics {
    let mut d = Diagnostics::default();
    d.error(summary, detail);
    d
}

fn unknown_type(kind: &str, name: &str) -> Diagnostics {
    error(format!("Unknown {kind} type"), format!("terraform-provider-sigil has no {kind} {name:?}."))
}

fn api_error(action: &str, type_name: &str, name: &str, e: &ApiError) -> Diagnostics {
    error(format!("Cannot {action} {type_name} {name:?}"), format!("{e}. {}", e.hint()))
}

/// Like [`api_error`], pointing at each attribute the broker blamed in its
/// `BadRequest` details (`config.audience` -> `config["audience"]`), as far
/// as the schema has it.
fn api_error_at(action: &str, r: &dyn Resource, name: &str, e: &ApiError) -> Diagnostics {
    let block = r.schema().block;
    let summary = format!("Cannot {action} {} {name:?}", r.type_name());
    let mut d = Diagnostics::default();
    for v in e.violations() {
        let path = broker_field::parse(&r.schema_field(&v.field)).and_then(|segs| broker_field::to_attr_path(&block, &segs));
        let detail = format!("{e}. {}", e.hint());
        match path {
            Some(p) => d.error_at(p, summary.clone(), detail),
            None => d.error(summary.clone(), detail),
        }
    }
    if d.0.is_empty() {
        return api_error(action, r.type_name(), name, e);
    }
    d
}

/// Decodes a value, turning failure into an error diagnostic.
fn decode(v: Option<&pb::DynamicValue>, ty: &Type, what: &str) -> Result<Value, Diagnostics> {
    decode_dynamic(v, ty).map_err(|e| error(format!("Cannot decode {what}"), e.to_string()))
}

/// Encodes a value; a failure here is a provider bug, reported as such.
fn encode(v: &Value, ty: &Type, diags: &mut Diagnostics) -> Option<pb::DynamicValue> {
    match encode_dynamic(v, ty) {
        Ok(d) => Some(d),
        Err(e) => {
            diags.error("Provider produced a value it cannot encode", format!("{e}; please report this bug."));
            None
        }
    }
}

fn name_of(v: &Value) -> String {
    v.attr("name").as_str().unwrap_or_default().to_string()
}

#[tonic::async_trait]
impl ProviderRpc for ProviderService {
    async fn get_provider_schema(
        &self,
        _: Request<pb::get_provider_schema::Request>,
    ) -> Result<Response<pb::get_provider_schema::Response>, Status> {
        let p = &self.inner;
        Ok(Response::new(pb::get_provider_schema::Response {
            provider: Some(schema_to_proto(&p.provider_schema())),
            resource_schemas: p.resources().map(|r| (r.type_name().to_string(), schema_to_proto(&r.schema()))).collect(),
            data_source_schemas: p
                .data_sources()
                .map(|d| (d.type_name().to_string(), schema_to_proto(&d.schema())))
                .collect(),
            diagnostics: vec![],
            provider_meta: None,
        }))
    }

    async fn validate_provider_config(
        &self,
        req: Request<pb::validate_provider_config::Request>,
    ) -> Result<Response<pb::validate_provider_config::Response>, Status> {
        let ty = self.inner.provider_schema().block.implied_type();
        let diags = match decode(req.get_ref().config.as_ref(), &ty, "provider configuration") {
            Ok(config) => self.inner.validate_provider(&config),
            Err(d) => d,
        };
        Ok(Response::new(pb::validate_provider_config::Response { diagnostics: diags_to_proto(&diags) }))
    }

    async fn validate_resource_config(
        &self,
        req: Request<pb::validate_resource_config::Request>,
    ) -> Result<Response<pb::validate_resource_config::Response>, Status> {
        let req = req.into_inner();
        let diags = match self.inner.resource(&req.type_name) {
            None => unknown_type("resource", &req.type_name),
            Some(r) => match decode(req.config.as_ref(), &r.schema().block.implied_type(), "configuration") {
                Ok(config) => {
                    let mut d = Diagnostics::default();
                    r.validate(&config, &mut d);
                    d
                }
                Err(d) => d,
            },
        };
        Ok(Response::new(pb::validate_resource_config::Response { diagnostics: diags_to_proto(&diags) }))
    }

    async fn validate_data_resource_config(
        &self,
        req: Request<pb::validate_data_resource_config::Request>,
    ) -> Result<Response<pb::validate_data_resource_config::Response>, Status> {
        let req = req.into_inner();
        let diags = match self.inner.data_source(&req.type_name) {
            None => unknown_type("data source", &req.type_name),
            Some(ds) => match decode(req.config.as_ref(), &ds.schema().block.implied_type(), "configuration") {
                Ok(config) => {
                    let mut d = Diagnostics::default();
                    ds.validate(&config, &mut d);
                    d
                }
                Err(d) => d,
            },
        };
        Ok(Response::new(pb::validate_data_resource_config::Response { diagnostics: diags_to_proto(&diags) }))
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        let req = req.into_inner();
        let mut diags = Diagnostics::default();
        let mut upgraded = None;
        match self.inner.resource(&req.type_name) {
            None => diags = unknown_type("resource", &req.type_name),
            Some(r) => {
                let schema = r.schema();
                let ty = schema.block.implied_type();
                let json = req.raw_state.as_ref().map(|s| s.json.as_slice()).unwrap_or_default();
                if req.version > schema.version {
                    diags.error(
                        "State written by a newer provider",
                        format!("{} state version {} is newer than this provider's {}; upgrade terraform-provider-sigil.", req.type_name, req.version, schema.version),
                    );
                } else if json.is_empty() {
                    diags.error("Unsupported state format", "Only JSON state can be upgraded; legacy flatmap state is not supported.");
                } else {
                    // Attributes removed from the schema are dropped.
                    match crate::cty::decode_json_lenient(json, &ty) {
                        Ok(v) => upgraded = encode(&v, &ty, &mut diags),
                        Err(e) => diags.error("Cannot read stored state", e.to_string()),
                    }
                }
            }
        }
        Ok(Response::new(pb::upgrade_resource_state::Response {
            upgraded_state: upgraded,
            diagnostics: diags_to_proto(&diags),
        }))
    }

    async fn configure_provider(
        &self,
        req: Request<pb::configure_provider::Request>,
    ) -> Result<Response<pb::configure_provider::Response>, Status> {
        let ty = self.inner.provider_schema().block.implied_type();
        let diags = match decode(req.get_ref().config.as_ref(), &ty, "provider configuration") {
            Ok(config) => self.inner.configure(&config).await,
            Err(d) => d,
        };
        Ok(Response::new(pb::configure_provider::Response { diagnostics: diags_to_proto(&diags) }))
    }

    async fn read_resource(
        &self,
        req: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        let req = req.into_inner();
        let mut diags = Diagnostics::default();
        let mut new_state = req.current_state.clone();
        if let Some(r) = self.inner.resource(&req.type_name) {
            let ty = r.schema().block.implied_type();
            match decode(req.current_state.as_ref(), &ty, "current state") {
                Err(d) => diags = d,
                Ok(state) => {
                    let result = match self.inner.api().await {
                        Ok(api) => r.read(api, &state).await,
                        Err(e) => Err(e),
                    };
                    match result {
                        // Gone outside Terraform: a null state makes the next plan create it again.
                        Ok(None) => new_state = encode(&Value::Null, &ty, &mut diags),
                        Ok(Some(v)) => new_state = encode(&v, &ty, &mut diags),
                        Err(e) => diags = api_error("read", &req.type_name, &name_of(&state), &e),
                    }
                }
            }
        } else {
            diags = unknown_type("resource", &req.type_name);
        }
        Ok(Response::new(pb::read_resource::Response {
            new_state,
            diagnostics: diags_to_proto(&diags),
            private: req.private,
        }))
    }

    async fn plan_resource_change(
        &self,
        req: Request<pb::plan_resource_change::Request>,
    ) -> Result<Response<pb::plan_resource_change::Response>, Status> {
        let req = req.into_inner();
        let mut diags = Diagnostics::default();
        let mut planned_state = None;
        let mut requires_replace = vec![];
        match self.inner.resource(&req.type_name) {
            None => diags = unknown_type("resource", &req.type_name),
            Some(r) => {
                let schema = r.schema();
                let ty = schema.block.implied_type();
                let decoded = (|| {
                    Ok::<_, Diagnostics>((
                        decode(req.prior_state.as_ref(), &ty, "prior state")?,
                        decode(req.proposed_new_state.as_ref(), &ty, "proposed state")?,
                        decode(req.config.as_ref(), &ty, "configuration")?,
                    ))
                })();
                match decoded {
                    Err(d) => diags = d,
                    Ok((prior, proposed, config)) => {
                        let p = plan(&schema, &prior, &proposed, &config);
                        planned_state = encode(&p.planned, &ty, &mut diags);
                        requires_replace = p.requires_replace.iter().map(super::convert::path_to_proto).collect();
                    }
                }
            }
        }
        Ok(Response::new(pb::plan_resource_change::Response {
            planned_state,
            requires_replace,
            planned_private: req.prior_private,
            diagnostics: diags_to_proto(&diags),
        }))
    }

    async fn apply_resource_change(
        &self,
        req: Request<pb::apply_resource_change::Request>,
    ) -> Result<Response<pb::apply_resource_change::Response>, Status> {
        let req = req.into_inner();
        let mut diags = Diagnostics::default();
        let mut new_state = req.prior_state.clone();
        if let Some(r) = self.inner.resource(&req.type_name) {
            let schema = r.schema();
            let ty = schema.block.implied_type();
            let decoded = decode(req.prior_state.as_ref(), &ty, "prior state")
                .and_then(|prior| Ok((prior, decode(req.planned_state.as_ref(), &ty, "planned state")?)));
            match decoded {
                Err(d) => diags = d,
                Ok((prior, planned)) => match self.inner.api().await {
                    Err(e) => diags = api_error("apply", &req.type_name, &name_of(&planned), &e),
                    Ok(api) => {
                        let (action, result) = if planned.is_null() {
                            ("delete", r.delete(api, &prior).await.map(|()| Value::Null))
                        } else if prior.is_null() {
                            ("create", r.create(api, &planned).await)
                        } else {
                            ("update", r.update(api, &prior, &planned).await)
                        };
                        match result {
                            Ok(v) => new_state = encode(&v, &ty, &mut diags),
                            Err(e) => {
                                let name = if planned.is_null() { name_of(&prior) } else { name_of(&planned) };
                                diags = api_error_at(action, r.as_ref(), &name, &e);
                            }
                        }
                    }
                },
            }
        } else {
            diags = unknown_type("resource", &req.type_name);
        }
        Ok(Response::new(pb::apply_resource_change::Response {
            new_state,
            private: req.planned_private,
            diagnostics: diags_to_proto(&diags),
        }))
    }

    async fn import_resource_state(
        &self,
        req: Request<pb::import_resource_state::Request>,
    ) -> Result<Response<pb::import_resource_state::Response>, Status> {
        let req = req.into_inner();
        let mut diags = Diagnostics::default();
        let mut imported = vec![];
        match self.inner.resource(&req.type_name) {
            None => diags = unknown_type("resource", &req.type_name),
            Some(r) => {
                let ty = r.schema().block.implied_type();
                // Import IDs are object names; the read fills in the rest.
                let stub = Value::object([("id", Value::string(&req.id)), ("name", Value::string(&req.id))]);
                let result = match self.inner.api().await {
                    Ok(api) => r.read(api, &stub).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(Some(state)) => {
                        if let Some(state) = encode(&state, &ty, &mut diags) {
                            imported.push(pb::import_resource_state::ImportedResource {
                                type_name: req.type_name.clone(),
                                state: Some(state),
                                private: vec![],
                            });
                        }
                    }
                    Ok(None) => diags.error(
                        "Cannot import non-existent remote object",
                        format!("No {} named {:?} exists on the broker. The import ID is the object's name.", req.type_name, req.id),
                    ),
                    Err(e) => diags = api_error("import", &req.type_name, &req.id, &e),
                }
            }
        }
        Ok(Response::new(pb::import_resource_state::Response {
            imported_resources: imported,
            diagnostics: diags_to_proto(&diags),
        }))
    }

    async fn read_data_source(
        &self,
        req: Request<pb::read_data_source::Request>,
    ) -> Result<Response<pb::read_data_source::Response>, Status> {
        let req = req.into_inner();
        let mut diags = Diagnostics::default();
        let mut state = None;
        match self.inner.data_source(&req.type_name) {
            None => diags = unknown_type("data source", &req.type_name),
            Some(ds) => {
                let ty = ds.schema().block.implied_type();
                match decode(req.config.as_ref(), &ty, "configuration") {
                    Err(d) => diags = d,
                    Ok(config) => {
                        let result = match self.inner.api().await {
                            Ok(api) => ds.read(api, &config).await,
                            Err(e) => Err(e),
                        };
                        match result {
                            Ok(v) => state = encode(&v, &ty, &mut diags),
                            Err(e) => diags = api_error("read", &req.type_name, "", &e),
                        }
                    }
                }
            }
        }
        Ok(Response::new(pb::read_data_source::Response { state, diagnostics: diags_to_proto(&diags) }))
    }

    async fn stop_provider(
        &self,
        _: Request<pb::stop_provider::Request>,
    ) -> Result<Response<pb::stop_provider::Response>, Status> {
        // Broker calls are short and bounded by client timeouts; nothing to cancel.
        Ok(Response::new(pb::stop_provider::Response { error: String::new() }))
    }
}
