//! Splitting a compact JWS and the header rules, checked before any key is
//! looked up: bounded size, three unpadded base64url parts, JSON header, an
//! asymmetric `alg`, no key material or key URL, no `crit`, `typ` (if any) JWT.

use super::{Alg, JwtError, KeySet, MAX_TOKEN_BYTES};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// Header parameters that carry a key or say where to fetch one: a token must
/// never bring the key it is checked with.
const KEY_PARAMETERS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];
/// Largest token [`peek`] decodes, bytes (it reads tokens the caller holds, to report on them).
pub const MAX_PEEK_BYTES: usize = 1024 * 1024;

/// A token whose header passed the checks but whose signature is not yet verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    alg: Alg,
    kid: Option<String>,
    signing_input: &'a str,
    payload_b64: &'a str,
    signature: Vec<u8>,
}

fn decode_part(what: &str, s: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed(format!("{what} is not unpadded base64url")))
}

fn json_object(what: &str, b64: &str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice(&decode_part(what, b64)?) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(JwtError::Malformed(format!("{what} is not a JSON object"))),
        Err(_) => Err(JwtError::Malformed(format!("{what} is not JSON"))),
    }
}

fn split(token: &str) -> Result<(&str, &str, &str), JwtError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => Ok((h, p, s)),
        _ => Err(JwtError::Malformed("expected three dot-separated parts (JWS compact form)".into())),
    }
}

/// Whether a `typ` value names a JWT (RFC 7519 §5.1: "JWT"; RFC 7515 allows
/// "JOSE" and the `application/` prefix; media types compare case-insensitively).
fn is_jwt_type(typ: &str) -> bool {
    let t = typ.get(..12).filter(|p| p.eq_ignore_ascii_case("application/")).map_or(typ, |_| &typ[12..]);
    t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("JOSE")
}

/// Splits and checks a compact JWS: size, base64url, header rules.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge { len: token.len(), max: MAX_TOKEN_BYTES });
    }
    let (h, p, s) = split(token)?;
    let header = json_object("header", h)?;
    if let Some(forbidden) = KEY_PARAMETERS.into_iter().find(|k| header.contains_key(*k)) {
        return Err(JwtError::ForbiddenHeader(forbidden));
    }
    let alg = Alg::parse(header.get("alg").and_then(Value::as_str).ok_or(JwtError::MissingClaim("alg"))?)?;
    if let Some(crit) = header.get("crit") {
        // No extension is understood, so any `crit` (even malformed) is refused.
        return Err(JwtError::UnknownCritical(crit.to_string()));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if is_jwt_type(t) => {}
        Some(other) => return Err(JwtError::WrongType(other.as_str().map_or_else(|| other.to_string(), str::to_string))),
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

impl Parsed<'_> {
    /// The header's `kid`, a lookup hint only.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The header's algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// Verifies the signature with the one key of `keys` the header selects,
    /// then decodes the payload. Returns the claims, whose time and audience
    /// are not checked yet ([`super::check_times`], [`super::verify`]).
    pub fn verify_signature(&self, keys: &KeySet) -> Result<Map<String, Value>, JwtError> {
        let key = keys.select(self.kid.as_deref(), self.alg)?;
        if !key.material().verify(self.alg, self.signing_input.as_bytes(), &self.signature) {
            return Err(JwtError::BadSignature);
        }
        json_object("payload", self.payload_b64)
    }
}

/// A token decoded without any check: for reporting on a token the caller
/// already holds (`sigil federation verify`, printing an expiry). Never a
/// trust decision; [`parse`] and [`super::verify`] are.
#[derive(Debug, Clone)]
pub struct Peeked {
    /// Header parameters.
    pub header: Map<String, Value>,
    /// Claims.
    pub claims: Map<String, Value>,
    /// Length in characters.
    pub length: usize,
}

impl Peeked {
    /// A string header parameter.
    pub fn header_str(&self, k: &str) -> Option<&str> {
        self.header.get(k).and_then(Value::as_str)
    }

    /// A string claim.
    pub fn claim_str(&self, k: &str) -> Option<&str> {
        self.claims.get(k).and_then(Value::as_str)
    }

    /// An integer claim.
    pub fn claim_i64(&self, k: &str) -> Option<i64> {
        self.claims.get(k).and_then(Value::as_i64)
    }
}

/// Decodes header and claims of a compact JWS up to [`MAX_PEEK_BYTES`], unverified.
pub fn peek(token: &str) -> Result<Peeked, JwtError> {
    if token.len() > MAX_PEEK_BYTES {
        return Err(JwtError::TooLarge { len: token.len(), max: MAX_PEEK_BYTES });
    }
    let (h, p, _) = split(token)?;
    Ok(Peeked { header: json_object("header", h)?, claims: json_object("payload", p)?, length: token.chars().count() })
}
