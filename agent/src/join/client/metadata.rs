//! Plain-HTTP GET to a cloud metadata endpoint (GCE metadata server, Azure
//! IMDS): link-local, unauthenticated, so no TLS; a required header proves the
//! request is not a browser or proxy forward. Sent through [`sigil_core::net::http`]:
//! bounded in size and time; no redirects followed.

use super::ClientJoinError;
use sigil_core::net::http::{Client, NetError, Request};
use sigil_core::net::policy::{Network, Policy, Redirects, Schemes};
use sigil_core::net::trust::Trust;
use std::time::Duration;

/// Largest metadata answer read.
pub const MAX_BYTES: usize = 64 * 1024;
/// Deadline of one metadata request.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// GETs `url` (`http://host[:port]/path?query`) with `headers`; returns the body of a 200.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Vec<u8>, ClientJoinError> {
    send(Request::get(url).headers(headers), TIMEOUT).await
}

/// Sends `req` (plain http://, private addresses allowed, no redirects
/// followed, at most [`MAX_BYTES`] read) within `timeout`; returns the body of a 200.
pub async fn send(req: Request, timeout: Duration) -> Result<Vec<u8>, ClientJoinError> {
    let url = req.url.clone();
    let err = |m: String| ClientJoinError::Environment(format!("metadata endpoint {url}: {m}"));
    let policy = Policy {
        schemes: Schemes::Http,
        network: Network::PrivateAllowed,
        redirects: Redirects::Returned,
        max_body_bytes: MAX_BYTES,
        timeout,
        // Never used: the policy only accepts http://.
        trust: Trust::public().map_err(|e| err(e.to_string()))?,
    };
    let r = Client::new(policy).send(req).await.map_err(|e| match e {
        NetError::Timeout { .. } => ClientJoinError::Environment(format!("metadata endpoint {url} did not answer within {} s", timeout.as_secs_f32())),
        NetError::Connect { source, .. } => err(source.to_string()),
        NetError::Protocol { detail, .. } => err(detail),
        other => err(other.to_string()),
    })?;
    if r.status != 200 {
        let status = http::StatusCode::from_u16(r.status).map(|s| s.to_string()).unwrap_or_else(|_| r.status.to_string());
        let text: String = String::from_utf8_lossy(&r.body).chars().take(200).collect();
        return Err(err(format!("HTTP {status}: {text}")));
    }
    Ok(r.body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn metadata_endpoints_are_plain_http_urls() {
        for url in ["https://169.254.169.254/metadata", "ftp://169.254.169.254/", "http://user@169.254.169.254/"] {
            let e = get(url, &[("Metadata", "true")]).await.unwrap_err().to_string();
            assert!(e.starts_with(&format!("metadata endpoint {url}: ")), "{e}");
        }
    }
}
