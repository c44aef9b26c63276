//! JWS compact tokens as OIDC issuers mint them: parsing, signature
//! verification against a JWKS, and the registered-claim checks.
//!
//! Pure: no I/O and no clock (the caller passes `now`). The rules come from the
//! mistakes others shipped: the algorithm is pinned by the key (type and the
//! JWK's own `alg`), `none` and HMAC are never accepted, keys are never taken
//! from the token (`jwk`, `jku`, `x5u`, `x5c`), `kid` is only a lookup hint,
//! unknown `crit` is refused, `exp` is required and the audience always checked.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// Largest token accepted, bytes. Real CI tokens are 1-3 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
pub const LEEWAY_SECS: i64 = 60;
/// Most keys read from one JWKS document.
pub const MAX_KEYS: usize = 64;

/// Why a token or key set was refused. Messages are safe to return to the
/// caller: they name claims and algorithms, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// Token length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The token is not a JWS in compact form with JSON header and payload.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none` or an HMAC algorithm: never accepted for asymmetric issuers.
    #[error("algorithm {0:?} is not accepted (only asymmetric signatures: RS*, PS*, ES256, ES384, EdDSA)")]
    ForbiddenAlgorithm(String),
    /// An algorithm this verifier does not implement.
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The header carries key material or a key URL, which is never trusted.
    #[error("header parameter {0:?} is not accepted: keys come only from the issuer's JWKS")]
    ForbiddenHeader(&'static str),
    /// The header marks extensions critical that this verifier does not know.
    #[error("unknown critical header extension(s) {0}")]
    UnknownCritical(String),
    /// The signature part is empty.
    #[error("the token has an empty signature")]
    EmptySignature,
    /// No key in the issuer's JWKS has the token's `kid`.
    #[error("no key with kid {0:?} in the issuer's JWKS")]
    UnknownKid(String),
    /// The token names no `kid` and the JWKS has several keys.
    #[error("the token has no kid and the issuer's JWKS has {0} keys")]
    AmbiguousKey(usize),
    /// The header algorithm does not fit the key it names.
    #[error("algorithm {alg:?} does not match key {kid:?} ({key})")]
    AlgorithmMismatch {
        /// Header alg.
        alg: String,
        /// Key id.
        kid: String,
        /// Key type and pinned algorithm.
        key: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("signature verification failed")]
    BadSignature,
    /// `iss` differs from the configured issuer.
    #[error("issuer {found:?} is not the expected {expected:?}")]
    WrongIssuer {
        /// Configured issuer.
        expected: String,
        /// Token's `iss`.
        found: String,
    },
    /// `aud` does not contain the configured audience.
    #[error("audience {found:?} does not contain the expected {expected:?}")]
    WrongAudience {
        /// Configured audience.
        expected: String,
        /// Token's `aud` values.
        found: Vec<String>,
    },
    /// A required claim is absent or has the wrong type.
    #[error("claim {0:?} is missing or not of the expected type")]
    MissingClaim(&'static str),
    /// `exp` is in the past.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// exp.
        exp: i64,
        /// now.
        now: i64,
    },
    /// `nbf` is in the future.
    #[error("token is not valid before {nbf} (now {now})")]
    NotYetValid {
        /// nbf.
        nbf: i64,
        /// now.
        now: i64,
    },
    /// `iat` is in the future.
    #[error("token claims to be issued at {iat}, in the future (now {now})")]
    IssuedInFuture {
        /// iat.
        iat: i64,
        /// now.
        now: i64,
    },
    /// The JWKS document is unusable.
    #[error("invalid JWKS: {0}")]
    BadJwks(String),
}

/// Signature algorithms this verifier implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 SHA-256/384/512.
    Rs256,
    /// RS384.
    Rs384,
    /// RS512.
    Rs512,
    /// RSASSA-PSS SHA-256/384/512.
    Ps256,
    /// PS384.
    Ps384,
    /// PS512.
    Ps512,
    /// ECDSA P-256 SHA-256.
    Es256,
    /// ECDSA P-384 SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    fn parse(s: &str) -> Result<Self, JwtError> {
        Ok(match s {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            s if s.eq_ignore_ascii_case("none") || s.to_ascii_uppercase().starts_with("HS") || s.is_empty() => {
                return Err(JwtError::ForbiddenAlgorithm(s.into()))
            }
            other => return Err(JwtError::UnsupportedAlgorithm(other.into())),
        })
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }
}

/// A public key from a JWKS.
#[derive(Clone, PartialEq, Eq)]
enum KeyMaterial {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl KeyMaterial {
    fn describe(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "RSA",
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
        }
    }

    /// Whether the key type allows `alg` at all.
    fn allows(&self, alg: Alg) -> bool {
        match self {
            KeyMaterial::Rsa { .. } => matches!(alg, Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512),
            KeyMaterial::P256(_) => alg == Alg::Es256,
            KeyMaterial::P384(_) => alg == Alg::Es384,
            KeyMaterial::Ed25519(_) => alg == Alg::EdDsa,
        }
    }

    fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        let ok = match self {
            KeyMaterial::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }.verify(params, msg, sig)
            }
            KeyMaterial::P256(point) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, sig),
            KeyMaterial::P384(point) => UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(msg, sig),
            KeyMaterial::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x).verify(msg, sig),
        };
        ok.is_ok()
    }
}

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
}

/// The verification keys of one issuer.
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
    // Encryption keys and symmetric keys are skipped, never used.
    if k.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
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

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn select(&self, kid: Option<&str>, alg: Alg) -> Result<&Jwk, JwtError> {
        let key = match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid == kid).ok_or_else(|| JwtError::UnknownKid(kid.into()))?,
            None if self.keys.len() == 1 => &self.keys[0],
            None => return Err(JwtError::AmbiguousKey(self.keys.len())),
        };
        if !key.pins(alg) {
            let pinned = key.alg.map(|a| format!(", alg {}", a.name())).unwrap_or_default();
            return Err(JwtError::AlgorithmMismatch {
                alg: alg.name().into(),
                kid: key.kid.clone(),
                key: format!("{}{pinned}", key.key.describe()),
            });
        }
        Ok(key)
    }
}

/// A token whose header passed the checks but whose signature is not yet verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    alg: Alg,
    kid: Option<String>,
    signing_input: &'a str,
    payload_b64: &'a str,
    signature: Vec<u8>,
}

impl Parsed<'_> {
    /// The header's `kid`, a lookup hint only.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The header's algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }
}

fn decode_part(what: &str, s: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed(format!("{what} is not unpadded base64url")))
}

/// Splits and checks a compact JWS: size, base64url, header rules.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge { len: token.len(), max: MAX_TOKEN_BYTES });
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three dot-separated parts (JWS compact form)".into()));
    };
    let header: Value = serde_json::from_slice(&decode_part("header", h)?)
        .map_err(|_| JwtError::Malformed("header is not JSON".into()))?;
    let header = header.as_object().ok_or_else(|| JwtError::Malformed("header is not a JSON object".into()))?;
    for forbidden in ["jwk", "jku", "x5u", "x5c"] {
        if header.contains_key(forbidden) {
            return Err(JwtError::ForbiddenHeader(forbidden));
        }
    }
    let alg = Alg::parse(header.get("alg").and_then(Value::as_str).ok_or(JwtError::MissingClaim("alg"))?)?;
    if let Some(crit) = header.get("crit") {
        // No extension is understood, so any `crit` (even malformed) is refused.
        return Err(JwtError::UnknownCritical(crit.to_string()));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed("kid is not a string".into())),
    };
    if s.is_empty() {
        return Err(JwtError::EmptySignature);
    }
    let signature = decode_part("signature", s)?;
    Ok(Parsed { alg, kid, signing_input: &token[..h.len() + 1 + p.len()], payload_b64: p, signature })
}

/// What the claims must say.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// Exact `iss`.
    pub issuer: &'a str,
    /// Audience that `aud` (string or array) must contain.
    pub audience: &'a str,
    /// Now, Unix seconds.
    pub now: i64,
}

fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)).map(Some).ok_or(JwtError::MissingClaim(name)),
    }
}

/// Checks `iss`, `aud`, `exp`, `nbf`, `iat`.
pub fn check_claims(claims: &Map<String, Value>, expect: &Expect<'_>) -> Result<(), JwtError> {
    let iss = claims.get("iss").and_then(Value::as_str).ok_or(JwtError::MissingClaim("iss"))?;
    if iss != expect.issuer {
        return Err(JwtError::WrongIssuer { expected: expect.issuer.into(), found: iss.into() });
    }
    let aud: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => return Err(JwtError::MissingClaim("aud")),
    };
    if expect.audience.is_empty() || !aud.iter().any(|a| a == expect.audience) {
        return Err(JwtError::WrongAudience { expected: expect.audience.into(), found: aud });
    }
    let now = expect.now;
    let exp = numeric(claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return Err(JwtError::Expired { exp, now });
    }
    if let Some(nbf) = numeric(claims, "nbf")? {
        if nbf > now.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::NotYetValid { nbf, now });
        }
    }
    if let Some(iat) = numeric(claims, "iat")? {
        if iat > now.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::IssuedInFuture { iat, now });
        }
    }
    Ok(())
}

impl Parsed<'_> {
    /// Verifies the signature with the key the header names, then decodes the
    /// payload and checks the registered claims. Returns all claims.
    pub fn verify(&self, keys: &KeySet, expect: &Expect<'_>) -> Result<Map<String, Value>, JwtError> {
        let key = keys.select(self.kid.as_deref(), self.alg)?;
        if !key.key.verify(self.alg, self.signing_input.as_bytes(), &self.signature) {
            return Err(JwtError::BadSignature);
        }
        let payload: Value = serde_json::from_slice(&decode_part("payload", self.payload_b64)?)
            .map_err(|_| JwtError::Malformed("payload is not JSON".into()))?;
        let Value::Object(claims) = payload else {
            return Err(JwtError::Malformed("payload is not a JSON object".into()));
        };
        check_claims(&claims, expect)?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    fn enc(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    struct Es {
        kp: EcdsaKeyPair,
    }

    impl Es {
        fn new() -> Self {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
            Self { kp: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap() }
        }
        fn jwks(&self, kid: &str) -> KeySet {
            let p = self.kp.public_key().as_ref();
            let doc = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])}]});
            KeySet::from_json(doc.to_string().as_bytes()).unwrap()
        }
        fn sign(&self, header: &Value, claims: &Value) -> String {
            let input = format!("{}.{}", enc(header), enc(claims));
            let sig = self.kp.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "https://issuer.test", "aud": ["x", "sigil"], "exp": now + 300, "iat": now, "nbf": now, "sub": "s"})
    }

    /// A case: input and a predicate on the expected error.
    type Case = (Value, fn(&JwtError) -> bool);

    const NOW: i64 = 1_700_000_000;
    fn expect() -> Expect<'static> {
        Expect { issuer: "https://issuer.test", audience: "sigil", now: NOW }
    }

    fn check(token: &str, keys: &KeySet) -> Result<Map<String, Value>, JwtError> {
        parse(token)?.verify(keys, &expect())
    }

    #[test]
    fn a_well_formed_token_verifies_and_audience_may_be_an_array() {
        let k = Es::new();
        let t = k.sign(&json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}), &claims(NOW));
        assert_eq!(check(&t, &k.jwks("k1")).unwrap()["sub"], "s");
    }

    #[test]
    fn header_tricks_are_refused_before_any_key_is_used() {
        let k = Es::new();
        let keys = k.jwks("k1");
        let cases: &[Case] = &[
            (json!({"alg": "none", "kid": "k1"}), |e| matches!(e, JwtError::ForbiddenAlgorithm(_))),
            (json!({"alg": "HS256", "kid": "k1"}), |e| matches!(e, JwtError::ForbiddenAlgorithm(_))),
            (json!({"alg": "ES256", "kid": "k1", "jwk": {}}), |e| *e == JwtError::ForbiddenHeader("jwk")),
            (json!({"alg": "ES256", "kid": "k1", "jku": "https://evil"}), |e| *e == JwtError::ForbiddenHeader("jku")),
            (json!({"alg": "ES256", "kid": "k1", "x5u": "https://evil"}), |e| *e == JwtError::ForbiddenHeader("x5u")),
            (json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}), |e| matches!(e, JwtError::UnknownCritical(_))),
            (json!({"alg": "RS256", "kid": "k1"}), |e| matches!(e, JwtError::AlgorithmMismatch { .. })),
            (json!({"alg": "ES256", "kid": "other"}), |e| matches!(e, JwtError::UnknownKid(_))),
        ];
        for (header, is_expected) in cases {
            let t = k.sign(header, &claims(NOW));
            let err = check(&t, &keys).unwrap_err();
            assert!(is_expected(&err), "{header}: {err}");
        }
    }

    #[test]
    fn empty_or_foreign_signatures_are_refused() {
        let k = Es::new();
        let t = k.sign(&json!({"alg": "ES256", "kid": "k1"}), &claims(NOW));
        let unsigned = format!("{}.", t.rsplit_once('.').unwrap().0);
        assert_eq!(check(&unsigned, &k.jwks("k1")).unwrap_err(), JwtError::EmptySignature);
        assert_eq!(check(&t, &Es::new().jwks("k1")).unwrap_err(), JwtError::BadSignature);
        // Signature of one payload spliced onto another.
        let other = k.sign(&json!({"alg": "ES256", "kid": "k1"}), &json!({"sub": "admin"}));
        let parts: Vec<&str> = t.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
        assert_eq!(check(&spliced, &k.jwks("k1")).unwrap_err(), JwtError::BadSignature);
    }

    #[test]
    fn registered_claims_are_enforced() {
        let k = Es::new();
        let keys = k.jwks("k1");
        let mut cases: Vec<Case> = vec![];
        let mut c = claims(NOW);
        c["iss"] = json!("https://evil.test");
        cases.push((c, |e| matches!(e, JwtError::WrongIssuer { .. })));
        let mut c = claims(NOW);
        c["aud"] = json!("other");
        cases.push((c, |e| matches!(e, JwtError::WrongAudience { .. })));
        let mut c = claims(NOW);
        c.as_object_mut().unwrap().remove("aud");
        cases.push((c, |e| *e == JwtError::MissingClaim("aud")));
        let mut c = claims(NOW);
        c.as_object_mut().unwrap().remove("exp");
        cases.push((c, |e| *e == JwtError::MissingClaim("exp")));
        let mut c = claims(NOW);
        c["exp"] = json!(NOW - LEEWAY_SECS);
        cases.push((c, |e| matches!(e, JwtError::Expired { .. })));
        let mut c = claims(NOW);
        c["nbf"] = json!(NOW + LEEWAY_SECS + 1);
        cases.push((c, |e| matches!(e, JwtError::NotYetValid { .. })));
        let mut c = claims(NOW);
        c["iat"] = json!(NOW + 3600);
        cases.push((c, |e| matches!(e, JwtError::IssuedInFuture { .. })));
        for (c, is_expected) in cases {
            let err = check(&k.sign(&json!({"alg": "ES256", "kid": "k1"}), &c), &keys).unwrap_err();
            assert!(is_expected(&err), "{c}: {err}");
        }
    }

    #[test]
    fn oversized_and_malformed_tokens_are_refused_without_parsing() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(parse(&big).unwrap_err(), JwtError::TooLarge { .. }));
        for bad in ["", "a.b", "a.b.c.d", "e30=.e30.AA", "!!.e30.AA"] {
            assert!(matches!(parse(bad).unwrap_err(), JwtError::Malformed(_)), "{bad}");
        }
    }

    #[test]
    fn jwks_skips_symmetric_and_encryption_keys_and_rejects_inconsistent_alg() {
        let only_oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]});
        assert!(KeySet::from_json(only_oct.to_string().as_bytes()).is_err());
        let lying = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "RS256", "x": URL_SAFE_NO_PAD.encode([1u8; 32])}]});
        assert!(KeySet::from_json(lying.to_string().as_bytes()).is_err());
    }
}
