//! Client certificates (bot identities) on the broker port, verified against
//! the internal CAs published *now*.
//!
//! Mistakes this prevents:
//! - trusting only the internal CA loaded at start: after rotation activates a
//!   new internal CA, identities it signs would be refused until a restart;
//! - trusting a retired internal CA until a restart: identities it signed
//!   (a stolen one among them) would keep connecting;
//! - a stale decision through session resumption: the server keeps no
//!   sessions and sends no tickets (see [`super::tls`]), so every handshake
//!   comes here.
//!
//! [`ClientTrust`] delegates to a rustls `WebPkiClientVerifier` built from
//! [`crate::ca::Authority::internal_roots`] and rebuilds it when a handshake
//! sees another [`AuthorityCell`] snapshot with other roots. A handshake costs
//! one snapshot read and a pointer comparison; the rebuild happens once per
//! change. Clients without a certificate are let through (joins, public
//! endpoints); each API call decides whether it needs an identity.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use crate::ca::{Authority, AuthorityCell};
use std::sync::{Arc, RwLock};

/// Most internal CA certificates trusted at once (rotation publishes at most
/// three: prepared, active, previous); more are ignored with an error logged.
pub const MAX_INTERNAL_ROOTS: usize = 8;

/// The verifier for one set of roots, or why there is none (every client
/// certificate is refused then).
type Built = Result<Arc<dyn ClientCertVerifier>, String>;

#[derive(Debug)]
struct Followed {
    seen: Arc<Authority>,
    roots: Vec<Vec<u8>>,
    verifier: Built,
}

/// Verifies client certificates against the internal CAs published in the
/// current [`AuthorityCell`] snapshot.
#[derive(Debug)]
pub struct ClientTrust {
    cell: Arc<AuthorityCell>,
    provider: Arc<CryptoProvider>,
    hints: Vec<DistinguishedName>,
    state: RwLock<Arc<Followed>>,
}

fn build(roots: &[Vec<u8>], provider: &Arc<CryptoProvider>) -> Built {
    if roots.len() > MAX_INTERNAL_ROOTS {
        tracing::error!(published = roots.len(), trusted = MAX_INTERNAL_ROOTS, "more internal CAs published than trusted for client certificates");
    }
    let mut store = RootCertStore::empty();
    let (_, bad) = store.add_parsable_certificates(roots.iter().take(MAX_INTERNAL_ROOTS).map(|d| CertificateDer::from(d.as_slice())));
    if bad > 0 {
        tracing::error!(unusable = bad, "an internal CA certificate is unusable as a trust anchor");
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .allow_unauthenticated()
        .build()
        .map(|v| v as Arc<dyn ClientCertVerifier>)
        .map_err(|e| {
            tracing::error!(error = %e, "no internal CA to verify client certificates with; every bot identity is refused");
            e.to_string()
        })
}

impl ClientTrust {
    /// Follows `cell`; the first verifier is built from its current roots.
    pub fn new(cell: Arc<AuthorityCell>, provider: Arc<CryptoProvider>) -> Self {
        let seen = cell.current();
        let verifier = build(&seen.internal_roots, &provider);
        // Every internal CA carries the same subject ("Sigil internal CA
        // <trust domain>"), so the names hinted at start stay right.
        let mut hints: Vec<DistinguishedName> = Vec::new();
        if let Ok(v) = &verifier {
            for h in v.root_hint_subjects() {
                if !hints.iter().any(|k| k.as_ref() == h.as_ref()) {
                    hints.push(h.clone());
                }
            }
        }
        let roots = seen.internal_roots.clone();
        Self { cell, provider, hints, state: RwLock::new(Arc::new(Followed { seen, roots, verifier })) }
    }

    /// The verifier for the authorities in use now (rebuilt if they changed).
    fn current(&self) -> Arc<Followed> {
        let now = self.cell.current();
        let held = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        if Arc::ptr_eq(&held.seen, &now) {
            return held;
        }
        let mut slot = self.state.write().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&slot.seen, &now) {
            return slot.clone();
        }
        let verifier = if slot.roots == now.internal_roots {
            slot.verifier.clone()
        } else {
            tracing::info!(internal_cas = now.internal_roots.len(), "client certificates now verified against the published internal CAs");
            build(&now.internal_roots, &self.provider)
        };
        let next = Arc::new(Followed { roots: now.internal_roots.clone(), seen: now, verifier });
        *slot = next.clone();
        next
    }
}

impl ClientCertVerifier for ClientTrust {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        match &self.current().verifier {
            Ok(v) => v.verify_client_cert(end_entity, intermediates, now),
            Err(_) => Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
