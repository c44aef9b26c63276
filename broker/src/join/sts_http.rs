//! Sends a rebuilt `GetCallerIdentity` request to an allow-listed STS endpoint.
//!
//! One request, one connection: no redirects are followed (a 3xx is an error),
//! the response is read up to [`sts::MAX_RESPONSE_BYTES`], the whole exchange
//! is bounded by [`TIMEOUT`]. HTTPS uses the Mozilla roots (webpki-roots).

use super::sts::{self, Scheme, StsRequest};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
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
    tokio::time::timeout(TIMEOUT, exchange(req)).await.map_err(|_| StsHttpError::Timeout(url))?
}

async fn exchange(req: &StsRequest) -> Result<StsResponse, StsHttpError> {
    let url = req.endpoint.url();
    let connect_err = |m: String| StsHttpError::Connect { url: url.clone(), message: m };
    let tcp = tokio::net::TcpStream::connect((req.endpoint.host.as_str(), req.endpoint.port))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let request = build(req).map_err(|m| StsHttpError::Exchange { url: url.clone(), message: m })?;
    match req.endpoint.scheme {
        Scheme::Http => round_trip(TokioIo::new(tcp), request, &url).await,
        Scheme::Https => {
            let name = rustls_pki_types::ServerName::try_from(req.endpoint.host.clone()).map_err(|e| connect_err(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(tls_config().map_err(|e| connect_err(e.to_string()))?).connect(name, tcp).await.map_err(|e| connect_err(e.to_string()))?;
            round_trip(TokioIo::new(tls), request, &url).await
        }
    }
}

fn build(req: &StsRequest) -> Result<http::Request<Full<&'static [u8]>>, String> {
    let mut b = http::Request::post("/");
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.header("content-length", sts::BODY.len()).body(Full::new(sts::BODY.as_bytes())).map_err(|e| e.to_string())
}

async fn round_trip<T>(io: TokioIo<T>, request: http::Request<Full<&'static [u8]>>, url: &str) -> Result<StsResponse, StsHttpError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let err = |m: String| StsHttpError::Exchange { url: url.to_string(), message: m };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| err(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(request).await.map_err(|e| err(e.to_string()));
    let out = match resp {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), sts::MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| err(format!("reading the response: {e}")))?
                .to_bytes()
                .to_vec();
            Ok(StsResponse { status, body })
        }
        Err(e) => Err(e),
    };
    driver.abort();
    out
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(Arc::new(rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_root_certificates(roots).with_no_client_auth()))
}
