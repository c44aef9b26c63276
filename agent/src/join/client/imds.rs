//! EC2 instance metadata service, IMDSv2 only: a session token from
//! `PUT /latest/api/token`, then GETs carrying it. IMDSv1 (plain GETs) is
//! never tried: an instance that still answers it lets any SSRF on the
//! machine read its role credentials, and falling back would hide that the
//! token step failed.
//!
//! The PUT answer leaves the instance with the IP TTL set to the instance's
//! `HttpPutResponseHopLimit` (default 1 on new instances): a container on a
//! bridge network is one hop further and gets no token unless the limit is
//! 2 (`aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2`).
//! The error says so.
//!
//! Where the service is, as the AWS SDKs decide: `AWS_EC2_METADATA_SERVICE_ENDPOINT`
//! (a URL), else `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6` ->
//! `http://[fd00:ec2::254]`, else `http://169.254.169.254`.
//! `AWS_EC2_METADATA_DISABLED=true` turns it off.

use super::{metadata, ClientJoinError};
use sigil_core::net::http::Request;
use std::time::Duration;

/// The IPv4 endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// The IPv6 endpoint (Nitro instances).
pub const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";
/// Lifetime asked for a session token, seconds (the SDKs ask 6 h).
pub const TOKEN_TTL_SECONDS: u32 = 21_600;
/// Deadline of one metadata request: short, as the SDKs' 1 s, since a
/// machine that is not on EC2 has nothing there and the chain must move on.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// An IMDSv2 endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imds {
    /// Base URL without a trailing slash.
    pub endpoint: String,
    /// Deadline of each request.
    pub timeout: Duration,
}

/// A session token (secret: Debug hides it).
#[derive(Clone)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl Imds {
    /// The endpoint `endpoint` (a base URL).
    pub fn new(endpoint: &str) -> Self {
        Self { endpoint: endpoint.trim_end_matches('/').to_string(), timeout: TIMEOUT }
    }

    /// The endpoint the environment names (see the module docs), or `None`
    /// when `AWS_EC2_METADATA_DISABLED` is `true`.
    pub fn from_env() -> Option<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`Imds::from_env`] over any variable lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let get = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if get("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        if let Some(e) = get("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
            return Some(Self::new(&e));
        }
        let v6 = get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE").is_some_and(|m| m.eq_ignore_ascii_case("ipv6"));
        Some(Self::new(if v6 { IPV6_ENDPOINT } else { DEFAULT_ENDPOINT }))
    }

    /// `PUT /latest/api/token`.
    pub async fn session_token(&self) -> Result<SessionToken, ClientJoinError> {
        let url = format!("{}/latest/api/token", self.endpoint);
        let req = Request { method: http::Method::PUT, url, headers: vec![("x-aws-ec2-metadata-token-ttl-seconds".into(), TOKEN_TTL_SECONDS.to_string())], body: Vec::new() };
        let body = metadata::send(req, self.timeout).await.map_err(|e| {
            ClientJoinError::Environment(format!(
                "{e} (IMDSv2 session token; in a container, the instance's metadata hop limit must be 2: \
                 aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2)"
            ))
        })?;
        let t = String::from_utf8(body).map_err(|_| ClientJoinError::Environment("IMDS session token is not text".into()))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(ClientJoinError::Environment("IMDS returned an empty session token".into()));
        }
        Ok(SessionToken(t.to_string()))
    }

    /// `GET path` (e.g. `/latest/meta-data/iam/security-credentials/`) with `token`.
    pub async fn get(&self, token: &SessionToken, path: &str) -> Result<Vec<u8>, ClientJoinError> {
        let url = format!("{}{}", self.endpoint, path);
        metadata::send(Request::get(url).header("x-aws-ec2-metadata-token", token.0.clone()), self.timeout).await
    }

    /// `GET path` as text (trimmed).
    pub async fn get_text(&self, token: &SessionToken, path: &str) -> Result<String, ClientJoinError> {
        let body = self.get(token, path).await?;
        String::from_utf8(body).map(|s| s.trim().to_string()).map_err(|_| ClientJoinError::Environment(format!("IMDS {path} is not text")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Option<Imds> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Imds::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn the_endpoint_follows_the_sdk_variables() {
        assert_eq!(from(&[]).unwrap().endpoint, DEFAULT_ENDPOINT);
        assert_eq!(from(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")]).unwrap().endpoint, IPV6_ENDPOINT);
        assert_eq!(from(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/")]).unwrap().endpoint, "http://127.0.0.1:9");
        assert!(from(&[("AWS_EC2_METADATA_DISABLED", "TRUE"), ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://x")]).is_none());
        assert!(from(&[("AWS_EC2_METADATA_DISABLED", "false")]).is_some());
    }

    #[test]
    fn the_session_token_is_not_printed() {
        assert!(!format!("{:?}", SessionToken("secret-imds-token".into())).contains("secret"));
    }
}
