//! `x509-svid`: `svid.pem` (leaf), `svid.key` (PKCS#8), `bundle.pem` in a 0700 directory.
//!
//! The three files switch together ([`crate::atomic_dir`]): they are
//! symlinks through `..data`, which is re-pointed at a complete new generation
//! with one rename, so no reader ever sees a new key beside the old certificate.

use super::issue::{self, Target};
use super::{Output, OutputError};
use crate::config::X509Output;
use super::cloud_files::blocking;
use crate::atomic_dir;
use crate::schedule::Lifetime;
use crate::session::Session;
use sigil_core::safe_fs::Access;
use async_trait::async_trait;

/// The x509-svid output.
#[derive(Debug, Clone)]
pub struct X509SvidDir {
    cfg: X509Output,
    access: Access,
}

impl X509SvidDir {
    /// From config.
    pub fn new(cfg: X509Output, access: Access) -> Self {
        Self { cfg, access }
    }
}

#[async_trait]
impl Output for X509SvidDir {
    fn name(&self) -> String {
        format!("x509-svid:{}", self.cfg.dir.display())
    }

    fn carries_bundle(&self) -> bool {
        true
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let target = Target { spiffe_id: &self.cfg.spiffe_id, workload_identity: &self.cfg.workload_identity, ttl: self.cfg.ttl };
        let (kp, s) = issue::x509(session, target).await?;
        write_svid_dir(&self.cfg.dir, &s.certificate_pem, &kp.serialize_pem(), &s.bundle_pem, self.access).await?;
        Ok(Lifetime { received_at: session.now(), expires_at: s.expires_at })
    }
}

/// Writes one X.509-SVID generation (`svid.pem`, `svid.key`, `bundle.pem`) into `dir`, off the async workers.
pub(crate) async fn write_svid_dir(dir: &std::path::Path, cert_pem: &str, key_pem: &str, bundle_pem: &str, access: Access) -> Result<(), OutputError> {
    let (dir, cert, key, bundle) = (dir.to_path_buf(), cert_pem.to_string(), key_pem.to_string(), bundle_pem.to_string());
    blocking(move || {
        let files: [(&str, &[u8]); 3] = [("svid.pem", cert.as_bytes()), ("svid.key", key.as_bytes()), ("bundle.pem", bundle.as_bytes())];
        atomic_dir::write_with(&dir, &files, &access)
    })
    .await
}
