//! `sigil_trust_bundle` data source: the trust domain's CA certificates, e.g.
//! for an `aws_rolesanywhere_trust_anchor`.

use super::status;
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::provider::DataSource;
use crate::schema::{Attribute, Block, Schema};
use sigil_schemas::sigil::v1 as api;

/// The `sigil_trust_bundle` data source type.
pub struct TrustBundle;

#[async_trait::async_trait]
impl DataSource for TrustBundle {
    fn type_name(&self) -> &'static str {
        "sigil_trust_bundle"
    }

    fn schema(&self) -> Schema {
        Schema {
            version: 0,
            block: Block {
                description: "The trust domain's X.509 authorities and SPIFFE bundle, e.g. the CA of an `aws_rolesanywhere_trust_anchor`.",
                attributes: vec![
                    Attribute::computed("id", Type::String, "The trust domain."),
                    Attribute::computed("trust_domain", Type::String, "SPIFFE trust domain name."),
                    Attribute::computed("x509_authorities_pem", Type::String, "CA certificates (PEM) that sign X.509-SVIDs."),
                    Attribute::computed("spiffe_bundle_json", Type::String, "SPIFFE bundle document (JWKS with x509-svid and jwt-svid keys)."),
                    Attribute::computed("jwks_json", Type::String, "JWT signing keys as an OIDC JWKS."),
                    Attribute::computed("sequence", Type::Number, "Bundle sequence number; grows on every CA change."),
                ],
                blocks: vec![],
            },
        }
    }

    async fn read(&self, api: &Api, _config: &Value) -> Result<Value, ApiError> {
        let b = api.client().get_trust_bundle(api::GetTrustBundleRequest {}).await.map_err(status("trust bundle"))?;
        let b = b.get_ref();
        Ok(Value::object([
            ("id", Value::string(&b.trust_domain)),
            ("trust_domain", Value::string(&b.trust_domain)),
            ("x509_authorities_pem", Value::string(&b.x509_authorities_pem)),
            ("spiffe_bundle_json", Value::string(&b.spiffe_bundle_json)),
            ("jwks_json", Value::string(&b.jwks_json)),
            ("sequence", Value::int(b.sequence)),
        ]))
    }
}
