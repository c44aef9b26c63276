//! Reading a JWT the way a cloud's token service does, without trusting it:
//! split, decode header and claims, and check the signature against a JWKS key
//! chosen by `kid` with the algorithm pinned by the key's type.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::Value;

/// Why a JWT could not be read or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtInspectError {
    /// Not three base64url parts with JSON header and claims.
    #[error("not a compact JWS: {0}")]
    Malformed(&'static str),
    /// No published key matches the header.
    #[error("no key in the JWKS matches kid {0:?}")]
    NoKey(String),
    /// The algorithm is not one we can check (or does not fit the key).
    #[error("algorithm {0:?} does not fit the key or is not supported")]
    Alg(String),
    /// The signature does not verify.
    #[error("the signature does not verify with the published key")]
    BadSignature,
}

/// A decoded (not yet trusted) JWT.
#[derive(Debug, Clone)]
pub struct DecodedJwt {
    /// Header JSON.
    pub header: Value,
    /// Claims JSON.
    pub claims: Value,
    /// `header.payload`, the signed bytes.
    pub signing_input: String,
    /// Signature bytes.
    pub signature: Vec<u8>,
    /// Total length in characters.
    pub length: usize,
}

impl DecodedJwt {
    /// Decodes a compact JWS.
    pub fn parse(token: &str) -> Result<Self, JwtInspectError> {
        let token = token.trim();
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Err(JwtInspectError::Malformed("expected three dot-separated parts"));
        }
        let json = |s: &str| -> Result<Value, JwtInspectError> {
            let bytes = B64URL.decode(s).map_err(|_| JwtInspectError::Malformed("part is not base64url"))?;
            serde_json::from_slice(&bytes).map_err(|_| JwtInspectError::Malformed("part is not JSON"))
        };
        let header = json(parts[0])?;
        let claims = json(parts[1])?;
        let signature = B64URL.decode(parts[2]).map_err(|_| JwtInspectError::Malformed("signature is not base64url"))?;
        Ok(Self { header, claims, signing_input: format!("{}.{}", parts[0], parts[1]), signature, length: token.chars().count() })
    }

    /// A string header field.
    pub fn header_str(&self, k: &str) -> Option<&str> {
        self.header.get(k).and_then(Value::as_str)
    }

    /// A string claim.
    pub fn claim_str(&self, k: &str) -> Option<&str> {
        self.claims.get(k).and_then(Value::as_str)
    }

    /// A numeric claim.
    pub fn claim_i64(&self, k: &str) -> Option<i64> {
        self.claims.get(k).and_then(Value::as_i64)
    }

    /// `aud` as a list (string or array).
    pub fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => vec![],
        }
    }

    /// Verifies the signature with the JWKS key named by `kid` (or, without a kid,
    /// any key that verifies). Returns the key used.
    pub fn verify<'a>(&self, jwks: &'a Value) -> Result<&'a Value, JwtInspectError> {
        let keys: Vec<&Value> = jwks.get("keys").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
        let alg = self.header_str("alg").unwrap_or_default().to_string();
        let candidates: Vec<&Value> = match self.header_str("kid") {
            Some(kid) => keys.into_iter().filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid)).collect(),
            None => keys,
        };
        if candidates.is_empty() {
            return Err(JwtInspectError::NoKey(self.header_str("kid").unwrap_or_default().to_string()));
        }
        let mut last = JwtInspectError::NoKey(String::new());
        for k in candidates {
            match verify_with(k, &alg, self.signing_input.as_bytes(), &self.signature) {
                Ok(()) => return Ok(k),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

fn b64_field(k: &Value, f: &str) -> Result<Vec<u8>, JwtInspectError> {
    let s = k.get(f).and_then(Value::as_str).ok_or(JwtInspectError::Malformed("JWK lacks a key parameter"))?;
    B64URL.decode(s).map_err(|_| JwtInspectError::Malformed("JWK parameter is not base64url"))
}

fn verify_with(k: &Value, alg: &str, msg: &[u8], sig: &[u8]) -> Result<(), JwtInspectError> {
    if let Some(key_alg) = k.get("alg").and_then(Value::as_str) {
        if key_alg != alg {
            return Err(JwtInspectError::Alg(alg.to_string()));
        }
    }
    let kty = k.get("kty").and_then(Value::as_str).unwrap_or_default();
    let bad = |_| JwtInspectError::BadSignature;
    match (kty, alg) {
        ("RSA", "RS256" | "RS384" | "RS512") => {
            let params = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            let c = RsaPublicKeyComponents { n: b64_field(k, "n")?, e: b64_field(k, "e")? };
            c.verify(params, msg, sig).map_err(bad)
        }
        ("EC", "ES256" | "ES384") => {
            let (crv, params) = if alg == "ES256" {
                ("P-256", &signature::ECDSA_P256_SHA256_FIXED)
            } else {
                ("P-384", &signature::ECDSA_P384_SHA384_FIXED)
            };
            if k.get("crv").and_then(Value::as_str) != Some(crv) {
                return Err(JwtInspectError::Alg(alg.to_string()));
            }
            let mut point = vec![4u8];
            point.extend(b64_field(k, "x")?);
            point.extend(b64_field(k, "y")?);
            UnparsedPublicKey::new(params, point).verify(msg, sig).map_err(bad)
        }
        _ => Err(JwtInspectError::Alg(alg.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_jws() {
        assert!(DecodedJwt::parse("a.b").is_err());
        assert!(DecodedJwt::parse("!!.e30.AA").is_err());
    }

    #[test]
    fn audiences_accept_string_or_array() {
        let h = B64URL.encode(br#"{"alg":"RS256"}"#);
        let c = B64URL.encode(br#"{"aud":["a","b"]}"#);
        let j = DecodedJwt::parse(&format!("{h}.{c}.AA")).unwrap();
        assert_eq!(j.audiences(), vec!["a", "b"]);
    }

    #[test]
    fn unknown_kid_finds_no_key() {
        let h = B64URL.encode(br#"{"alg":"RS256","kid":"k2"}"#);
        let c = B64URL.encode(br#"{}"#);
        let j = DecodedJwt::parse(&format!("{h}.{c}.AA")).unwrap();
        let jwks = serde_json::json!({"keys":[{"kid":"k1","kty":"RSA","n":"AQAB","e":"AQAB"}]});
        assert_eq!(j.verify(&jwks), Err(JwtInspectError::NoKey("k2".into())));
    }
}
