//! JWT-SVID validation for `ValidateJWTSVID`: pure (token, JWKS, audience, now).
//!
//! Rules (each a mistake others shipped): `alg` must be RS*/ES* and must match the
//! key's own `alg` and type (no alg confusion, no `none`, no HMAC); `kid` is only a
//! lookup hint, `jwk`/`jku`/`x5u` headers are ignored; unknown `crit` is refused;
//! `exp` is required; `aud` (string or array) must contain the audience; `sub`
//! must be a SPIFFE ID.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Why a token is not a valid JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url JSON parts.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's algorithm is not allowed.
    #[error("algorithm {0:?} is not allowed for JWT-SVIDs")]
    Algorithm(String),
    /// The header has `crit`.
    #[error("token has critical header parameters this validator does not understand")]
    Critical,
    /// No key in the bundle matches.
    #[error("no key with kid {0:?} in the trust bundle")]
    UnknownKey(String),
    /// The key's algorithm or type disagrees with the header.
    #[error("key {0:?} does not match the token's algorithm")]
    KeyMismatch(String),
    /// The signature does not verify.
    #[error("signature does not verify")]
    Signature,
    /// `exp` is missing or past.
    #[error("token expired or has no exp")]
    Expired,
    /// `aud` does not contain the audience.
    #[error("audience {0:?} is not in the token's aud")]
    Audience(String),
    /// `sub` is not a SPIFFE ID.
    #[error("sub is not a SPIFFE ID")]
    Subject,
}

/// A validated token.
#[derive(Debug, Clone)]
pub struct Validated {
    /// `sub`.
    pub spiffe_id: String,
    /// All claims.
    pub claims: Map<String, Value>,
}

fn part(s: &str) -> Result<Value, JwtError> {
    let bytes = B64URL.decode(s).map_err(|_| JwtError::Malformed("part is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("part is not JSON"))
}

fn field<'a>(v: &'a Value, k: &str) -> Result<Vec<u8>, JwtError> {
    let s = v.get(k).and_then(Value::as_str).ok_or(JwtError::Malformed("JWK member missing"))?;
    let _: &'a Value = v;
    B64URL.decode(s).map_err(|_| JwtError::Malformed("JWK member is not base64url"))
}

fn verify(alg: &str, key: &Value, msg: &[u8], sig: &[u8]) -> Result<(), JwtError> {
    use aws_lc_rs::signature as s;
    let kty = key.get("kty").and_then(Value::as_str).unwrap_or_default();
    let kid = key.get("kid").and_then(Value::as_str).unwrap_or_default().to_string();
    if key.get("alg").and_then(Value::as_str).is_some_and(|a| a != alg) {
        return Err(JwtError::KeyMismatch(kid));
    }
    let ok = match (alg, kty) {
        ("RS256" | "RS384" | "RS512", "RSA") => {
            let params: &s::RsaParameters = match alg {
                "RS256" => &s::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &s::RSA_PKCS1_2048_8192_SHA384,
                _ => &s::RSA_PKCS1_2048_8192_SHA512,
            };
            let (n, e) = (field(key, "n")?, field(key, "e")?);
            s::RsaPublicKeyComponents { n: &n, e: &e }.verify(params, msg, sig).is_ok()
        }
        ("ES256" | "ES384", "EC") => {
            let (params, crv, len): (&s::EcdsaVerificationAlgorithm, _, _) = match alg {
                "ES256" => (&s::ECDSA_P256_SHA256_FIXED, "P-256", 32),
                _ => (&s::ECDSA_P384_SHA384_FIXED, "P-384", 48),
            };
            if key.get("crv").and_then(Value::as_str) != Some(crv) {
                return Err(JwtError::KeyMismatch(kid));
            }
            let (x, y) = (field(key, "x")?, field(key, "y")?);
            if x.len() != len || y.len() != len {
                return Err(JwtError::KeyMismatch(kid));
            }
            let point = [&[4u8][..], &x, &y].concat();
            s::UnparsedPublicKey::new(params, point).verify(msg, sig).is_ok()
        }
        _ => return Err(JwtError::KeyMismatch(kid)),
    };
    if ok {
        Ok(())
    } else {
        Err(JwtError::Signature)
    }
}

/// Validates `token` against the keys of `jwks` for `audience` at `now`.
pub fn validate(token: &str, jwks: &Value, audience: &str, now: i64) -> Result<Validated, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sg), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three dot-separated parts"));
    };
    let header = part(h)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    if !matches!(alg, "RS256" | "RS384" | "RS512" | "ES256" | "ES384") {
        return Err(JwtError::Algorithm(alg.to_string()));
    }
    if header.get("crit").is_some() {
        return Err(JwtError::Critical);
    }
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or_default();
    let sig = B64URL.decode(sg).map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    if sig.is_empty() {
        return Err(JwtError::Signature);
    }
    let keys = jwks.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let key = keys
        .iter()
        .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
        .ok_or_else(|| JwtError::UnknownKey(kid.to_string()))?;
    verify(alg, key, format!("{h}.{p}").as_bytes(), &sig)?;
    let claims = match part(p)? {
        Value::Object(m) => m,
        _ => return Err(JwtError::Malformed("claims are not an object")),
    };
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp > now => {}
        _ => return Err(JwtError::Expired),
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(JwtError::Audience(audience.to_string()));
    }
    let sub = claims.get("sub").and_then(Value::as_str).ok_or(JwtError::Subject)?;
    let id: crate::domain::SpiffeId = sub.parse().map_err(|_| JwtError::Subject)?;
    Ok(Validated { spiffe_id: id.to_string(), claims })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::keys::{JwsSigner, KeyAlg};
    use serde_json::json;

    fn signer(alg: KeyAlg) -> (JwsSigner, Value) {
        let k = crate::ca::keys::PrivateKey::generate(alg).unwrap();
        let s = k.signer().unwrap();
        let mut jwk = s.public_jwk();
        jwk["kid"] = json!("k1");
        jwk["alg"] = json!(alg.jws_alg());
        (s, json!({"keys": [jwk]}))
    }

    fn token(s: &JwsSigner, header: Value, claims: Value) -> String {
        let h = B64URL.encode(header.to_string());
        let p = B64URL.encode(claims.to_string());
        let sig = s.sign(format!("{h}.{p}").as_bytes()).unwrap();
        format!("{h}.{p}.{}", B64URL.encode(sig))
    }

    fn claims() -> Value {
        json!({"sub": "spiffe://example.org/web", "aud": ["a", "b"], "exp": 2000, "iat": 1000})
    }

    #[test]
    fn valid_es256_and_rs256_tokens_are_accepted() {
        for (alg, name) in [(KeyAlg::EcP256, "ES256"), (KeyAlg::Rsa2048, "RS256")] {
            let (s, jwks) = signer(alg);
            let t = token(&s, json!({"alg": name, "kid": "k1", "typ": "JWT"}), claims());
            let v = validate(&t, &jwks, "b", 1500).unwrap();
            assert_eq!(v.spiffe_id, "spiffe://example.org/web");
        }
    }

    #[test]
    fn expired_token_and_wrong_audience_are_rejected() {
        let (s, jwks) = signer(KeyAlg::EcP256);
        let t = token(&s, json!({"alg": "ES256", "kid": "k1"}), claims());
        assert_eq!(validate(&t, &jwks, "a", 2000).unwrap_err(), JwtError::Expired);
        assert_eq!(validate(&t, &jwks, "c", 1500).unwrap_err(), JwtError::Audience("c".into()));
        let no_exp = token(&s, json!({"alg": "ES256", "kid": "k1"}), json!({"sub": "spiffe://example.org/w", "aud": "a"}));
        assert_eq!(validate(&no_exp, &jwks, "a", 1500).unwrap_err(), JwtError::Expired);
    }

    #[test]
    fn alg_none_hmac_and_alg_confusion_are_rejected() {
        let (s, jwks) = signer(KeyAlg::EcP256);
        let none = format!("{}.{}.", B64URL.encode(r#"{"alg":"none","kid":"k1"}"#), B64URL.encode(claims().to_string()));
        assert!(matches!(validate(&none, &jwks, "a", 1500), Err(JwtError::Algorithm(_))));
        let hs = token(&s, json!({"alg": "HS256", "kid": "k1"}), claims());
        assert!(matches!(validate(&hs, &jwks, "a", 1500), Err(JwtError::Algorithm(_))));
        let confused = token(&s, json!({"alg": "RS256", "kid": "k1"}), claims());
        assert!(matches!(validate(&confused, &jwks, "a", 1500), Err(JwtError::KeyMismatch(_))));
    }

    #[test]
    fn tampered_claims_fail_the_signature() {
        let (s, jwks) = signer(KeyAlg::EcP256);
        let t = token(&s, json!({"alg": "ES256", "kid": "k1"}), claims());
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = B64URL.encode(json!({"sub": "spiffe://example.org/admin", "aud": "a", "exp": 2000}).to_string());
        parts[1] = &evil;
        assert_eq!(validate(&parts.join("."), &jwks, "a", 1500).unwrap_err(), JwtError::Signature);
    }

    #[test]
    fn unknown_kid_and_crit_are_rejected() {
        let (s, jwks) = signer(KeyAlg::EcP256);
        let t = token(&s, json!({"alg": "ES256", "kid": "other"}), claims());
        assert_eq!(validate(&t, &jwks, "a", 1500).unwrap_err(), JwtError::UnknownKey("other".into()));
        let c = token(&s, json!({"alg": "ES256", "kid": "k1", "crit": ["x"]}), claims());
        assert_eq!(validate(&c, &jwks, "a", 1500).unwrap_err(), JwtError::Critical);
    }
}
