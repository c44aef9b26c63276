//! AWS IAM Roles Anywhere: `CreateSession` signed with the X.509-SVID
//! ([`super::sigv4_x509`]) returns temporary credentials, which `sigil aws
//! credential-process` prints in the SDKs' `credential_process` format and the
//! agent can keep in a credentials file.

use secrecy::SecretString;
use super::aws_credentials::{AwsCredentials};
use super::http::{parse_target, HttpClient, HttpError, Target};
use super::sigv4_x509::{self, RequestToSign, SigV4X509Error, SignedRequest, X509Credential};
use serde_json::{json, Value};

/// Service name in the credential scope.
pub const SERVICE: &str = "rolesanywhere";

/// Why `CreateSession` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolesAnywhereError {
    /// A parameter breaks a documented rule.
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The parameter.
        field: &'static str,
        /// The rule broken.
        why: String,
    },
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SigV4X509Error),
    /// The HTTP exchange failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The service refused (status and its message).
    #[error("Roles Anywhere refused CreateSession (HTTP {status}): {message}{hint}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The service's message.
        message: String,
        /// What usually fixes it.
        hint: &'static str,
    },
    /// The answer did not hold a credential set.
    #[error("unexpected CreateSession response (HTTP {0}): {1}")]
    Malformed(u16, &'static str),
}

/// What to ask `CreateSession` for.
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// Endpoint base URL; default `https://rolesanywhere.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Region of the trust anchor.
    pub region: String,
    /// Trust anchor ARN.
    pub trust_anchor_arn: String,
    /// Profile ARN.
    pub profile_arn: String,
    /// Role ARN.
    pub role_arn: String,
    /// Session length, 900..43200 seconds (default 3600).
    pub duration_seconds: u32,
    /// Optional session name (the profile must accept it).
    pub role_session_name: Option<String>,
}

impl SessionParams {
    /// The endpoint base URL.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| format!("https://rolesanywhere.{}.amazonaws.com", self.region))
    }

    /// Checks ARNs and duration.
    pub fn validate(&self) -> Result<(), RolesAnywhereError> {
        let inv = |field, why: String| Err(RolesAnywhereError::Invalid { field, why });
        if !(900..=43_200).contains(&self.duration_seconds) {
            return inv("duration_seconds", format!("{}: Roles Anywhere accepts 900..43200", self.duration_seconds));
        }
        for (field, arn, kind) in [
            ("trust_anchor_arn", &self.trust_anchor_arn, ":trust-anchor/"),
            ("profile_arn", &self.profile_arn, ":profile/"),
            ("role_arn", &self.role_arn, ":role/"),
        ] {
            if !arn.starts_with("arn:") || !arn.contains(kind) {
                return inv(field, format!("{arn:?} is not an ARN containing {kind:?}"));
            }
        }
        if self.region.is_empty() || !self.region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return inv("region", format!("{:?} is not a region name like us-east-1", self.region));
        }
        Ok(())
    }

    /// The JSON body (compact; field order as documented).
    pub fn body(&self) -> String {
        let mut v = json!({
            "durationSeconds": self.duration_seconds,
            "profileArn": self.profile_arn,
            "roleArn": self.role_arn,
            "trustAnchorArn": self.trust_anchor_arn,
        });
        if let (Some(name), Some(obj)) = (&self.role_session_name, v.as_object_mut()) {
            obj.insert("roleSessionName".into(), json!(name));
        }
        v.to_string()
    }
}

/// Signs a `CreateSession` request for `params` at `amz_date` without sending it.
/// Deterministic for RSA keys: the same inputs give the same signature.
pub fn sign_create_session(
    cred: &X509Credential,
    params: &SessionParams,
    body: &str,
    amz_date: &str,
) -> Result<(Target, SignedRequest), RolesAnywhereError> {
    let url = format!("{}/sessions", params.endpoint().trim_end_matches('/'));
    let target = parse_target(&url)?;
    let (path, query) = target.path_and_query.split_once('?').unwrap_or((target.path_and_query.as_str(), ""));
    let signed = sigv4_x509::sign(
        cred,
        &RequestToSign {
            method: "POST",
            host: &target.authority,
            path,
            query,
            body: body.as_bytes(),
            region: &params.region,
            service: SERVICE,
            amz_date,
        },
    )?;
    Ok((target, signed))
}

/// Calls `CreateSession` at time `now` (Unix seconds) and returns the credentials.
pub async fn create_session(
    client: &HttpClient,
    cred: &X509Credential,
    params: &SessionParams,
    now: i64,
) -> Result<AwsCredentials, RolesAnywhereError> {
    params.validate()?;
    let body = params.body();
    let (_, signed) = sign_create_session(cred, params, &body, &sigv4_x509::amz_date(now)?)?;
    let headers: Vec<(String, String)> = signed.headers.into_iter().filter(|(k, _)| k != "Host").collect();
    let url = format!("{}/sessions", params.endpoint().trim_end_matches('/'));
    let r = client.post(&url, &headers, body.into_bytes()).await?;
    parse_response(r.status, &r.body)
}

/// Parses the `CreateSession` answer.
pub fn parse_response(status: u16, body: &[u8]) -> Result<AwsCredentials, RolesAnywhereError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
        let hint = match status {
            403 => " (check that the trust anchor holds the CA that issued this SVID, the profile lists the role, and the role trusts rolesanywhere.amazonaws.com; run `sigil federation verify aws-roles-anywhere`)",
            400 => " (check the ARNs, region and session duration)",
            _ => "",
        };
        return Err(RolesAnywhereError::Refused { status, message, hint });
    }
    let c = v
        .get("credentialSet")
        .and_then(|s| s.get(0))
        .and_then(|s| s.get("credentials"))
        .ok_or(RolesAnywhereError::Malformed(status, "no credentialSet[0].credentials"))?;
    let field = |k: &'static str| c.get(k).and_then(Value::as_str).map(str::to_string).ok_or(RolesAnywhereError::Malformed(status, k));
    Ok(AwsCredentials {
        access_key_id: field("accessKeyId")?,
        secret_access_key: SecretString::from(field("secretAccessKey")?),
        session_token: SecretString::from(field("sessionToken")?),
        expiration: field("expiration")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SessionParams {
        SessionParams {
            endpoint: None,
            region: "eu-west-1".into(),
            trust_anchor_arn: "arn:aws:rolesanywhere:eu-west-1:1:trust-anchor/ta".into(),
            profile_arn: "arn:aws:rolesanywhere:eu-west-1:1:profile/p".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            duration_seconds: 3600,
            role_session_name: None,
        }
    }

    #[test]
    fn default_endpoint_is_regional() {
        assert_eq!(params().endpoint(), "https://rolesanywhere.eu-west-1.amazonaws.com");
    }

    #[test]
    fn body_lists_the_documented_fields() {
        assert_eq!(
            params().body(),
            r#"{"durationSeconds":3600,"profileArn":"arn:aws:rolesanywhere:eu-west-1:1:profile/p","roleArn":"arn:aws:iam::1:role/r","trustAnchorArn":"arn:aws:rolesanywhere:eu-west-1:1:trust-anchor/ta"}"#
        );
    }

    #[test]
    fn swapped_arns_and_bad_duration_are_refused() {
        let mut p = params();
        std::mem::swap(&mut p.profile_arn, &mut p.trust_anchor_arn);
        assert!(matches!(p.validate(), Err(RolesAnywhereError::Invalid { field: "trust_anchor_arn", .. })));
        let mut p = params();
        p.duration_seconds = 60;
        assert!(p.validate().is_err());
    }

    #[test]
    fn credential_set_is_parsed() {
        let body = br#"{"credentialSet":[{"credentials":{"accessKeyId":"ASIA","secretAccessKey":"s","sessionToken":"t","expiration":"2024-01-01T00:00:00Z"}}],"subjectArn":"x"}"#;
        assert_eq!(parse_response(201, body).unwrap().access_key_id, "ASIA");
    }

    #[test]
    fn refusal_carries_message_and_fix() {
        let e = parse_response(403, br#"{"message":"Untrusted signing certificate"}"#).unwrap_err().to_string();
        assert!(e.contains("Untrusted signing certificate") && e.contains("trust anchor"), "{e}");
    }
}
