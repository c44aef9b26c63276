//! The chain's HTTP: [`sigil_core::net::http`] with a size cap, a deadline and
//! no redirects. Private addresses are allowed: credential endpoints are
//! link-local (169.254.170.2), loopback, or STS VPC endpoints; which URLs may
//! be used is decided by each source before sending (see [`super::container`]).

use sigil_core::net::http::{Client, Request, Response};
use sigil_core::net::policy::{Network, Policy, Redirects, Schemes};
use sigil_core::net::trust::Trust;
use std::time::Duration;

/// Largest answer read (credential documents are under 4 KiB).
pub(super) const MAX_BYTES: usize = 64 * 1024;

/// Sends `req` within `timeout`; the error names the URL, never a body.
pub(super) async fn send(req: Request, schemes: Schemes, timeout: Duration) -> Result<Response, String> {
    let trust = Trust::public().map_err(|e| e.to_string())?;
    let policy = Policy { schemes, network: Network::PrivateAllowed, redirects: Redirects::Returned, max_body_bytes: MAX_BYTES, timeout, trust };
    Client::new(policy).send(req).await.map_err(|e| e.to_string())
}
