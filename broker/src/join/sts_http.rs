//! Sends a rebuilt `GetCallerIdentity` request to an allow-listed STS endpoint.
//!
//! One request, one connection, through [`sigil_core::net::http`]: no redirects are
//! followed (a 3xx is returned, and refused by [`sts::parse_response`]), the
//! response is read up to [`sts::MAX_RESPONSE_BYTES`], the whole exchange is
//! bounded by [`TIMEOUT`]. HTTPS uses the Mozilla roots (webpki-roots). Plain
//! HTTP and private addresses are reachable only because the endpoint was
//! already checked against the join token's allow-list.

use super::sts::{self, StsRequest};
use sigil_core::net::http::{Client, NetError, Request};
use sigil_core::net::policy::{Network, Policy, Redirects, Schemes};
use sigil_core::net::trust::Trust;
use std::time::Duration;

/// Bound on connect + request + response.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why STS could not be asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StsHttpError {
    /// TCP or TLS connection failed.
    #[error("cannot reach STS at {url}: {message}")]
    Connect {
        /// Endpoint URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// The HTTP exchange failed or the response was too large.
    #[error("STS request to {url} failed: {message}")]
    Exchange {
        /// Endpoint URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// No answer within [`TIMEOUT`].
    #[error("STS at {0} did not answer within 10 s")]
    Timeout(String),
}

/// Status code and body of STS's answer.
#[derive(Debug)]
pub struct StsResponse {
    /// HTTP status.
    pub status: u16,
    /// Body, at most [`sts::MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
}

/// Posts `req` to its (already allow-listed) endpoint.
pub async fn send(req: &StsRequest) -> Result<StsResponse, StsHttpError> {
    let url = req.endpoint.url();
    let connect_err = |m: String| StsHttpError::Connect { url: url.clone(), message: m };
    let policy = Policy {
        schemes: Schemes::HttpsOrHttp,
        network: Network::PrivateAllowed,
        redirects: Redirects::Returned,
        max_body_bytes: sts::MAX_RESPONSE_BYTES,
        timeout: TIMEOUT,
        trust: Trust::public().map_err(|e| connect_err(e.to_string()))?,
    };
    let request = Request::post(url.clone(), sts::BODY.as_bytes().to_vec()).headers(&req.headers);
    match Client::new(policy).send(request).await {
        Ok(r) => Ok(StsResponse { status: r.status, body: r.body }),
        Err(NetError::Timeout { .. }) => Err(StsHttpError::Timeout(url)),
        Err(NetError::Protocol { detail, .. }) => Err(StsHttpError::Exchange { url, message: detail }),
        Err(NetError::TooLarge { .. }) => Err(StsHttpError::Exchange { url, message: "reading the response: length limit exceeded".into() }),
        Err(NetError::Connect { source, .. } | NetError::Tls { source, .. }) => Err(connect_err(source.to_string())),
        Err(other) => Err(connect_err(other.to_string())),
    }
}
