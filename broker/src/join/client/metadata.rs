//! Plain-HTTP GET to a cloud metadata endpoint (GCE metadata server, Azure
//! IMDS): link-local, unauthenticated, so no TLS; a required header proves the
//! request is not a browser or proxy forward. Bounded in size and time; no
//! redirects followed.

use super::ClientJoinError;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Largest metadata answer read.
pub const MAX_BYTES: usize = 64 * 1024;
/// Deadline of one metadata request.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// GETs `url` (`http://host[:port]/path?query`) with `headers`; returns the body of a 200.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Vec<u8>, ClientJoinError> {
    tokio::time::timeout(TIMEOUT, fetch(url, headers))
        .await
        .map_err(|_| ClientJoinError::Environment(format!("metadata endpoint {url} did not answer within 10 s")))?
}

async fn fetch(url: &str, headers: &[(&str, &str)]) -> Result<Vec<u8>, ClientJoinError> {
    let err = |m: String| ClientJoinError::Environment(format!("metadata endpoint {url}: {m}"));
    let uri: http::Uri = url.parse().map_err(|_| err("not a URL".into()))?;
    if uri.scheme_str() != Some("http") {
        return Err(err("must be an http:// URL".into()));
    }
    let auth = uri.authority().ok_or_else(|| err("no host".into()))?.clone();
    let tcp = tokio::net::TcpStream::connect((auth.host(), auth.port_u16().unwrap_or(80))).await.map_err(|e| err(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| err(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = http::Request::get(path).header("host", auth.as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| err(e.to_string()))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BYTES).collect().await.map_err(|e| err(e.to_string()))?.to_bytes().to_vec();
        if status != http::StatusCode::OK {
            let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(err(format!("HTTP {status}: {text}")));
        }
        Ok(body)
    }
    .await;
    driver.abort();
    result
}
