//! Source 4: container credentials, the ECS task role and EKS Pod Identity.
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is a path on
//! `http://169.254.170.2` (ECS); otherwise `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! (EKS Pod Identity: `http://169.254.170.23/v1/credentials`), which over plain
//! http may only name the hosts the SDKs allow: loopback, 169.254.170.2,
//! 169.254.170.23 and fd00:ec2::23 (a full URI to anywhere else would send the
//! authorization token in clear text to whoever the variable names).
//! The `Authorization` header is the content of
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (re-read every time: EKS rotates
//! it) or `AWS_CONTAINER_AUTHORIZATION_TOKEN`.

use super::{http, json, read_token_file, ChainError, Env, Outcome, Source};
use async_trait::async_trait;
use sigil_core::net::http::Request;
use sigil_core::net::policy::{Schemes, Target};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// The ECS credentials host.
pub const ECS_HOST: &str = "http://169.254.170.2";
/// Deadline of one request (the SDKs use a few seconds).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest authorization token file read.
pub const MAX_TOKEN_BYTES: u64 = 16 * 1024;

/// The container credentials source.
#[derive(Debug, Clone)]
pub struct Container {
    env: Env,
}

impl Container {
    /// Reads `env`.
    pub fn new(env: Env) -> Self {
        Self { env }
    }

    /// The URL to ask and the variable that named it; `None` when neither is set.
    fn url(&self) -> Result<Option<(String, &'static str)>, String> {
        if let Some(rel) = self.env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            if !rel.starts_with('/') {
                return Err("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with /".into());
            }
            return Ok(Some((format!("{ECS_HOST}{rel}"), "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")));
        }
        let Some(full) = self.env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") else { return Ok(None) };
        let t = Target::parse(&full, Schemes::HttpsOrHttp).map_err(|e| format!("AWS_CONTAINER_CREDENTIALS_FULL_URI: {e}"))?;
        if !t.tls && !allowed_http_host(&t.host) {
            return Err(format!(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI: plain http only to loopback, 169.254.170.2, 169.254.170.23 or fd00:ec2::23, not {}",
                t.host
            ));
        }
        Ok(Some((full, "AWS_CONTAINER_CREDENTIALS_FULL_URI")))
    }

    /// The `Authorization` value, if any.
    fn authorization(&self) -> Result<Option<String>, String> {
        let value = match self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(f) => read_token_file(Path::new(&f), MAX_TOKEN_BYTES).map_err(|e| format!("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: {e}"))?,
            None => match self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        if value.contains(['\r', '\n']) {
            return Err("the container authorization token contains a line break".into());
        }
        Ok(Some(value))
    }
}

/// Whether plain http may go to `host` (an IP literal or `localhost`).
pub fn allowed_http_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"].iter().any(|a| a.parse::<IpAddr>().ok() == Some(ip)),
        Err(_) => false,
    }
}

#[async_trait]
impl Source for Container {
    fn name(&self) -> String {
        "container credentials".into()
    }

    async fn fetch(&self) -> Result<Outcome, ChainError> {
        let fail = |e: String| ChainError::failed(self.name(), e);
        let Some((url, var)) = self.url().map_err(fail)? else {
            return Ok(Outcome::Absent("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI not set".into()));
        };
        let mut req = Request::get(url.clone());
        if let Some(a) = self.authorization().map_err(fail)? {
            req = req.header("authorization", a);
        }
        let r = http::send(req, Schemes::HttpsOrHttp, TIMEOUT).await.map_err(|e| fail(format!("{var}: {e}")))?;
        if r.status != 200 {
            return Err(fail(format!("{var}: {url} answered HTTP {}", r.status)));
        }
        let (f, _) = json::parse(&r.body, "Token").map_err(|e| fail(format!("{var}: {url}: {e}")))?;
        Ok(Outcome::Found(f))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plain_http_only_to_the_hosts_the_sdks_allow() {
        for h in ["127.0.0.1", "127.1.2.3", "[::1]", "localhost", "169.254.170.2", "169.254.170.23", "[fd00:ec2::23]"] {
            assert!(allowed_http_host(h), "{h}");
        }
        for h in ["169.254.169.254", "10.0.0.1", "example.com", "[fd00:ec2::254]"] {
            assert!(!allowed_http_host(h), "{h}");
        }
    }

    #[tokio::test]
    async fn a_full_uri_elsewhere_over_http_is_refused_before_sending() {
        let c = Container::new(Env::from_pairs(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.1.2.3/creds"), ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok")]));
        let e = c.fetch().await.unwrap_err().to_string();
        assert!(e.contains("container credentials") && e.contains("plain http only to loopback") && e.contains("10.1.2.3"), "{e}");
        assert!(matches!(Container::new(Env::from_pairs(&[])).fetch().await.unwrap(), Outcome::Absent(_)));
    }

    #[tokio::test]
    async fn a_configured_endpoint_that_does_not_answer_is_an_error_naming_the_variable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Container::new(Env::from_pairs(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", &format!("http://127.0.0.1:{port}/creds"))]));
        let e = c.fetch().await.unwrap_err().to_string();
        assert!(e.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "{e}");
        let c = Container::new(Env::from_pairs(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/"), ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/nonexistent/t")]));
        let e = c.fetch().await.unwrap_err().to_string();
        assert!(e.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") && e.contains("/nonexistent/t"), "{e}");
    }
}
