//! Denial of service at the broker's edges, against an in-process dev broker:
//! what a caller without credentials can fill (join challenges, the audit log)
//! stays bounded, and legitimate callers still get through during a flood.
//! The floods are bounded in count and run on loopback only; the attacker
//! connects from 127.0.0.2 so that it is a different peer than the victim.
#![allow(clippy::unwrap_used)]

mod common;

use common::{now, Broker};
use sigil_agent::join::client::bound_keypair::{self, AgentKey};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// An anonymous client whose connection comes from `local` (a loopback address).
async fn anonymous_from(b: &Broker, local: &str) -> SigilClient<Channel> {
    let ca = std::fs::read_to_string(b.path("tls-ca.pem")).unwrap();
    let channel = Endpoint::from_shared(format!("https://{}", b.addr))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost"))
        .unwrap()
        .local_address(Some(local.parse().unwrap()))
        .connect()
        .await
        .unwrap();
    SigilClient::new(channel)
}

async fn token(admin: &mut SigilClient<Channel>, name: &str, method: &str, config: &[(&str, String)]) -> String {
    if admin.get_bot(pb::GetRequest { name: "edge".into() }).await.is_err() {
        admin.create_bot(pb::Bot { name: "edge".into(), ..Default::default() }).await.unwrap();
    }
    let allow = if method == "iam" {
        vec![pb::AllowRule { claims: [("aws_account".to_string(), "123456789012".to_string())].into() }]
    } else {
        vec![]
    };
    admin
        .create_join_token(pb::JoinToken {
            name: name.into(),
            bot: "edge".into(),
            method: method.into(),
            expires_at: now() + 3600,
            max_uses: 100,
            allow,
            config: config.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

/// `count` BeginJoin calls naming `token`, 16 in flight; returns how many were refused.
async fn begin_join_flood(cl: SigilClient<Channel>, method: &str, token: &str, count: usize) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (mut cl, method, token) = (cl.clone(), method.to_string(), token.to_string());
        tasks.spawn(async move {
            let mut refused = 0;
            for _ in (w..count).step_by(16) {
                let req = pb::BeginJoinRequest { method: method.clone(), token_name: token.clone(), payload: vec![] };
                if cl.begin_join(req).await.is_err() {
                    refused += 1;
                }
            }
            refused
        });
    }
    let mut refused = 0;
    while let Some(r) = tasks.join_next().await {
        refused += r.unwrap();
    }
    refused
}

/// A complete bound-keypair join (BeginJoin, signed challenge, Join).
async fn keypair_join(b: &Broker, key: &AgentKey, token: &str, sequence: i64, secret: Option<&str>) -> Result<i64, String> {
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let mut cl = b.anonymous().await;
    let state = bound_keypair::JoinState { sequence, attempt: None }.start().unwrap();
    bound_keypair::join(&mut cl, key, token, &state, secret, csr, 0).await.map(|(_, next)| next).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_join_flood_naming_an_iam_token_does_not_block_other_challenge_joins() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    token(&mut admin, "aws", "iam", &[]).await;
    let secret = token(&mut admin, "edge-kp", "bound_keypair", &[]).await;
    let key = AgentKey::generate().unwrap();

    // One more than the table held before the fix, all from one peer.
    let attacker = anonymous_from(&b, "127.0.0.2").await;
    let started = Instant::now();
    let refused = begin_join_flood(attacker, "iam", "aws", 10_050).await;
    let flood_secs = started.elapsed().as_secs_f64();
    assert_eq!(refused, 0, "the flooder's own oldest challenges make room; nobody is refused");

    // Right after the flood (well within the 60 s challenge lifetime), a
    // legitimate challenge join from another peer succeeds, within 1 s.
    let t = Instant::now();
    let seq = keypair_join(&b, &key, "edge-kp", 0, Some(&secret)).await.expect("legitimate join after the flood");
    let answered = t.elapsed();
    assert_eq!(seq, 1);
    assert!(answered < Duration::from_secs(1), "answered in {answered:?}");
    eprintln!("flood of 10050 BeginJoin in {flood_secs:.1} s; legitimate join answered in {answered:?}");
}

/// The flood above against two replicas on one PostgreSQL, whose table is
/// shared: a legitimate challenge begun on B before a flood through A from two
/// peers (2,000 calls, 30 times what the table holds: its total is lowered to
/// 64 so that a flood short enough for the 60 s challenge lifetime on a busy
/// machine fills it) is answered on A after it; the shared table stays within
/// its bounds (per peer and in total, counted over both replicas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_join_flood_through_one_replica_does_not_evict_a_challenge_made_on_the_other() {
    const MAX_PENDING: usize = 64;
    let (a, b, url) = common::replicas_on_postgres(|cfg| cfg.limits.join_challenges.max_pending = MAX_PENDING).await;
    let mut admin = a.admin().await;
    token(&mut admin, "aws", "iam", &[]).await;
    let key = AgentKey::generate().unwrap();
    token(&mut admin, "edge-kp", "bound_keypair", &[("public_key", key.public_key_b64())]).await;
    let begin = pb::BeginJoinRequest { method: "bound_keypair".into(), token_name: "edge-kp".into(), payload: key.begin_payload() };
    let c = b.anonymous().await.begin_join(begin).await.unwrap().into_inner();

    let started = Instant::now();
    let (r2, r3) = tokio::join!(
        begin_join_flood(anonymous_from(&a, "127.0.0.2").await, "iam", "aws", 1_000),
        begin_join_flood(anonymous_from(&a, "127.0.0.3").await, "iam", "aws", 1_000)
    );
    let flood_secs = started.elapsed().as_secs_f64();
    assert_eq!(r2 + r3, 0, "nobody is refused");

    let per_peer = sigil_broker::store::postgres::PgStore::connect(&url).await.unwrap().pending_challenges_per_peer().await.unwrap();
    let total: i64 = per_peer.iter().map(|(_, n)| n).sum();
    assert!(total <= MAX_PENDING as i64 && per_peer.iter().all(|(_, n)| *n <= 32), "{per_peer:?}");
    assert!(per_peer.contains(&("127.0.0.1".to_string(), 1)), "the legitimate challenge is still there: {per_peer:?}");

    let t = Instant::now();
    let payload = key.answer("edge-kp", &c.challenge_id, &c.payload, 0, "").unwrap();
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let join = pb::JoinRequest { method: "bound_keypair".into(), token_name: "edge-kp".into(), challenge_id: c.challenge_id, payload, csr, ..Default::default() };
    a.anonymous().await.join(join).await.expect("begun on B before the flood, answered on A after it");
    let answered = t.elapsed();
    assert!(answered < Duration::from_secs(1), "answered in {answered:?}");
    eprintln!("flood of 2000 BeginJoin through replica A in {flood_secs:.1} s; table after it {per_peer:?}; legitimate join on A answered in {answered:?}");
}

/// A dev broker served with `limits`, and its data directory.
async fn broker_with(limits: sigil_core::listen::limits::ConnLimits) -> (String, tempfile::TempDir) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let cfg = sigil_broker::config::ServerConfig::dev(dir.path().to_path_buf(), "127.0.0.1:0".into(), None, "example.org".into());
    let p = sigil_broker::bootstrap::prepare(&cfg, true).await.unwrap();
    let addr = p.addr.to_string();
    let fds = sigil_core::listen::limits::fd_limit();
    tokio::spawn(sigil_broker::server::serve_with(p.listener, p.broker, p.tls, limits, fds, std::future::pending()));
    (addr, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_request_whose_body_never_ends_is_answered_with_deadline_exceeded() {
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    use rustls_pki_types::pem::PemObject;
    let limits = sigil_core::listen::limits::ConnLimits { request_timeout_secs: 2, ..Default::default() };
    let (addr, dir) = broker_with(limits).await;
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(dir.path().join("tls-ca.pem")).unwrap();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)).connect(name, tcp).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);

    // A Join whose body never ends: tonic waits for the whole message.
    let body = StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, std::convert::Infallible>>());
    let req = http::Request::post("https://localhost/sigil.v1.Sigil/Join")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("the broker never answered a request whose body never ends")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string()).as_deref(), Some("4"), "{resp:?}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}
