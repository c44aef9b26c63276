//! Key sets (JWKS documents) and choosing the one key a token may be checked
//! with. Only signature keys of known types are kept; a key's declared `alg`
//! must fit its type; `kid` picks the key, and a token without `kid` is only
//! checked when the set holds exactly one usable key (never "try each key").

use super::signature::KeyMaterial;
use super::{Alg, JwtError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// Most keys read from one JWKS document.
pub const MAX_KEYS: usize = 64;

/// One verification key.
#[derive(Clone, PartialEq, Eq)]
pub struct Jwk {
    kid: String,
    alg: Option<Alg>,
    key: KeyMaterial,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk").field("kid", &self.kid).field("alg", &self.alg).field("kty", &self.key.describe()).finish()
    }
}

impl Jwk {
    /// Whether this key may verify a token with `alg`.
    fn pins(&self, alg: Alg) -> bool {
        self.key.allows(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// The key material.
    pub fn material(&self) -> &KeyMaterial {
        &self.key
    }
}

/// The verification keys of one issuer (or trust domain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

fn b64(field: &str, v: Option<&Value>) -> Result<Vec<u8>, String> {
    let s = v.and_then(Value::as_str).ok_or_else(|| format!("{field} missing"))?;
    URL_SAFE_NO_PAD.decode(s).map_err(|_| format!("{field} is not base64url"))
}

fn strip_zeros(mut b: Vec<u8>) -> Vec<u8> {
    let lead = b.iter().take_while(|&&x| x == 0).count();
    b.drain(..lead.min(b.len().saturating_sub(1)));
    b
}

fn parse_jwk(k: &Map<String, Value>) -> Result<Option<Jwk>, String> {
    // Encryption keys and symmetric keys are skipped, never used. `use` is
    // `sig` in an OIDC JWKS and `jwt-svid` in a SPIFFE bundle.
    if k.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig" && u != "jwt-svid") {
        return Ok(None);
    }
    let kid = k.get("kid").and_then(Value::as_str).unwrap_or_default().to_string();
    let alg = match k.get("alg").and_then(Value::as_str) {
        None => None,
        Some(a) => match Alg::parse(a) {
            Ok(a) => Some(a),
            Err(_) => return Ok(None),
        },
    };
    let point = |len: usize| -> Result<Vec<u8>, String> {
        let (x, y) = (b64("x", k.get("x"))?, b64("y", k.get("y"))?);
        if x.len() != len || y.len() != len {
            return Err(format!("EC coordinates of key {kid:?} have the wrong length"));
        }
        Ok([vec![4u8], x, y].concat())
    };
    let key = match (k.get("kty").and_then(Value::as_str), k.get("crv").and_then(Value::as_str)) {
        (Some("RSA"), _) => KeyMaterial::Rsa { n: strip_zeros(b64("n", k.get("n"))?), e: strip_zeros(b64("e", k.get("e"))?) },
        (Some("EC"), Some("P-256")) => KeyMaterial::P256(point(32)?),
        (Some("EC"), Some("P-384")) => KeyMaterial::P384(point(48)?),
        (Some("OKP"), Some("Ed25519")) => {
            let x = b64("x", k.get("x"))?;
            if x.len() != 32 {
                return Err(format!("Ed25519 key {kid:?} has the wrong length"));
            }
            KeyMaterial::Ed25519(x)
        }
        _ => return Ok(None),
    };
    let jwk = Jwk { kid, alg, key };
    if let Some(a) = jwk.alg {
        if !jwk.key.allows(a) {
            return Err(format!("key {:?} is {} but declares alg {}", jwk.kid, jwk.key.describe(), a.name()));
        }
    }
    Ok(Some(jwk))
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys of unknown types or
    /// for encryption are ignored; a set with no usable key is an error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JwtError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| JwtError::BadJwks(format!("not JSON: {e}")))?;
        Self::from_value(&doc)
    }

    /// Like [`KeySet::from_json`], from a parsed document.
    pub fn from_value(doc: &Value) -> Result<Self, JwtError> {
        let list = doc.get("keys").and_then(Value::as_array).ok_or_else(|| JwtError::BadJwks("no \"keys\" array".into()))?;
        let mut keys = Vec::new();
        for k in list.iter().take(MAX_KEYS) {
            let obj = k.as_object().ok_or_else(|| JwtError::BadJwks("a key is not an object".into()))?;
            if let Some(j) = parse_jwk(obj).map_err(JwtError::BadJwks)? {
                keys.push(j);
            }
        }
        if keys.is_empty() {
            return Err(JwtError::BadJwks("no usable signature key (RSA, EC P-256/P-384, Ed25519)".into()));
        }
        Ok(Self { keys })
    }

    /// Whether a key has this id.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The one key a token with `kid` and `alg` may be checked with: the key
    /// named by `kid`; without `kid`, the only key of a one-key set.
    pub fn select(&self, kid: Option<&str>, alg: Alg) -> Result<&Jwk, JwtError> {
        let key = match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid == kid).ok_or_else(|| JwtError::UnknownKid(kid.into()))?,
            None if self.keys.len() == 1 => &self.keys[0],
            None => return Err(JwtError::AmbiguousKey(self.keys.len())),
        };
        if !key.pins(alg) {
            let pinned = key.alg.map(|a| format!(", alg {}", a.name())).unwrap_or_default();
            return Err(JwtError::AlgorithmMismatch { alg: alg.name().into(), kid: key.kid.clone(), key: format!("{}{pinned}", key.key.describe()) });
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ed(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": URL_SAFE_NO_PAD.encode([7u8; 32])})
    }

    #[test]
    fn jwks_skips_symmetric_and_encryption_keys_and_rejects_inconsistent_alg() {
        let only_oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]});
        assert!(KeySet::from_value(&only_oct).is_err());
        let lying = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "RS256", "x": URL_SAFE_NO_PAD.encode([1u8; 32])}]});
        assert!(KeySet::from_value(&lying).is_err());
    }

    #[test]
    fn a_token_without_kid_is_checked_only_against_a_one_key_set() {
        let one = KeySet::from_value(&json!({"keys": [ed("a"), {"kty": "oct", "k": "c2VjcmV0"}]})).unwrap();
        assert!(one.select(None, Alg::EdDsa).is_ok(), "one usable key (the oct key does not count)");
        let two = KeySet::from_value(&json!({"keys": [ed("a"), ed("b")]})).unwrap();
        assert_eq!(two.select(None, Alg::EdDsa).unwrap_err(), JwtError::AmbiguousKey(2));
        assert!(two.select(Some("b"), Alg::EdDsa).is_ok());
        assert_eq!(two.select(Some("c"), Alg::EdDsa).unwrap_err(), JwtError::UnknownKid("c".into()));
        assert!(matches!(two.select(Some("a"), Alg::Es256), Err(JwtError::AlgorithmMismatch { .. })));
    }

    #[test]
    fn spiffe_bundle_keys_marked_jwt_svid_are_usable_and_x509_ones_are_not() {
        let mut j = ed("j");
        j["use"] = json!("jwt-svid");
        let mut x = ed("x");
        x["use"] = json!("x509-svid");
        let set = KeySet::from_value(&json!({"keys": [x, j]})).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.has_kid("j") && !set.has_kid("x"));
    }
}
