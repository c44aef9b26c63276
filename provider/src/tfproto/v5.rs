//! Protocol 5, served by re-encoding to protocol 6: every message the provider
//! uses has the same fields and numbers in both, so a protobuf round trip is an
//! exact conversion and the v6 handlers stay the only implementation.

use super::server::ProviderService;
use prost::Message;
use sigil_schemas::tfplugin5 as v5;
use sigil_schemas::tfplugin6 as v6;
use sigil_schemas::tfplugin6::provider_server::Provider as V6;
use tonic::{Request, Response, Status};

/// The tfplugin5 service over the v6 one.
#[derive(Clone)]
pub struct ProviderServiceV5 {
    v6: ProviderService,
}

impl ProviderServiceV5 {
    /// Serves `v6` as protocol 5.
    pub fn new(v6: ProviderService) -> Self {
        Self { v6 }
    }

    /// The tonic server for it, with go-plugin's message size limits.
    pub fn into_server(self) -> v5::provider_server::ProviderServer<Self> {
        let max = crate::plugin::MAX_MESSAGE_BYTES;
        v5::provider_server::ProviderServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

/// Converts between wire-identical messages of the two protocols.
fn recode<A: Message, B: Message + Default>(a: &A) -> Result<B, Status> {
    B::decode(a.encode_to_vec().as_slice()).map_err(|e| Status::internal(format!("protocol 5 conversion: {e}")))
}

/// One RPC: recode the request, call the v6 handler, recode the response.
/// Spelled out in `async_trait`'s expanded form, because attribute macros do
/// not see inside macro invocations.
macro_rules! delegate {
    ($name:ident, $v6name:ident, $v5req:ty, $v5resp:ty, $v6req:ty) => {
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            req: Request<$v5req>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$v5resp>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let inner: $v6req = recode(req.get_ref())?;
                let out = V6::$v6name(&self.v6, Request::new(inner)).await?;
                Ok(Response::new(recode(out.get_ref())?))
            })
        }
    };
}

#[tonic::async_trait]
impl v5::provider_server::Provider for ProviderServiceV5 {
    delegate!(get_schema, get_provider_schema, v5::get_provider_schema::Request, v5::get_provider_schema::Response, v6::get_provider_schema::Request);
    delegate!(validate_resource_type_config, validate_resource_config, v5::validate_resource_type_config::Request, v5::validate_resource_type_config::Response, v6::validate_resource_config::Request);
    delegate!(validate_data_source_config, validate_data_resource_config, v5::validate_data_source_config::Request, v5::validate_data_source_config::Response, v6::validate_data_resource_config::Request);
    delegate!(upgrade_resource_state, upgrade_resource_state, v5::upgrade_resource_state::Request, v5::upgrade_resource_state::Response, v6::upgrade_resource_state::Request);
    delegate!(configure, configure_provider, v5::configure::Request, v5::configure::Response, v6::configure_provider::Request);
    delegate!(read_resource, read_resource, v5::read_resource::Request, v5::read_resource::Response, v6::read_resource::Request);
    delegate!(plan_resource_change, plan_resource_change, v5::plan_resource_change::Request, v5::plan_resource_change::Response, v6::plan_resource_change::Request);
    delegate!(apply_resource_change, apply_resource_change, v5::apply_resource_change::Request, v5::apply_resource_change::Response, v6::apply_resource_change::Request);
    delegate!(import_resource_state, import_resource_state, v5::import_resource_state::Request, v5::import_resource_state::Response, v6::import_resource_state::Request);
    delegate!(read_data_source, read_data_source, v5::read_data_source::Request, v5::read_data_source::Response, v6::read_data_source::Request);
    delegate!(stop, stop_provider, v5::stop::Request, v5::stop::Response, v6::stop_provider::Request);

    async fn prepare_provider_config(
        &self,
        req: Request<v5::prepare_provider_config::Request>,
    ) -> Result<Response<v5::prepare_provider_config::Response>, Status> {
        let inner: v6::validate_provider_config::Request = recode(req.get_ref())?;
        let out = V6::validate_provider_config(&self.v6, Request::new(inner)).await?;
        let mut resp: v5::prepare_provider_config::Response = recode(out.get_ref())?;
        // Nothing to prepare: defaults come from the environment at Configure.
        resp.prepared_config = req.into_inner().config;
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v5::provider_server::Provider as _;

    fn service() -> ProviderServiceV5 {
        ProviderServiceV5::new(ProviderService::new(crate::sigil_provider()))
    }

    #[tokio::test]
    async fn schema_is_served_over_protocol_5() {
        let resp = service().get_schema(Request::new(Default::default())).await.unwrap().into_inner();
        let token = &resp.resource_schemas["sigil_join_token"];
        let secret = token.block.as_ref().unwrap().attributes.iter().find(|a| a.name == "secret").unwrap();
        assert!(secret.sensitive && secret.computed);
        assert_eq!(resp.data_source_schemas.len(), 4);
    }

    #[tokio::test]
    async fn prepare_echoes_config_and_reports_paths() {
        let ty = crate::config::provider_schema().block.implied_type();
        let mut config = crate::cty::Value::object(
            crate::config::provider_schema().block.attributes.iter().map(|a| (a.name, crate::cty::Value::Null)),
        );
        config.set_attr("addr", crate::cty::Value::string("http://x:1"));
        let dv = v5::DynamicValue { msgpack: crate::cty::encode_msgpack(&config, &ty).unwrap(), json: vec![] };
        let req = v5::prepare_provider_config::Request { config: Some(dv.clone()) };
        let resp = service().prepare_provider_config(Request::new(req)).await.unwrap().into_inner();
        assert_eq!(resp.prepared_config, Some(dv));
        let step = &resp.diagnostics[0].attribute.as_ref().unwrap().steps[0];
        assert_eq!(step.selector, Some(v5::attribute_path::step::Selector::AttributeName("addr".into())));
    }
}
