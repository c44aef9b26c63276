//! Asking the broker for the SVIDs outputs write: shared by the plain SVID
//! outputs and the cloud outputs so every request names its target the same way.

use super::{broker_err, OutputError};
use crate::config::Dur;
use crate::session::Session;
use sigil_schemas::sigil::v1 as pb;

/// What an output asks for: a SPIFFE ID or a workload identity, and a lifetime.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    /// SPIFFE ID to request.
    pub spiffe_id: &'a Option<String>,
    /// Or a workload identity name.
    pub workload_identity: &'a Option<String>,
    /// Requested lifetime.
    pub ttl: Option<Dur>,
}

impl Target<'_> {
    fn describe(&self) -> String {
        self.spiffe_id.clone().or_else(|| self.workload_identity.clone().map(|w| format!("workload identity {w}"))).unwrap_or_default()
    }
}

/// Issues a JWT-SVID for `audiences`.
pub(crate) async fn jwt(session: &Session, t: Target<'_>, audiences: Vec<String>) -> Result<pb::JwtSvid, OutputError> {
    let mut c = session.client().await?;
    c.issue_jwt_svid(pb::IssueJwtSvidRequest {
        spiffe_id: t.spiffe_id.clone().unwrap_or_default(),
        workload_identity: t.workload_identity.clone().unwrap_or_default(),
        audiences,
        ttl_seconds: Dur::secs(t.ttl),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
    .map_err(|s| broker_err(format!("JWT-SVID for {}", t.describe()), s))
}

/// Generates a key here and issues an X.509-SVID for it.
pub(crate) async fn x509(session: &Session, t: Target<'_>) -> Result<(rcgen::KeyPair, pb::X509Svid), OutputError> {
    let (kp, csr) = sigil_core::csr::key_and_csr().map_err(|e| OutputError::Key(e.to_string()))?;
    let mut c = session.client().await?;
    let s = c
        .issue_x509_svid(pb::IssueX509SvidRequest {
            csr,
            spiffe_id: t.spiffe_id.clone().unwrap_or_default(),
            workload_identity: t.workload_identity.clone().unwrap_or_default(),
            ttl_seconds: Dur::secs(t.ttl),
            ..Default::default()
        })
        .await
        .map_err(|s| broker_err(format!("X.509-SVID for {}", t.describe()), s))?
        .into_inner();
    Ok((kp, s))
}
