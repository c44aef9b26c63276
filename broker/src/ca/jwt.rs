//! JWT-SVIDs: header and claims decided here, signed with the active JWT key.

use super::backend::KeySigner;
use super::keys::{KeyAlg, KeyError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The claims of one JWT-SVID.
#[derive(Debug, Clone)]
pub struct JwtClaims<'a> {
    /// `iss`: the broker's public URL.
    pub issuer: &'a str,
    /// `sub`: the SPIFFE ID.
    pub subject: &'a str,
    /// `aud`: one or more audiences (required).
    pub audiences: &'a [String],
    /// `iat`.
    pub issued_at: i64,
    /// `exp`.
    pub expires_at: i64,
    /// `jti`: unique token id.
    pub jti: &'a str,
    /// Extra claims (never registered claim names).
    pub extra: &'a BTreeMap<String, String>,
}

/// Encodes and signs a JWT-SVID.
pub fn sign(signer: &dyn KeySigner, alg: KeyAlg, kid: &str, claims: &JwtClaims<'_>) -> Result<String, KeyError> {
    let header = json!({"alg": alg.jws_alg(), "kid": kid, "typ": "JWT"});
    let mut body = Map::new();
    for (k, v) in claims.extra {
        body.insert(k.clone(), Value::String(v.clone()));
    }
    body.insert("iss".into(), json!(claims.issuer));
    body.insert("sub".into(), json!(claims.subject));
    body.insert(
        "aud".into(),
        if claims.audiences.len() == 1 { json!(claims.audiences[0]) } else { json!(claims.audiences) },
    );
    body.insert("iat".into(), json!(claims.issued_at));
    body.insert("exp".into(), json!(claims.expires_at));
    body.insert("jti".into(), json!(claims.jti));
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(serde_json::to_vec(&header).map_err(|e| KeyError::Crypto(e.to_string()))?),
        B64URL.encode(serde_json::to_vec(&Value::Object(body)).map_err(|e| KeyError::Crypto(e.to_string()))?)
    );
    let sig = signer.sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
}
