//! `ValidateJWTSVID`: the one verifier ([`sigil_core::jwt`]: header rules, key by
//! `kid` from the trust bundle, signature, `exp`/`nbf`/`iat` with leeway), then
//! what makes a JWT a JWT-SVID for this caller: `aud` contains the audience it
//! asked about, and `sub` is a SPIFFE ID.

use sigil_core::jwt::{self, JwtError, KeySet};
use serde_json::{Map, Value};

/// Why a token is not a valid JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// The verifier refused the token (or the audience is not in `aud`).
    #[error(transparent)]
    Token(#[from] JwtError),
    /// `sub` is missing or not a SPIFFE ID.
    #[error("sub is not a SPIFFE ID")]
    Subject,
}

/// A validated JWT-SVID.
#[derive(Debug, Clone)]
pub struct Validated {
    /// `sub`, normalised.
    pub spiffe_id: String,
    /// All claims.
    pub claims: Map<String, Value>,
}

/// Validates `token` against the trust bundle's `keys` for `audience` at `now`.
pub fn validate(token: &str, keys: &KeySet, audience: &str, now: i64) -> Result<Validated, JwtSvidError> {
    let claims = jwt::verify(token, keys, now)?;
    jwt::check_audience(&claims, audience)?;
    let sub = claims.get("sub").and_then(Value::as_str).ok_or(JwtSvidError::Subject)?;
    let id: sigil_core::domain::SpiffeId = sub.parse().map_err(|_| JwtSvidError::Subject)?;
    Ok(Validated { spiffe_id: id.to_string(), claims })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use base64::Engine as _;
    use serde_json::json;

    fn key() -> (Ed25519KeyPair, KeySet) {
        let k = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref()).unwrap();
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig", "x": B64URL.encode(k.public_key().as_ref())}]});
        (k, KeySet::from_value(&jwks).unwrap())
    }

    fn token(k: &Ed25519KeyPair, claims: Value) -> String {
        let input = format!("{}.{}", B64URL.encode(json!({"alg": "EdDSA", "kid": "k1"}).to_string()), B64URL.encode(claims.to_string()));
        format!("{input}.{}", B64URL.encode(k.sign(input.as_bytes()).as_ref()))
    }

    #[test]
    fn the_audience_must_be_in_aud_and_sub_a_spiffe_id() {
        let (k, keys) = key();
        let t = token(&k, json!({"sub": "spiffe://example.org/web", "aud": ["a", "b"], "exp": 2000}));
        assert_eq!(validate(&t, &keys, "b", 1500).unwrap().spiffe_id, "spiffe://example.org/web");
        assert!(matches!(validate(&t, &keys, "c", 1500), Err(JwtSvidError::Token(JwtError::WrongAudience { .. }))));
        let not_spiffe = token(&k, json!({"sub": "web", "aud": "a", "exp": 2000}));
        assert_eq!(validate(&not_spiffe, &keys, "a", 1500).unwrap_err(), JwtSvidError::Subject);
    }
}
