//! Agent side of the `iam` join: signs `sts:GetCallerIdentity` with the
//! machine's AWS credentials (SigV4, credentials found by
//! [`super::aws_chain`]) around the broker's challenge. The secret
//! key never leaves the machine; the broker only sees the signature.

use super::{aws_chain, begin, finish, ClientJoinError, JoinParams};
use sigil_core::join_wire::sts::{self, Endpoint};
use sigil_core::sigv4;
use secrecy::{ExposeSecret, SecretString};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// AWS credentials. Debug shows the access key id only; the secret key and
/// session token are wiped from memory when dropped.
#[derive(Clone, Debug)]
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
}

impl AwsCredentials {
    /// Credentials from their parts.
    pub fn new(access_key_id: String, secret_access_key: String, session_token: Option<String>) -> Self {
        Self {
            access_key_id,
            secret_access_key: secret_access_key.into(),
            session_token: session_token.filter(|t| !t.is_empty()).map(SecretString::from),
        }
    }

    /// The access key id (not secret).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key.
    pub(crate) fn secret_access_key(&self) -> &SecretString {
        &self.secret_access_key
    }

    /// The session token of temporary credentials.
    pub(crate) fn session_token(&self) -> Option<&SecretString> {
        self.session_token.as_ref()
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

    /// `sts_endpoint` (default the regional endpoint) signed for `region`
    /// (default [`aws_chain::region`]: `AWS_REGION`, `AWS_DEFAULT_REGION`, the
    /// profile's `region`, then `us-east-1`).
    pub fn resolve(region: Option<String>, sts_endpoint: Option<String>, env: &aws_chain::Env) -> Self {
        let region = region.unwrap_or_else(|| aws_chain::region(env));
        match sts_endpoint {
            Some(url) => Self { url, region },
            None => Self::regional(&region),
        }
    }
}

/// The `Join` payload: a signed `GetCallerIdentity` carrying `challenge` and
/// `server_name` (the host of the broker address this agent dialed, see
/// [`sts::server_name`]), as JSON. `now` is Unix seconds (the signature's date).
pub fn signed_request(creds: &AwsCredentials, target: &StsTarget, challenge: &str, server_name: &str, now: i64) -> Result<Vec<u8>, ClientJoinError> {
    let endpoint = Endpoint::parse(&target.url).map_err(ClientJoinError::Environment)?;
    let env = |e: sigv4::SigV4Error| ClientJoinError::Environment(e.to_string());
    let amz_date = sigv4::format_amz_date(now).map_err(env)?;
    let mut headers = vec![
        ("content-type".to_string(), sts::CONTENT_TYPE.to_string()),
        ("host".to_string(), endpoint.authority()),
        ("x-amz-date".to_string(), amz_date.clone()),
        (sts::CHALLENGE_HEADER.to_string(), challenge.to_string()),
        (sts::SERVER_NAME_HEADER.to_string(), server_name.to_string()),
    ];
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), t.expose_secret().to_string()));
    }
    headers.sort();
    let canonical = sigv4::canonical_request("POST", "/", "", &headers, sts::BODY.as_bytes());
    let scope = sigv4::credential_scope(&amz_date, &target.region, "sts").map_err(env)?;
    let string_to_sign = sigv4::string_to_sign(sigv4::HMAC_ALGORITHM, &amz_date, &scope, &canonical.request);
    let key = sigv4::hmac_signing_key(creds.secret_access_key.expose_secret(), sigv4::day_of(&amz_date).map_err(env)?, &target.region, "sts");
    let signature = sigv4::hmac_signature_hex(&key, &string_to_sign);
    headers.push((
        "authorization".into(),
        sigv4::authorization(sigv4::HMAC_ALGORITHM, &creds.access_key_id, &scope, &canonical.signed_headers, &signature),
    ));
    let body = serde_json::json!({"method": "POST", "url": endpoint.url(), "headers": headers, "body": sts::BODY});
    serde_json::to_vec(&body).map_err(|e| ClientJoinError::Environment(e.to_string()))
}

/// Joins with the `iam` method: `BeginJoin`, sign around the challenge and the
/// name of the broker `client` is connected to (`broker_addr`, as dialed), `Join`.
/// With a broker list (`a:8443,b:8443`) the first name is signed: every replica
/// must list it among its names.
pub async fn join(
    client: &mut SigilClient<Channel>,
    broker_addr: &str,
    params: &JoinParams,
    creds: &AwsCredentials,
    target: &StsTarget,
) -> Result<pb::IdentityResponse, ClientJoinError> {
    let first = broker_addr.split(',').next().unwrap_or(broker_addr);
    let server_name = sts::server_name(first).map_err(ClientJoinError::Environment)?;
    let ch = begin(client, sigil_core::domain::Method::Iam.name(), &params.token_name, Vec::new()).await?;
    let challenge = String::from_utf8(ch.payload).map_err(|_| ClientJoinError::Environment("broker challenge is not text".into()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let payload = signed_request(creds, target, &challenge, &server_name, now)?;
    finish(client, sigil_core::domain::Method::Iam.name(), params, ch.challenge_id, payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_request_passes_the_broker_checks_and_redacts_secrets() {
        let creds = AwsCredentials::new("AKIDEXAMPLE".into(), "secret-key-value".into(), Some("session-token-value".into()));
        let p = signed_request(&creds, &StsTarget::regional("eu-west-1"), "chal", "broker.example.org", 1_700_000_000).unwrap();
        let r = sts::check_request(&p, &sts::AllowedEndpoints::default(), "chal", &["broker.example.org".into()], 1_700_000_000).unwrap();
        assert_eq!(r.endpoint.host, "sts.eu-west-1.amazonaws.com");
        assert!(!String::from_utf8_lossy(&p).contains("secret-key-value"));
        assert!(!format!("{creds:?}").contains("secret-key-value") && !format!("{creds:?}").contains("session-token-value"));
    }

    #[test]
    fn signed_request_is_byte_for_byte_what_the_previous_signer_produced() {
        // Recorded from the signer before it moved onto `sigil_core::sigv4` (same inputs, same bytes).
        let creds = AwsCredentials::new("AKIDEXAMPLE".into(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(), Some("session-token-value".into()));
        let p = signed_request(&creds, &StsTarget::regional("eu-west-1"), "chal", "broker.example.org", 1_700_000_000).unwrap();
        let golden = r#"{"body":"Action=GetCallerIdentity&Version=2011-06-15","headers":[["content-type","application/x-www-form-urlencoded; charset=utf-8"],["host","sts.eu-west-1.amazonaws.com"],["x-amz-date","20231114T221320Z"],["x-amz-security-token","session-token-value"],["x-sigil-challenge","chal"],["x-sigil-server-name","broker.example.org"],["authorization","AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-sigil-challenge;x-sigil-server-name, Signature=125b54a90fde7b58338e4641d51d69b808572108cb0a135fefe7e361c89c5db5"]],"method":"POST","url":"https://sts.eu-west-1.amazonaws.com/"}"#;
        assert_eq!(String::from_utf8(p).unwrap(), golden);
    }
}
