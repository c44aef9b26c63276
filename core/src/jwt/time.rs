//! The registered time claims, with one clock-skew allowance for every caller:
//! `exp` is required and honoured up to [`LEEWAY_SECS`] after it passes; a
//! token whose `nbf` or `iat` lies more than the leeway in the future is refused.

use super::{JwtError, LEEWAY_SECS};
use serde_json::{Map, Value};

/// A NumericDate claim: absent, or a number (fractions are truncated).
pub fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_i64().or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)).map(Some).ok_or(JwtError::MissingClaim(name)),
    }
}

/// Checks `exp` (required), `nbf` and `iat` against `now`, Unix seconds.
pub fn check_times(claims: &Map<String, Value>, now: i64) -> Result<(), JwtError> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn c(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_leeway_applies_at_both_ends_and_no_further() {
        let now = 1_000_000;
        let l = LEEWAY_SECS;
        assert!(check_times(&c(json!({"exp": now - l + 1})), now).is_ok());
        assert_eq!(check_times(&c(json!({"exp": now - l})), now), Err(JwtError::Expired { exp: now - l, now }));
        assert!(check_times(&c(json!({"exp": now + 9, "nbf": now + l})), now).is_ok());
        assert!(matches!(check_times(&c(json!({"exp": now + 9, "nbf": now + l + 1})), now), Err(JwtError::NotYetValid { .. })));
        assert!(matches!(check_times(&c(json!({"exp": now + 9, "iat": now + l + 1})), now), Err(JwtError::IssuedInFuture { .. })));
    }

    #[test]
    fn exp_is_required_and_must_be_a_number() {
        assert_eq!(check_times(&c(json!({})), 0), Err(JwtError::MissingClaim("exp")));
        assert_eq!(check_times(&c(json!({"exp": "9999999999"})), 0), Err(JwtError::MissingClaim("exp")));
        assert!(check_times(&c(json!({"exp": 10.5})), 0).is_ok());
    }
}
