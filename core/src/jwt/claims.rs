//! Issuer and audience checks shared by the callers that need them (the join
//! checks both, `ValidateJWTSVID` the audience; `federation verify` reports them).

use super::JwtError;
use serde_json::{Map, Value};

/// `aud` as a list: a string or the strings of an array; empty when absent.
pub fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// `iss` must equal `expected` exactly.
pub fn check_issuer(claims: &Map<String, Value>, expected: &str) -> Result<(), JwtError> {
    let iss = claims.get("iss").and_then(Value::as_str).ok_or(JwtError::MissingClaim("iss"))?;
    if iss != expected {
        return Err(JwtError::WrongIssuer { expected: expected.into(), found: iss.into() });
    }
    Ok(())
}

/// `aud` (string or array) must contain `expected`, which must not be empty.
pub fn check_audience(claims: &Map<String, Value>, expected: &str) -> Result<(), JwtError> {
    if !matches!(claims.get("aud"), Some(Value::String(_) | Value::Array(_))) {
        return Err(JwtError::MissingClaim("aud"));
    }
    let aud = audiences(claims);
    if expected.is_empty() || !aud.iter().any(|a| a == expected) {
        return Err(JwtError::WrongAudience { expected: expected.into(), found: aud });
    }
    Ok(())
}
