//! `sigil_oidc_issuer` data source: what a cloud needs to trust Sigil JWT-SVIDs
//! (issuer URL, JWKS, discovery document), for `aws_iam_openid_connect_provider`,
//! `azurerm_federated_identity_credential` or
//! `google_iam_workload_identity_pool_provider`.

use super::status;
use crate::api::{Api, ApiError};
use crate::cty::{Type, Value};
use crate::provider::DataSource;
use crate::schema::{Attribute, Block, Schema};
use sigil_schemas::sigil::v1 as api;

/// The `sigil_oidc_issuer` data source type.
pub struct OidcIssuer;

/// Where the JWKS lives under an issuer URL.
pub fn jwks_uri(issuer: &str) -> String {
    format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'))
}

/// The OpenID Connect discovery document for JWT-SVIDs issued by `issuer`,
/// advertising the algorithms of the keys in `jwks_json`.
pub fn discovery_document(issuer: &str, jwks_json: &str) -> String {
    let mut algs: Vec<String> = serde_json::from_str::<serde_json::Value>(jwks_json)
        .ok()
        .and_then(|j| j.get("keys").and_then(|k| k.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|k| k.get("alg").and_then(|a| a.as_str()).map(str::to_string))
        .collect();
    algs.sort();
    algs.dedup();
    if algs.is_empty() {
        algs.push("RS256".into());
    }
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri(issuer),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti"],
    })
    .to_string()
}

#[async_trait::async_trait]
impl DataSource for OidcIssuer {
    fn type_name(&self) -> &'static str {
        "sigil_oidc_issuer"
    }

    fn schema(&self) -> Schema {
        Schema {
            version: 0,
            block: Block {
                description: "The broker's OIDC issuer for JWT-SVIDs: issuer URL, JWKS and discovery document.",
                attributes: vec![
                    Attribute::computed("id", Type::String, "The issuer URL."),
                    Attribute::computed("issuer_url", Type::String, "Issuer (`iss`) of JWT-SVIDs."),
                    Attribute::computed("jwks_uri", Type::String, "URL of the JWKS under the issuer."),
                    Attribute::computed("jwks_json", Type::String, "Current signing keys as a JWKS document."),
                    Attribute::computed("discovery_document", Type::String, "OpenID Connect discovery document (`/.well-known/openid-configuration`)."),
                ],
                blocks: vec![],
            },
        }
    }

    async fn read(&self, api: &Api, _config: &Value) -> Result<Value, ApiError> {
        let b = api.client().get_trust_bundle(api::GetTrustBundleRequest {}).await.map_err(status("trust bundle"))?;
        let b = b.get_ref();
        Ok(Value::object([
            ("id", Value::string(&b.issuer)),
            ("issuer_url", Value::string(&b.issuer)),
            ("jwks_uri", Value::string(jwks_uri(&b.issuer))),
            ("jwks_json", Value::string(&b.jwks_json)),
            ("discovery_document", Value::string(discovery_document(&b.issuer, &b.jwks_json))),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_document_points_at_the_jwks() {
        let jwks = r#"{"keys":[{"kty":"EC","alg":"ES256"},{"kty":"RSA","alg":"RS256"}]}"#;
        let doc: serde_json::Value = serde_json::from_str(&discovery_document("https://sigil.example/", jwks)).unwrap();
        assert_eq!(doc["id_token_signing_alg_values_supported"], serde_json::json!(["ES256", "RS256"]));
        assert_eq!(doc["jwks_uri"], "https://sigil.example/.well-known/jwks.json");
        assert_eq!(doc["issuer"], "https://sigil.example/");
    }
}
