//! The JSON credentials document that container endpoints, IMDS and
//! `credential_process` return: `AccessKeyId`, `SecretAccessKey`, a session
//! token (`Token`, or `SessionToken` for processes) and an optional
//! `Expiration`. Parse errors give a position, never a value: serde's
//! messages quote the offending value, which may be the secret key.

use super::{parse_expiration, AwsCredentials, Fetched};
use serde_json::Value;

/// Reads `body`; `token_field` names the session token's key.
pub(super) fn parse(body: &[u8], token_field: &str) -> Result<(Fetched, Value), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON (line {} column {})", e.line(), e.column()))?;
    if !v.is_object() {
        return Err("the answer is not a JSON object".into());
    }
    let text = |k: &str| -> Result<Option<String>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(format!("{k} is not a string")),
        }
    };
    let id = text("AccessKeyId")?.ok_or("AccessKeyId missing")?;
    let secret = text("SecretAccessKey")?.ok_or("SecretAccessKey missing")?;
    let token = text(token_field)?;
    let expires_at = text("Expiration")?.map(|e| parse_expiration(&e)).transpose()?;
    Ok((Fetched { credentials: AwsCredentials::new(id, secret, token), expires_at }, v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_and_expiration() {
        let (f, _) = parse(br#"{"AccessKeyId":"AKID","SecretAccessKey":"s3cr3t","Token":"tok","Expiration":"2023-11-14T22:13:20Z"}"#, "Token").unwrap();
        assert_eq!(f.expires_at, Some(1_700_000_000));
        assert_eq!(f.credentials.access_key_id(), "AKID");
        let (f, _) = parse(br#"{"AccessKeyId":"AKID","SecretAccessKey":"s"}"#, "SessionToken").unwrap();
        assert_eq!(f.expires_at, None);
    }

    #[test]
    fn errors_never_quote_values() {
        for body in [&br#"{"AccessKeyId":"AKID","SecretAccessKey":5555}"#[..], br#"{"AccessKeyId":"AKID","SecretAccessKey":"topsecret""#, br#"{"SecretAccessKey":"topsecret"}"#] {
            let e = parse(body, "Token").unwrap_err();
            assert!(!e.contains("topsecret") && !e.contains("5555"), "{e}");
        }
    }
}
