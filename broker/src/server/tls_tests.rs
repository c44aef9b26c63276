//! Handshakes against the broker's TLS configuration while the internal CA
//! rotates (the [`AuthorityCell`] replaced as rotation does) and time passes
//! (injected clock): serving certificate and client certificate checks.
#![allow(clippy::unwrap_used)]

use super::serving_cert::{Reissue, ServingCert, ServingNames, SERVING_TTL_SECS};
use super::tls::{server_config, ClockTime};
use crate::ca::lifetime::Validity;
use crate::ca::x509::LeafKind;
use crate::ca::{Authority, AuthorityCell};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_core::clock::{Clock, ManualClock};
use sigil_core::keys::{KeyAlg, PrivateKey};
use std::sync::Arc;

use crate::test_rotation::{Rotation, T0};

/// A bot identity signed by `a`'s active internal CA: (chain, key).
fn identity_from(a: &Authority, now: i64) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = PrivateKey::generate(KeyAlg::EcP256).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key.rcgen().unwrap());
    let kind = LeafKind::BotIdentity { uri: "spiffe://example.org/sigil/bot/b".into(), bot: "b".into(), instance: "i".into(), generation: 1 };
    let leaf = a.internal.sign_leaf(&spki, &kind, Validity { not_before: now - 10, not_after: now + 3600 }).unwrap();
    (vec![CertificateDer::from(leaf)], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8().to_vec())))
}

/// What one handshake showed: the chain the client was served, and whether the
/// server accepted the client.
struct Outcome {
    served: Vec<CertificateDer<'static>>,
    accepted: Result<(), String>,
}

/// A TLS handshake in memory against `server`, the client trusting `trust`,
/// presenting `identity`, with `clock`'s time on both sides.
async fn handshake(
    server: &Arc<rustls::ServerConfig>,
    trust: &[Vec<u8>],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    clock: &ManualClock,
) -> Outcome {
    let mut roots = rustls::RootCertStore::empty();
    for d in trust {
        roots.add(CertificateDer::from(d.clone())).unwrap();
    }
    let time = Arc::new(ClockTime(Arc::new(clock.clone())));
    let b = rustls::ClientConfig::builder_with_details(super::tls::provider(), time)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let client = match identity {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
        None => b.with_no_client_auth(),
    };
    let (c, s) = tokio::io::duplex(1 << 16);
    let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let server_side = async move {
        use tokio::io::AsyncWriteExt;
        let mut tls = acceptor.accept(s).await.map_err(|e| e.to_string())?;
        // TLS 1.3: the client learns of a refused certificate only from what follows.
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())
    };
    let client_side = async move {
        use tokio::io::AsyncReadExt;
        let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), c).await.unwrap();
        let served = tls.get_ref().1.peer_certificates().unwrap().iter().map(|c| c.clone().into_owned()).collect();
        let mut buf = [0u8; 2];
        let _ = tls.read_exact(&mut buf).await;
        served
    };
    let (accepted, served) = tokio::join!(server_side, client_side);
    Outcome { served, accepted }
}

fn names() -> ServingNames {
    ServingNames { dns: vec!["localhost".into()], ips: vec![] }
}

fn setup(cell: &Arc<AuthorityCell>, clock: &ManualClock) -> (Arc<rustls::ServerConfig>, Arc<ServingCert>) {
    let (cfg, serving) = server_config(cell, names(), Arc::new(clock.clone())).unwrap();
    (Arc::new(cfg), serving)
}

fn not_after(der: &[u8]) -> i64 {
    x509_parser::parse_x509_certificate(der).unwrap().1.validity().not_after.timestamp()
}

#[tokio::test]
async fn after_activation_new_connections_are_served_a_certificate_from_the_new_internal_ca() {
    let r = Rotation::new().await;
    let clock = ManualClock::new(T0);
    let cell = Arc::new(AuthorityCell::new(r.prepared().await));
    let (server, serving) = setup(&cell, &clock);
    let a_der = cell.current().internal.cert_der.clone();
    let published = cell.current().internal_roots.clone();
    assert_eq!(published.len(), 2, "prepare publishes the new internal CA beside the active one");

    let before = handshake(&server, &published, None, &clock).await;
    assert_eq!(before.served[1].as_ref(), a_der.as_slice(), "before activation the active CA A issues");
    assert_eq!(serving.refresh(clock.now()).unwrap(), None, "nothing to reissue while A is active");

    cell.replace(r.activated().await);
    let b_der = cell.current().internal.cert_der.clone();
    assert_eq!(serving.refresh(clock.now()).unwrap(), Some(Reissue::CaChanged));
    // A client that trusts only the new CA (it joined after activation) connects.
    let after = handshake(&server, &[b_der.clone()], None, &clock).await;
    assert_eq!(after.served.len(), 2, "chain: leaf + issuing internal CA");
    assert_eq!(after.served[1].as_ref(), b_der.as_slice());
    assert!(crate::ca::x509::issued_by_any(after.served[0].as_ref(), std::slice::from_ref(&b_der)));
    assert!(!crate::ca::x509::issued_by_any(after.served[0].as_ref(), std::slice::from_ref(&a_der)));
}

#[tokio::test]
async fn a_handshake_that_sees_another_active_ca_wakes_the_reissue() {
    let r = Rotation::new().await;
    let clock = ManualClock::new(T0);
    let cell = Arc::new(AuthorityCell::new(r.prepared().await));
    let (server, serving) = setup(&cell, &clock);
    super::serving_cert::follow(&serving, Arc::new(clock.clone()));
    cell.replace(r.activated().await);
    let b_der = cell.current().internal.cert_der.clone();
    let trust = cell.current().internal_roots.clone();
    // The follower checks every second anyway; the handshake wakes it at once.
    let mut served_by_b = false;
    for _ in 0..50 {
        let o = handshake(&server, &trust, None, &clock).await;
        if o.served[1].as_ref() == b_der.as_slice() {
            served_by_b = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served_by_b, "the serving certificate was not reissued by the new active CA");
}

#[tokio::test]
async fn the_serving_certificate_is_reissued_before_it_expires_without_a_restart() {
    let r = Rotation::new().await;
    let clock = ManualClock::new(T0);
    let cell = Arc::new(AuthorityCell::new(r.prepared().await));
    let (server, serving) = setup(&cell, &clock);
    let trust = cell.current().internal_roots.clone();
    let first = handshake(&server, &trust, None, &clock).await.served;
    assert_eq!(not_after(first[0].as_ref()), T0 + SERVING_TTL_SECS);

    clock.advance(59 * 24 * 3600);
    assert_eq!(serving.refresh(clock.now()).unwrap(), None, "not due before two thirds of its lifetime");
    clock.advance(2 * 24 * 3600);
    assert_eq!(serving.refresh(clock.now()).unwrap(), Some(Reissue::Due));
    let second = handshake(&server, &trust, None, &clock).await.served;
    assert_ne!(first[0], second[0]);
    assert_eq!(not_after(second[0].as_ref()), clock.now() + SERVING_TTL_SECS);

    // Past the first certificate's NotAfter, clients still connect.
    clock.advance(40 * 24 * 3600);
    assert!(clock.now() > not_after(first[0].as_ref()));
    serving.refresh(clock.now()).unwrap();
    let later = handshake(&server, &trust, None, &clock).await;
    assert!(not_after(later.served[0].as_ref()) > clock.now());
}

#[tokio::test]
async fn identities_of_every_published_internal_ca_are_accepted_and_a_retired_ones_refused() {
    let r = Rotation::new().await;
    let clock = ManualClock::new(T0);
    let prepared = r.prepared().await;
    let old_identity = || identity_from(&prepared, T0);
    let cell = Arc::new(AuthorityCell::new(r.prepared().await));
    let (server, serving) = setup(&cell, &clock);
    let trust_all = cell.current().internal_roots.clone();

    assert!(handshake(&server, &trust_all, Some(old_identity()), &clock).await.accepted.is_ok(), "prepare: identity from A");
    assert!(handshake(&server, &trust_all, None, &clock).await.accepted.is_ok(), "no client certificate (join) is let through");

    cell.replace(r.activated().await);
    serving.refresh(clock.now()).unwrap();
    let activated = cell.current();
    let new_identity = || identity_from(&activated, T0);
    assert!(handshake(&server, &trust_all, Some(old_identity()), &clock).await.accepted.is_ok(), "activate: A is previous, still trusted");
    assert!(handshake(&server, &trust_all, Some(new_identity()), &clock).await.accepted.is_ok(), "activate: identity from B");

    cell.replace(r.retired().await);
    let refused = handshake(&server, &trust_all, Some(old_identity()), &clock).await.accepted;
    assert!(refused.is_err(), "retire: an identity signed by the retired CA A must be refused at the handshake");
    assert!(handshake(&server, &trust_all, Some(new_identity()), &clock).await.accepted.is_ok(), "retire: identity from B");

    // An identity from a CA that was never published.
    let stranger = Rotation::new().await.prepared().await;
    assert!(handshake(&server, &trust_all, Some(identity_from(&stranger, T0)), &clock).await.accepted.is_err());
}

#[tokio::test]
async fn no_session_is_resumed_so_a_retired_identity_cannot_reconnect_on_an_old_session() {
    let r = Rotation::new().await;
    let clock = ManualClock::new(T0);
    let cell = Arc::new(AuthorityCell::new(r.activated().await));
    let (server, _serving) = setup(&cell, &clock);
    assert_eq!(server.send_tls13_tickets, 0);
    assert!(!server.session_storage.can_cache());
}
