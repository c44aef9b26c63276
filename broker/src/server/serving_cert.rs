//! The broker's TLS serving certificate, reissued while the broker runs.
//!
//! Mistakes this prevents:
//! - a serving certificate issued once at start that expires (or outlives its
//!   CA's trust) while the broker keeps running: it is reissued at
//!   [`REISSUE_FRACTION`] of its lifetime, never needing a restart;
//! - a serving certificate from an internal CA that is no longer the active one:
//!   when rotation activates another internal CA (a new [`AuthorityCell`]
//!   snapshot), the next check reissues from it. Clients that renewed since the
//!   new CA was prepared already trust it (every identity response carries all
//!   published internal CAs);
//! - signing in the handshake path: handshakes only read the current
//!   certificate; reissuing happens in [`follow`]'s task, which a handshake
//!   wakes when it sees the active CA changed.
//!
//! The chain served is the leaf plus the internal CA that issued it.

use super::tls::TlsError;
use crate::ca::lifetime::Validity;
use crate::ca::x509::LeafKind;
use crate::ca::{Authority, AuthorityCell};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_core::clock::Clock;
use sigil_core::keys::{KeyAlg, PrivateKey};
use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// Serving certificate lifetime (capped at the issuing CA's NotAfter).
pub const SERVING_TTL_SECS: i64 = 90 * 24 * 3600;

/// The serving certificate's NotBefore lies this far before its issuance
/// (clients with a slightly slow clock).
pub const BACKDATE_SECS: i64 = 60;

/// A serving certificate is reissued once this fraction (numerator,
/// denominator) of its lifetime has passed.
pub const REISSUE_FRACTION: (i64, i64) = (2, 3);

/// At most one time-driven reissue per this many seconds, however short the
/// certificate (one whose CA is about to expire).
pub const MIN_REISSUE_INTERVAL_SECS: i64 = 60;

/// How often [`follow`]'s task checks whether a reissue is due.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// After a failed reissue, the next attempt waits this long.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// The names the serving certificate carries.
#[derive(Debug, Clone, Default)]
pub struct ServingNames {
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
}

/// When a certificate valid over `v`, issued at `issued_at`, is due for
/// reissue: at [`REISSUE_FRACTION`] of its lifetime, not sooner than
/// [`MIN_REISSUE_INTERVAL_SECS`] after issuance.
pub fn reissue_at(issued_at: i64, v: Validity) -> i64 {
    let (num, den) = REISSUE_FRACTION;
    let at = v.not_before + (v.not_after - v.not_before).max(0) / den * num;
    at.max(issued_at + MIN_REISSUE_INTERVAL_SECS)
}

/// Why a serving certificate is reissued, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reissue {
    /// Another internal CA is active now.
    CaChanged,
    /// [`reissue_at`] has passed.
    Due,
}

/// The reissue decision: the active CA first, then time.
pub fn reissue_needed(issuer_der: &[u8], active_ca_der: &[u8], reissue_at: i64, now: i64) -> Option<Reissue> {
    if issuer_der != active_ca_der {
        Some(Reissue::CaChanged)
    } else if now >= reissue_at {
        Some(Reissue::Due)
    } else {
        None
    }
}

/// One issued serving certificate.
#[derive(Debug)]
struct Issued {
    key: Arc<CertifiedKey>,
    issuer_der: Vec<u8>,
    validity: Validity,
    reissue_at: i64,
}

/// The current serving certificate: a rustls certificate resolver whose
/// certificate [`ServingCert::refresh`] replaces.
#[derive(Debug)]
pub struct ServingCert {
    cell: Arc<AuthorityCell>,
    names: ServingNames,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<Issued>>,
    // Wakes `follow`'s task (capacity 1: one pending wake is enough).
    wake: tokio::sync::mpsc::Sender<()>,
    woken: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<()>>>,
}

impl ServingCert {
    /// Issues the first serving certificate from the active internal CA.
    pub fn new(cell: Arc<AuthorityCell>, names: ServingNames, provider: Arc<rustls::crypto::CryptoProvider>, now: i64) -> Result<Self, TlsError> {
        let first = issue(&cell.current(), &names, &provider, now)?;
        let (wake, woken) = tokio::sync::mpsc::channel(1);
        Ok(Self { cell, names, provider, current: RwLock::new(Arc::new(first)), wake, woken: std::sync::Mutex::new(Some(woken)) })
    }

    fn issued(&self) -> Arc<Issued> {
        // A poisoned lock still holds a complete Arc (writers only swap it).
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reissues the certificate when [`reissue_needed`] says so for the
    /// authorities in use now; returns why it did.
    pub fn refresh(&self, now: i64) -> Result<Option<Reissue>, TlsError> {
        let authority = self.cell.current();
        let cur = self.issued();
        let Some(why) = reissue_needed(&cur.issuer_der, &authority.internal.cert_der, cur.reissue_at, now) else { return Ok(None) };
        let next = issue(&authority, &self.names, &self.provider, now)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(Some(why))
    }

    /// The chain served now (leaf first, then the issuing internal CA).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.issued().key.cert.clone()
    }

    /// The served certificate's validity.
    pub fn validity(&self) -> Validity {
        self.issued().validity
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cur = self.issued();
        if self.cell.current().internal.cert_der != cur.issuer_der {
            // Full: a wake is already pending. Closed: nobody follows.
            let _ = self.wake.try_send(());
        }
        Some(cur.key.clone())
    }
}

fn issue(authority: &Authority, names: &ServingNames, provider: &rustls::crypto::CryptoProvider, now: i64) -> Result<Issued, TlsError> {
    let key = PrivateKey::generate(KeyAlg::EcP256).map_err(|e| TlsError::Issue(e.to_string()))?;
    let kp = key.rcgen().map_err(|e| TlsError::Issue(e.to_string()))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    let ca = &authority.internal;
    let validity = Validity { not_before: now - BACKDATE_SECS, not_after: (now + SERVING_TTL_SECS).min(ca.not_after) };
    if validity.not_after <= now {
        return Err(TlsError::Issue("the active internal CA has expired; rotate it (sigil ca rotate --purpose internal)".into()));
    }
    let leaf = ca
        .sign_leaf(&spki, &LeafKind::Serving { dns: names.dns.clone(), ips: names.ips.clone() }, validity)
        .map_err(|e| TlsError::Issue(e.to_string()))?;
    let chain = vec![CertificateDer::from(leaf), CertificateDer::from(ca.cert_der.clone())];
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8().to_vec()));
    let certified = CertifiedKey::from_der(chain, der, provider).map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Issued { key: Arc::new(certified), issuer_der: ca.cert_der.clone(), validity, reissue_at: reissue_at(now, validity) })
}

/// Keeps `serving` current: checks every [`CHECK_INTERVAL`] (and at once when
/// a handshake saw the active CA change). The task ends when `serving` is
/// dropped (the TLS configuration that holds it is gone). Call once.
pub fn follow(serving: &Arc<ServingCert>, clock: Arc<dyn Clock>) {
    let Some(mut woken) = serving.woken.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
    let weak: Weak<ServingCert> = Arc::downgrade(serving);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECK_INTERVAL) => {}
                w = woken.recv() => if w.is_none() { return },
            }
            let Some(s) = weak.upgrade() else { return };
            match s.refresh(clock.now()) {
                Ok(None) => {}
                Ok(Some(why)) => {
                    let v = s.validity();
                    tracing::info!(reason = ?why, not_after = v.not_after, "serving certificate reissued");
                    if v.not_after < clock.now() + SERVING_TTL_SECS / 2 {
                        tracing::warn!(not_after = v.not_after, "serving certificate capped by the internal CA's expiry; rotate the internal CA (sigil ca rotate --purpose internal)");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reissue the serving certificate; the current one stays in use");
                    drop(s);
                    tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reissue_falls_at_two_thirds_of_the_lifetime() {
        let v = Validity { not_before: 1_000, not_after: 1_000 + 90 * 24 * 3600 };
        assert_eq!(reissue_at(1_060, v), 1_000 + 60 * 24 * 3600);
    }

    #[test]
    fn a_certificate_capped_by_a_nearly_expired_ca_is_not_reissued_more_than_once_a_minute() {
        let v = Validity { not_before: 1_000, not_after: 1_090 };
        assert_eq!(reissue_at(1_060, v), 1_060 + MIN_REISSUE_INTERVAL_SECS);
    }

    #[test]
    fn another_active_ca_reissues_at_once_and_time_reissues_only_when_due() {
        assert_eq!(reissue_needed(b"a", b"b", 2_000, 1_000), Some(Reissue::CaChanged));
        assert_eq!(reissue_needed(b"a", b"a", 2_000, 1_999), None);
        assert_eq!(reissue_needed(b"a", b"a", 2_000, 2_000), Some(Reissue::Due));
    }
}
