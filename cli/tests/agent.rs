//! `sigil agent` against an in-process broker: one-shot outputs, join failures,
//! generation-checked renewal, and the Workload API over a real unix socket.
#![allow(clippy::unwrap_used)]

mod common;

use common::Broker;
use secrecy::SecretString;
use sigil_agent::config::AgentConfig;
use sigil_agent::Agent;
use sigil_core::clock::SystemClock;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::spiffe_workload as wl;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

async fn setup(b: &Broker, uid_values: &[&str]) -> String {
    let mut a = b.admin().await;
    a.create_role(pb::Role {
        name: "agent".into(),
        allow: Some(pb::RoleAllow {
            spiffe_ids: vec!["/svc/**".into()],
            audiences: vec!["*".into()],
            workload_identities: vec!["*".into()],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    a.create_bot(pb::Bot { name: "node1".into(), roles: vec!["agent".into()], ..Default::default() }).await.unwrap();
    a.create_workload_identity(pb::WorkloadIdentity {
        name: "by-uid".into(),
        spiffe_id: "/svc/{{bot.name}}/uid-{{workload.unix.uid}}".into(),
        allow: vec![pb::Condition { attribute: "workload.unix.uid".into(), values: uid_values.iter().map(|s| s.to_string()).collect() }],
        ..Default::default()
    })
    .await
    .unwrap();
    a.create_join_token(pb::JoinToken {
        name: "t1".into(),
        bot: "node1".into(),
        method: "token".into(),
        expires_at: common::now() + 3600,
        max_uses: 5,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .secret
}

fn config(b: &Broker, dir: &Path, extra: &str) -> AgentConfig {
    let text = format!(
        "broker: {}\nca_file: {}\nstate_dir: {}\njoin: {{method: token}}\nretry: {{initial: 100ms, max: 1s}}\n{extra}",
        b.addr,
        b.path("tls-ca.pem").display(),
        dir.join("state").display()
    );
    AgentConfig::from_yaml(&text).unwrap()
}

fn outputs(dir: &Path) -> String {
    format!(
        "outputs:\n  - type: x509-svid\n    dir: {d}/svid\n    spiffe_id: spiffe://example.org/svc/app\n  - type: jwt-svid\n    path: {d}/jwt/token\n    audiences: [sts.amazonaws.com]\n    spiffe_id: spiffe://example.org/svc/app\n  - type: identity\n    path: {d}/id/identity\n",
        d = dir.display()
    )
}

fn agent(cfg: AgentConfig, token: &str) -> Agent {
    Agent::new(cfg, Some(SecretString::from(token.to_string())), Arc::new(SystemClock)).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

#[tokio::test]
async fn oneshot_writes_every_output_with_private_permissions() {
    let b = Broker::start().await;
    let token = setup(&b, &["0"]).await;
    let d = tempfile::tempdir().unwrap();
    agent(config(&b, d.path(), &outputs(d.path())), &token).oneshot().await.unwrap();

    let pem = std::fs::read(d.path().join("svid/svid.pem")).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).map(|c: rustls_pki_types::CertificateDer| c.to_vec()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", san.value.general_names).contains("spiffe://example.org/svc/app"));
    assert!(std::fs::read_to_string(d.path().join("svid/svid.key")).unwrap().contains("PRIVATE KEY"));
    assert!(std::fs::read_to_string(d.path().join("svid/bundle.pem")).unwrap().contains("BEGIN CERTIFICATE"));
    assert_eq!(std::fs::read_to_string(d.path().join("jwt/token")).unwrap().split('.').count(), 3);
    let id = sigil_schemas::identity::Identity::load(&d.path().join("id/identity")).unwrap();
    assert!(id.subject().unwrap().0.ends_with("/node1"));

    for f in ["svid/svid.pem", "svid/svid.key", "svid/bundle.pem", "jwt/token", "id/identity", "state/identity"] {
        assert_eq!(mode(&d.path().join(f)), 0o600, "{f}");
    }
    for dir in ["svid", "jwt", "id", "state"] {
        assert_eq!(mode(&d.path().join(dir)), 0o700, "{dir}");
    }
}

#[tokio::test]
async fn oneshot_with_a_bad_token_fails_naming_the_join() {
    let b = Broker::start().await;
    setup(&b, &["0"]).await;
    let d = tempfile::tempdir().unwrap();
    let err = agent(config(&b, d.path(), &outputs(d.path())), "not-a-real-token").oneshot().await.unwrap_err().to_string();
    assert!(err.contains("join with method token rejected"), "{err}");
    assert!(!d.path().join("svid/svid.pem").exists());
}

#[tokio::test]
async fn oneshot_output_the_role_does_not_allow_is_named_in_the_error() {
    let b = Broker::start().await;
    let token = setup(&b, &["0"]).await;
    let d = tempfile::tempdir().unwrap();
    let extra = format!("outputs:\n  - type: x509-svid\n    dir: {}/svid\n    spiffe_id: spiffe://example.org/admin/x\n", d.path().display());
    let err = agent(config(&b, d.path(), &extra), &token).oneshot().await.unwrap_err().to_string();
    assert!(err.contains("x509-svid:") && err.contains("PermissionDenied"), "{err}");
}

#[tokio::test]
async fn renewal_stores_the_new_identity_and_advances_the_generation() {
    let b = Broker::start().await;
    let token = setup(&b, &["0"]).await;
    let d = tempfile::tempdir().unwrap();
    let a = agent(config(&b, d.path(), ""), &token);
    a.oneshot().await.unwrap();
    let before = std::fs::read_to_string(d.path().join("state/identity")).unwrap();
    let g1 = a.session().client().await.unwrap().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().generation;
    a.session().renew().await.unwrap();
    let after = std::fs::read_to_string(d.path().join("state/identity")).unwrap();
    assert_ne!(before, after, "renewed identity is written to the state dir");
    let g2 = a.session().client().await.unwrap().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().generation;
    assert_eq!(g2, g1 + 1);

    // A second agent process reusing the state dir picks up the stored identity
    // without joining (the token is not needed any more).
    let again = Agent::new(config(&b, d.path(), ""), None, Arc::new(SystemClock)).unwrap();
    again.oneshot().await.unwrap();
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

async fn running_agent(b: &Broker, d: &Path, token: &str) -> (Arc<Agent>, std::path::PathBuf, tokio::sync::oneshot::Sender<()>) {
    let sock = d.join("run/agent.sock");
    let extra = format!("services:\n  - type: workload-api\n    socket: {}\n    workload_identities: [by-uid]\n    x509_ttl: 60s\n", sock.display());
    let a = Arc::new(agent(config(b, d, &extra), token));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(a.clone().run(async {
        let _ = rx.await;
    }));
    for _ in 0..100 {
        if sock.exists() && a.session().held().await.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (a, sock, tx)
}

#[tokio::test]
async fn workload_api_serves_the_attested_caller_its_svid() {
    let b = Broker::start().await;
    let me = std::fs::metadata("/proc/self").unwrap().uid().to_string();
    let token = setup(&b, &[&me]).await;
    let d = tempfile::tempdir().unwrap();
    let (_a, sock, _stop) = running_agent(&b, d.path(), &token).await;
    let mut c = common::workload_client(&sock).await;

    let mut stream = c.fetch_x509svid(with_header(wl::X509svidRequest {})).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
    assert_eq!(first.svids[0].spiffe_id, format!("spiffe://example.org/svc/node1/uid-{me}"));
    assert_eq!(first.svids[0].hint, "by-uid");

    let jwt = c
        .fetch_jwtsvid(with_header(wl::JwtsvidRequest { audience: vec!["aud1".into()], spiffe_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    let token = jwt.svids[0].svid.clone();
    // The bundle poll runs in the background; wait for it before validating.
    let mut v = None;
    for _ in 0..50 {
        match c.validate_jwtsvid(with_header(wl::ValidateJwtsvidRequest { audience: "aud1".into(), svid: token.clone() })).await {
            Ok(r) => {
                v = Some(r.into_inner());
                break;
            }
            Err(s) if s.code() == tonic::Code::Unavailable => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Err(s) => panic!("{s:?}"),
        }
    }
    let v = v.unwrap();
    assert_eq!(v.spiffe_id, format!("spiffe://example.org/svc/node1/uid-{me}"));
    let wrong_aud = c.validate_jwtsvid(with_header(wl::ValidateJwtsvidRequest { audience: "other".into(), svid: token })).await.unwrap_err();
    assert_eq!(wrong_aud.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn workload_api_denies_a_caller_no_rule_matches_and_requires_the_header() {
    let b = Broker::start().await;
    let token = setup(&b, &["424242"]).await;
    let d = tempfile::tempdir().unwrap();
    let (_a, sock, _stop) = running_agent(&b, d.path(), &token).await;
    let mut c = common::workload_client(&sock).await;

    let no_header = c.fetch_jwtsvid(tonic::Request::new(wl::JwtsvidRequest { audience: vec!["a".into()], spiffe_id: String::new() })).await.unwrap_err();
    assert_eq!(no_header.code(), tonic::Code::InvalidArgument);

    let denied = c.fetch_jwtsvid(with_header(wl::JwtsvidRequest { audience: vec!["a".into()], spiffe_id: String::new() })).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    let mut s = c.fetch_x509svid(with_header(wl::X509svidRequest {})).await.unwrap().into_inner();
    let err = s.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
