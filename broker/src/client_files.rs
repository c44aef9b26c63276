//! The files for clients in the data directory, kept in step with the
//! published CAs while the broker runs:
//!
//! ```text
//! DATA_DIR/
//!   tls-ca.pem       every published internal CA (what clients trust for the broker's TLS)
//!   bundle.pem       every published X.509-SVID CA
//!   admin.identity   the admin identity: certificate, key, then tls-ca.pem's CAs
//! ```
//!
//! Mistakes this prevents: after an internal CA rotation, the admin CLI (which
//! trusts the CAs inside its identity file) and anything reading `tls-ca.pem`
//! refusing the broker's new serving certificate, and an admin identity signed
//! by a CA that is later retired. When the [`AuthorityCell`] snapshot changes,
//! the PEM files are rewritten if their contents changed, and a still valid
//! admin identity is brought up to date: its CA section is replaced, and when
//! it was not signed by the active internal CA it is reissued by the active one
//! with the same expiry (a new instance of the admin bot, as at start). An
//! expired or missing admin identity is left alone: only a start issues one.
//! Every write is atomic (mode 0600).
//!
//! [`AuthorityCell`]: crate::ca::AuthorityCell

use crate::ca::{x509, Authority};
use crate::service::Broker;
use sigil_core::fsutil::{read_private_text, write_private, FsError, MAX_PRIVATE_READ};
use sigil_schemas::identity::Identity;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the authorities in use are compared with the ones the files were
/// written for.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// After a failed update, the next attempt waits this long.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// An admin identity with less than this left is not reissued (it expires
/// before anyone could use it).
pub const MIN_REISSUE_LEFT_SECS: i64 = 60;

/// Updating the files failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientFilesError {
    /// Reading or writing a file.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Issuing the admin identity.
    #[error("cannot reissue the admin identity: {0}")]
    Issue(String),
    /// A blocking file task failed.
    #[error("file task failed: {0}")]
    Task(String),
}

/// What to do with an admin identity found in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminUpdate {
    /// Nothing: up to date, expired, or not an identity.
    Keep,
    /// Same certificate and key; the CA section becomes this.
    NewCas(String),
    /// Reissue by the active internal CA, for this many seconds (its expiry stays).
    Reissue(i64),
}

/// The decision for an admin identity file's text at `now`.
pub fn admin_update(text: &str, authority: &Authority, now: i64) -> AdminUpdate {
    let Ok(id) = Identity::from_pem(text) else { return AdminUpdate::Keep };
    let Ok((_, not_after)) = id.subject() else { return AdminUpdate::Keep };
    let Some(der) = sigil_core::pem::certificate_ders(&id.cert_pem, "the admin identity").ok().and_then(|d| d.into_iter().next()) else {
        return AdminUpdate::Keep;
    };
    let left = not_after - now;
    if left <= 0 {
        return AdminUpdate::Keep;
    }
    if !x509::issued_by_any(&der, std::slice::from_ref(&authority.internal.cert_der)) {
        return if left >= MIN_REISSUE_LEFT_SECS { AdminUpdate::Reissue(left) } else { AdminUpdate::Keep };
    }
    let cas = authority.internal_ca_pem();
    if id.ca_pem == cas {
        AdminUpdate::Keep
    } else {
        AdminUpdate::NewCas(cas)
    }
}

/// The data directory's client files.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    dir: PathBuf,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, FsError> + Send + 'static) -> Result<T, ClientFilesError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ClientFilesError::Task(e.to_string()))?.map_err(Into::into)
}

/// Writes `text` to `path` unless it already holds exactly that.
fn write_if_changed(path: &Path, text: &str) -> Result<bool, FsError> {
    if read_private_text(path, MAX_PRIVATE_READ)?.as_deref() == Some(text) {
        return Ok(false);
    }
    write_private(path, text.as_bytes())?;
    Ok(true)
}

impl ClientFiles {
    /// The files in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.to_path_buf() }
    }

    /// Path of the admin identity.
    pub fn admin_identity(&self) -> PathBuf {
        self.dir.join(crate::data_dir::ADMIN_IDENTITY)
    }

    /// Brings every file up to date with `broker`'s current authorities.
    pub async fn update(&self, broker: &Broker) -> Result<(), ClientFilesError> {
        let authority = broker.authority.current();
        for (name, text) in [("tls-ca.pem", authority.internal_ca_pem()), ("bundle.pem", authority.x509_bundle_pem())] {
            let path = self.dir.join(name);
            if blocking(move || write_if_changed(&path, &text)).await? {
                tracing::info!(file = name, "rewritten: the published CAs changed");
            }
        }
        let path = self.admin_identity();
        let p = path.clone();
        let Some(text) = blocking(move || read_private_text(&p, MAX_PRIVATE_READ)).await? else { return Ok(()) };
        match admin_update(&text, &authority, broker.now()) {
            AdminUpdate::Keep => {}
            AdminUpdate::NewCas(cas) => {
                let Ok(id) = Identity::from_pem(&text) else { return Ok(()) };
                let next = Identity::new(id.cert_pem.clone(), id.key_pem().to_string(), cas).to_pem();
                blocking(move || write_private(&path, next.as_bytes())).await?;
                tracing::info!("admin identity: CA certificates updated (the published internal CAs changed)");
            }
            AdminUpdate::Reissue(ttl) => {
                let b = crate::bootstrap::admin_issuer(broker, ttl);
                crate::bootstrap::write_admin_identity(&b, &path, ttl).await.map_err(|e| ClientFilesError::Issue(e.to_string()))?;
                tracing::info!(ttl, "admin identity reissued by the active internal CA");
            }
        }
        Ok(())
    }
}

/// Keeps `files` in step with `broker`'s authorities: checks every
/// [`CHECK_INTERVAL`] whether the snapshot changed and updates the files when
/// it did. The task ends when the broker is dropped.
pub fn follow(files: ClientFiles, broker: &Arc<Broker>) {
    let weak: Weak<Broker> = Arc::downgrade(broker);
    // Weak: the snapshot's allocation (so no other can take its address) but
    // not its keys stay alive.
    let mut seen: Weak<Authority> = Arc::downgrade(&broker.authority.current());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            let Some(b) = weak.upgrade() else { return };
            let now = b.authority.current();
            if std::ptr::eq(Arc::as_ptr(&now), seen.as_ptr()) {
                continue;
            }
            match files.update(&b).await {
                Ok(()) => seen = Arc::downgrade(&now),
                Err(e) => {
                    tracing::error!(error = %e, "cannot update the client files in the data directory; retrying");
                    drop(b);
                    tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ca::lifetime::Validity;
    use crate::ca::x509::LeafKind;
    use crate::test_rotation::{Rotation, T0};
    use sigil_schemas::identity::to_pem;

    /// An admin identity file signed by `a`'s active internal CA, valid an hour.
    fn admin_file(a: &Authority) -> String {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
        let kind = LeafKind::BotIdentity { uri: "spiffe://example.org/sigil/bot/admin".into(), bot: "admin".into(), instance: "i".into(), generation: 1 };
        let der = a.internal.sign_leaf(&spki, &kind, Validity { not_before: T0 - 10, not_after: T0 + 3600 }).unwrap();
        Identity::new(to_pem("CERTIFICATE", &der), kp.serialize_pem(), a.internal_ca_pem()).to_pem()
    }

    #[tokio::test]
    async fn the_admin_identity_follows_the_internal_ca_rotation() {
        let r = Rotation::new().await;
        let before = r.phase(Some("active"), None).await;
        let text = admin_file(&before);
        assert_eq!(admin_update(&text, &before, T0), AdminUpdate::Keep, "up to date");

        let prepared = r.prepared().await;
        match admin_update(&text, &prepared, T0) {
            AdminUpdate::NewCas(cas) => assert_eq!(sigil_core::pem::certificate_ders(&cas, "t").unwrap().len(), 2, "both published internal CAs"),
            other => panic!("prepare: expected the CA section to be replaced, got {other:?}"),
        }
        let activated = r.activated().await;
        assert_eq!(admin_update(&text, &activated, T0 + 100), AdminUpdate::Reissue(3500), "signed by the previous CA: reissued, same expiry");
        assert_eq!(admin_update(&text, &r.retired().await, T0 + 100), AdminUpdate::Reissue(3500));
    }

    #[tokio::test]
    async fn an_expired_or_nearly_expired_admin_identity_is_left_alone() {
        let r = Rotation::new().await;
        let text = admin_file(&r.phase(Some("active"), None).await);
        let activated = r.activated().await;
        assert_eq!(admin_update(&text, &activated, T0 + 3600), AdminUpdate::Keep);
        assert_eq!(admin_update(&text, &activated, T0 + 3600 - MIN_REISSUE_LEFT_SECS + 1), AdminUpdate::Keep);
        assert_eq!(admin_update("not an identity", &activated, T0), AdminUpdate::Keep);
    }
}
