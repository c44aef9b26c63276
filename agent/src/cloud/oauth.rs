//! OAuth 2.0 token endpoint answers shared by the Azure client-assertion and the
//! GCP token-exchange flows.

use secrecy::SecretString;
use serde_json::Value;

/// An access token from a cloud token endpoint.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// `token_type` (usually `Bearer`).
    pub token_type: String,
    /// Lifetime in seconds from the answer.
    pub expires_in: i64,
}

/// Why a token endpoint answer was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// The endpoint returned an OAuth error.
    #[error("token endpoint refused (HTTP {status}): {error}: {description}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// `error` code.
        error: String,
        /// `error_description`.
        description: String,
    },
    /// The answer is not a token response.
    #[error("unexpected token endpoint answer (HTTP {0}): {1}")]
    Malformed(u16, &'static str),
}

/// Parses a token endpoint's JSON answer.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<AccessToken, OAuthError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| OAuthError::Malformed(status, "body is not JSON"))?;
    if !(200..300).contains(&status) {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let mut error = s("error");
        if error.is_empty() {
            error = format!("HTTP {status}");
        }
        return Err(OAuthError::Refused { status, error, description: s("error_description") });
    }
    let token = v.get("access_token").and_then(Value::as_str).ok_or(OAuthError::Malformed(status, "no access_token"))?;
    let expires_in = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    };
    Ok(AccessToken {
        token: SecretString::from(token),
        token_type: v.get("token_type").and_then(Value::as_str).unwrap_or("Bearer").to_string(),
        expires_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_lifetime_are_read() {
        let t = parse_token_response(200, br#"{"access_token":"at","token_type":"Bearer","expires_in":"3599"}"#).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!((t.token.expose_secret(), t.expires_in), ("at", 3599));
    }

    #[test]
    fn oauth_error_is_reported_with_description() {
        let e = parse_token_response(400, br#"{"error":"invalid_client","error_description":"AADSTS70021: No matching federated identity record found"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid_client") && e.contains("AADSTS70021"), "{e}");
    }
}
