//! Agent side of the `iam` join: signs `sts:GetCallerIdentity` with the
//! machine's AWS credentials (SigV4) around the broker's challenge. The secret
//! key never leaves the machine; the broker only sees the signature.

use super::{begin, finish, ClientJoinError, JoinParams};
use crate::join::sts::{self, Endpoint};
use aws_lc_rs::{digest, hmac};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// AWS credentials. Debug never shows the secret key or session token.
#[derive(Clone)]
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AwsCredentials {
    /// Credentials from their parts.
    pub fn new(access_key_id: String, secret_access_key: String, session_token: Option<String>) -> Self {
        Self { access_key_id, secret_access_key, session_token: session_token.filter(|t| !t.is_empty()) }
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Self, ClientJoinError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok(Self::new(id, secret, get("AWS_SESSION_TOKEN"))),
            _ => Err(ClientJoinError::Environment(
                "AWS credentials not found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials)".into(),
            )),
        }
    }
}

/// Which STS endpoint to sign for.
#[derive(Debug, Clone)]
pub struct StsTarget {
    /// Endpoint URL, e.g. `https://sts.us-east-1.amazonaws.com/`.
    pub url: String,
    /// Region of the signing scope.
    pub region: String,
}

impl StsTarget {
    /// The regional AWS endpoint `https://sts.<region>.amazonaws.com/`.
    pub fn regional(region: &str) -> Self {
        Self { url: format!("https://sts.{region}.amazonaws.com/"), region: region.into() }
    }
}

/// The `Join` payload: a signed `GetCallerIdentity` carrying `challenge` and
/// `server_name` (the host of the broker address this agent dialed, see
/// [`sts::server_name`]), as JSON. `now` is Unix seconds (the signature's date).
pub fn signed_request(creds: &AwsCredentials, target: &StsTarget, challenge: &str, server_name: &str, now: i64) -> Result<Vec<u8>, ClientJoinError> {
    let endpoint = Endpoint::parse(&target.url).map_err(ClientJoinError::Environment)?;
    let dt = time::OffsetDateTime::from_unix_timestamp(now).map_err(|e| ClientJoinError::Environment(e.to_string()))?;
    let amz_date = format!("{:04}{:02}{:02}T{:02}{:02}{:02}Z", dt.year(), u8::from(dt.month()), dt.day(), dt.hour(), dt.minute(), dt.second());
    let day = &amz_date[..8];
    let mut headers = vec![
        ("content-type".to_string(), sts::CONTENT_TYPE.to_string()),
        ("host".to_string(), endpoint.authority()),
        ("x-amz-date".to_string(), amz_date.clone()),
        (sts::CHALLENGE_HEADER.to_string(), challenge.to_string()),
        (sts::SERVER_NAME_HEADER.to_string(), server_name.to_string()),
    ];
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), t.clone()));
    }
    headers.sort();
    let signed_headers: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed_headers = signed_headers.join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
    let canonical_request = format!("POST\n/\n\n{canonical_headers}\n{signed_headers}\n{}", sha256_hex(sts::BODY.as_bytes()));
    let scope = format!("{day}/{}/sts/aws4_request", target.region);
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let signature = hex::encode(hmac_sha256(&signing_key(&creds.secret_access_key, day, &target.region, "sts"), string_to_sign.as_bytes()));
    headers.push((
        "authorization".into(),
        format!("AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}", creds.access_key_id),
    ));
    let body = serde_json::json!({"method": "POST", "url": endpoint.url(), "headers": headers, "body": sts::BODY});
    serde_json::to_vec(&body).map_err(|e| ClientJoinError::Environment(e.to_string()))
}

/// SigV4 key derivation: HMAC chain over date, region, service, terminator.
fn signing_key(secret: &str, day: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// Joins with the `iam` method: `BeginJoin`, sign around the challenge and the
/// name of the broker `client` is connected to (`broker_addr`, as dialed), `Join`.
pub async fn join(
    client: &mut SigilClient<Channel>,
    broker_addr: &str,
    params: &JoinParams,
    creds: &AwsCredentials,
    target: &StsTarget,
) -> Result<pb::IdentityResponse, ClientJoinError> {
    let server_name = sts::server_name(broker_addr).map_err(ClientJoinError::Environment)?;
    let ch = begin(client, crate::join::aws_iam::METHOD, &params.token_name, Vec::new()).await?;
    let challenge = String::from_utf8(ch.payload).map_err(|_| ClientJoinError::Environment("broker challenge is not text".into()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let payload = signed_request(creds, target, &challenge, &server_name, now)?;
    finish(client, crate::join::aws_iam::METHOD, params, ch.challenge_id, payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_matches_the_aws_documented_example() {
        // From the AWS SigV4 documentation ("Examples of how to derive a signing key").
        let k = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
        assert_eq!(hex::encode(k), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }

    #[test]
    fn signed_request_passes_the_broker_checks_and_redacts_secrets() {
        let creds = AwsCredentials::new("AKIDEXAMPLE".into(), "secret-key-value".into(), Some("session-token-value".into()));
        let p = signed_request(&creds, &StsTarget::regional("eu-west-1"), "chal", "broker.example.org", 1_700_000_000).unwrap();
        let r = sts::check_request(&p, &sts::AllowedEndpoints::default(), "chal", &["broker.example.org".into()], 1_700_000_000).unwrap();
        assert_eq!(r.endpoint.host, "sts.eu-west-1.amazonaws.com");
        assert!(!String::from_utf8_lossy(&p).contains("secret-key-value"));
        assert!(!format!("{creds:?}").contains("secret-key-value") && !format!("{creds:?}").contains("session-token-value"));
    }
}
