//! The internal CA rotated on one replica reaches the other's TLS without a
//! restart: B serves a certificate from the CA activated on A, B's data
//! directory files follow (tls-ca.pem, admin.identity), and B refuses an
//! identity of the CA retired on A.
#![allow(clippy::unwrap_used)]

mod common;

use common::replicas_on_postgres;
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// One store change poll (0.5 s), the CA reload tick (0.25 s), the TLS and
/// data directory checks (1 s each), with room for a loaded CI machine.
const FOLLOW_BOUND: Duration = Duration::from_secs(10);

async fn rotate(c: &mut SigilClient<Channel>, phase: &str, force: bool) {
    c.rotate_ca(pb::RotateCaRequest { purpose: "internal".into(), phase: phase.into(), force }).await.unwrap();
}

fn pem_ders(pem: &str) -> Vec<Vec<u8>> {
    sigil_core::pem::certificate_ders(pem, "test").unwrap()
}

/// The chain a new TLS connection to `addr` is served, the client trusting `ca_der` only.
async fn served_chain(addr: &str, ca_der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca_der.to_vec())).unwrap();
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    Ok(s.get_ref().1.peer_certificates().unwrap().iter().map(|c| c.as_ref().to_vec()).collect())
}

async fn within<F, Fut>(what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < FOLLOW_BOUND, "{what}: not within {FOLLOW_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_serves_the_internal_ca_activated_on_one_and_refuses_the_retired_ones_identities() {
    let (a, b, _url) = replicas_on_postgres(|_| {}).await;
    let mut ca = a.admin().await;
    let old = pem_ders(&std::fs::read_to_string(b.path("tls-ca.pem")).unwrap()).remove(0);

    rotate(&mut ca, "prepare", false).await;
    let tls_ca = b.path("tls-ca.pem");
    let took = within("B's tls-ca.pem with both internal CAs", || {
        let p = tls_ca.clone();
        async move { pem_ders(&std::fs::read_to_string(p).unwrap()).len() == 2 }
    })
    .await;
    eprintln!("B rewrote tls-ca.pem {took:?} after prepare on A");
    let new = pem_ders(&std::fs::read_to_string(&tls_ca).unwrap()).into_iter().find(|d| *d != old).unwrap();
    let before = Identity::load(&b.path("admin.identity")).unwrap();
    assert_eq!(served_chain(&b.addr, &old).await.unwrap()[1], old, "prepare does not change what B serves");

    rotate(&mut ca, "activate", false).await;
    let took = within("B serving a certificate from the internal CA activated on A", || {
        let (addr, new) = (b.addr.clone(), new.clone());
        async move { served_chain(&addr, &new).await.is_ok_and(|c| c[1] == new) }
    })
    .await;
    eprintln!("B served a certificate from the new internal CA {took:?} after activate on A");
    // B's admin identity was reissued by the new CA and trusts it: the CLI keeps working.
    let id_path = b.path("admin.identity");
    within("B's admin identity reissued by the new CA", || {
        let p = id_path.clone();
        let old_cert = before.cert_pem.clone();
        async move { Identity::load(&p).is_ok_and(|i| i.cert_pem != old_cert) }
    })
    .await;
    b.admin().await.who_am_i(pb::WhoAmIRequest {}).await.unwrap();

    // An identity of the old CA (B's admin identity from before), trusting B's new serving certificate.
    let stolen = Identity::new(before.cert_pem.clone(), before.key_pem().to_string(), sigil_schemas::identity::to_pem("CERTIFICATE", &new));
    let mut c = sigil_schemas::client::connect_with_identity(&b.addr, &stolen).await.unwrap();
    c.who_am_i(pb::WhoAmIRequest {}).await.expect("the previous internal CA is still trusted");

    rotate(&mut ca, "retire", true).await;
    within("B refusing an identity of the CA retired on A", || {
        let (addr, stolen) = (b.addr.clone(), stolen.clone());
        async move {
            match sigil_schemas::client::connect_with_identity(&addr, &stolen).await {
                Err(_) => true,
                Ok(mut c) => c.who_am_i(pb::WhoAmIRequest {}).await.is_err(),
            }
        }
    })
    .await;
    // The connection opened before the retirement is refused at its next call too.
    let err = c.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    b.admin().await.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    within("B's tls-ca.pem without the retired CA", || {
        let (p, new) = (tls_ca.clone(), new.clone());
        async move { pem_ders(&std::fs::read_to_string(p).unwrap()) == vec![new] }
    })
    .await;
}
