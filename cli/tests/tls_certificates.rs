#![allow(clippy::unwrap_used)]
//! Database and Kubernetes certificates (`IssueTlsCertificate`) against the
//! real broker, in process: the subject each role allows, refusals, separate
//! CAs (a database certificate is refused by a TLS server trusting the
//! Kubernetes CA), locks, revocation onto the CA key's CRL, escalation when
//! writing the role rules, lifetimes, a database CA rotation, and the
//! certificates checked by openssl and pkilint.

mod common;

use common::{now, Broker};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::Code;
use x509_parser::prelude::*;

type Client = SigilClient<Channel>;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn rule(resources: &[&str], verbs: &[&str]) -> pb::Rule {
    pb::Rule { resources: strings(resources), verbs: strings(verbs), names: vec![] }
}

/// The database / Kubernetes grants of the test bot `app`.
fn access_allow() -> pb::RoleAllow {
    pb::RoleAllow {
        database: Some(pb::DatabaseRules {
            users: strings(&["app", "{{bot.name}}-ro"]),
            server_names: strings(&["localhost", "127.0.0.1", "*.db.internal"]),
            max_ttl_seconds: 0,
        }),
        kubernetes: Some(pb::KubernetesRules { users: strings(&["deploy"]), groups: strings(&["dev", "view-*"]), max_ttl_seconds: 0 }),
        ..Default::default()
    }
}

/// Role and bot `name` with `allow`, joined: the bot's client.
async fn bot(b: &Broker, admin: &mut Client, name: &str, allow: pb::RoleAllow) -> Client {
    admin.create_role(pb::Role { name: name.into(), allow: Some(allow), ..Default::default() }).await.unwrap();
    admin.create_bot(pb::Bot { name: name.into(), roles: strings(&[name]), ..Default::default() }).await.unwrap();
    let t = pb::JoinToken { name: format!("{name}-t"), bot: name.into(), expires_at: now() + 600, max_uses: 1, ..Default::default() };
    let secret = admin.create_join_token(t).await.unwrap().into_inner().secret;
    b.join_as(&secret).await.unwrap()
}

/// A request of `kind` with a fresh key: (request, private key PEM).
fn request(kind: &str, user: &str, groups: &[&str], server_names: &[&str]) -> (pb::IssueTlsCertificateRequest, String) {
    let (kp, csr) = sigil_core::csr::key_and_csr().unwrap();
    let r = pb::IssueTlsCertificateRequest {
        kind: kind.into(),
        csr,
        user: user.into(),
        groups: strings(groups),
        server_names: strings(server_names),
        ttl_seconds: 0,
    };
    (r, kp.serialize_pem())
}

async fn issue(c: &mut Client, r: pb::IssueTlsCertificateRequest) -> Result<pb::TlsCertificate, tonic::Status> {
    c.issue_tls_certificate(r).await.map(|r| r.into_inner())
}

fn ders(pem: &str) -> Vec<Vec<u8>> {
    sigil_core::pem::certificate_ders(pem, "test").unwrap()
}

/// Subject attributes as (short name, value), in order.
fn subject(der: &[u8]) -> Vec<(String, String)> {
    let (_, c) = parse_x509_certificate(der).unwrap();
    let mut out = Vec::new();
    for rdn in c.subject().iter() {
        for a in rdn.iter() {
            let name = match a.attr_type().to_id_string().as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.10" => "O".to_string(),
                other => other.to_string(),
            };
            out.push((name, a.as_str().unwrap().to_string()));
        }
    }
    out
}

fn ekus(der: &[u8]) -> (bool, bool) {
    let (_, c) = parse_x509_certificate(der).unwrap();
    let e = c.extended_key_usage().unwrap().unwrap().value;
    (e.server_auth, e.client_auth)
}

fn signed_by(leaf: &[u8], ca: &[u8]) -> bool {
    let (_, l) = parse_x509_certificate(leaf).unwrap();
    let (_, c) = parse_x509_certificate(ca).unwrap();
    l.verify_signature(Some(c.public_key())).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_carries_the_subject_the_roles_allow_and_is_signed_by_its_own_ca() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut app = bot(&b, &mut admin, "app", access_allow()).await;

    let db = issue(&mut app, request("database-client", "app", &[], &[]).0).await.unwrap();
    let leaf = &ders(&db.certificate_pem)[0];
    assert_eq!(subject(leaf), vec![("CN".into(), "app".into())], "exactly CN=<user>: MariaDB REQUIRE SUBJECT '/CN=app'");
    assert_eq!(ekus(leaf), (false, true));
    assert!(db.expires_at > now() + 3000 && db.expires_at <= now() + 3600, "the default lifetime: 1 h");
    let db_cas = ders(&db.ca_bundle_pem);
    assert_eq!(db_cas.len(), 1);
    assert!(signed_by(leaf, &db_cas[0]));
    let (_, ca) = parse_x509_certificate(&db_cas[0]).unwrap();
    assert_eq!(ca.subject().iter_common_name().next().unwrap().as_str().unwrap(), "Sigil database CA example.org");
    // A template of the role, rendered for the caller.
    assert!(issue(&mut app, request("database-client", "app-ro", &[], &[]).0).await.is_ok());

    let server = issue(&mut app, request("database-server", "", &[], &["pg1.db.internal", "127.0.0.1"]).0).await.unwrap();
    let sleaf = &ders(&server.certificate_pem)[0];
    assert_eq!(subject(sleaf), vec![("CN".into(), "pg1.db.internal".into())]);
    assert_eq!(ekus(sleaf), (true, false));
    let (_, sc) = parse_x509_certificate(sleaf).unwrap();
    let sans: Vec<String> = sc.subject_alternative_name().unwrap().unwrap().value.general_names.iter().map(|g| format!("{g:?}")).collect();
    assert_eq!(sans.len(), 2, "{sans:?}");
    assert!(signed_by(sleaf, &db_cas[0]), "the server certificate comes from the same database CA");

    let kube = issue(&mut app, request("kubernetes-client", "deploy", &["dev", "view-pods", "dev"], &[]).0).await.unwrap();
    let kleaf = &ders(&kube.certificate_pem)[0];
    let want: Vec<(String, String)> = [("O", "dev"), ("O", "view-pods"), ("CN", "deploy")].iter().map(|(a, v)| (a.to_string(), v.to_string())).collect();
    assert_eq!(subject(kleaf), want, "one O per group (duplicates once), then CN");
    assert_eq!(ekus(kleaf), (false, true));
    let kube_cas = ders(&kube.ca_bundle_pem);
    assert!(signed_by(kleaf, &kube_cas[0]));
    // Three separate CAs: no certificate verifies under another purpose's CA.
    let svid_ca = ders(&admin.get_trust_bundle(pb::GetTrustBundleRequest::default()).await.unwrap().into_inner().x509_authorities_pem).remove(0);
    assert_ne!(db_cas[0], kube_cas[0]);
    for (leaf, other) in [(leaf, &kube_cas[0]), (leaf, &svid_ca), (kleaf, &db_cas[0]), (kleaf, &svid_ca)] {
        assert!(!signed_by(leaf, other));
    }
    // The bundles are public too: PostgreSQL ssl_ca_file, the API server's --client-ca-file.
    for (path, pem) in [("/ca/database.pem", &db.ca_bundle_pem), ("/ca/kubernetes.pem", &kube.ca_bundle_pem)] {
        let (status, _, body) = common_https_get(&b, path).await;
        assert_eq!((status, String::from_utf8(body).unwrap()), (200, pem.clone()), "{path}");
    }
    // sigil ca status lists both purposes, one active key each.
    let s = admin.get_ca_status(pb::GetCaStatusRequest::default()).await.unwrap().into_inner();
    for p in ["database", "kubernetes"] {
        assert_eq!(s.keys.iter().filter(|k| k.purpose == p && k.state == "active").count(), 1, "{p}: {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_group_or_server_name_the_roles_do_not_allow_is_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut app = bot(&b, &mut admin, "app", access_allow()).await;
    let refused = [
        request("database-client", "admin", &[], &[]).0,
        request("database-client", "postgres", &[], &[]).0,
        // The Kubernetes user is not a database user, and the reverse.
        request("database-client", "deploy", &[], &[]).0,
        request("kubernetes-client", "app", &[], &[]).0,
        request("kubernetes-client", "deploy", &["dev", "system:masters"], &[]).0,
        request("kubernetes-client", "admin", &[], &[]).0,
        request("database-server", "", &[], &["pg1.db.internal", "evil.example"]).0,
        // A template is rendered for the caller, never for the name asked.
        request("database-client", "other-ro", &[], &[]).0,
    ];
    for r in refused {
        let what = format!("{} {} {:?} {:?}", r.kind, r.user, r.groups, r.server_names);
        let e = issue(&mut app, r).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
    }
    // A bot with no database or kubernetes rules gets nothing.
    let mut plain = bot(&b, &mut admin, "plain", pb::RoleAllow { spiffe_ids: strings(&["/w/**"]), ..Default::default() }).await;
    assert_eq!(issue(&mut plain, request("database-client", "app", &[], &[]).0).await.unwrap_err().code(), Code::PermissionDenied);
    // Each refusal is audited.
    let events = admin.list_audit_events(pb::ListAuditEventsRequest { after_id: 0, limit: 0 }).await.unwrap().into_inner().items;
    assert_eq!(events.iter().filter(|e| e.kind == "tls.certificate" && e.outcome == "denied").count(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_naming_the_field() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow {
        database: Some(pb::DatabaseRules { users: strings(&["*"]), server_names: strings(&["*"]), max_ttl_seconds: 0 }),
        kubernetes: Some(pb::KubernetesRules { users: strings(&["*"]), groups: strings(&["*"]), max_ttl_seconds: 0 }),
        ..Default::default()
    };
    let mut app = bot(&b, &mut admin, "app", allow).await;
    let long = "a".repeat(65);
    let many: Vec<String> = (0..65).map(|i| format!("g{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut bad_csr = request("database-client", "app", &[], &[]).0;
    bad_csr.csr[40] ^= 1;
    let cases: Vec<(pb::IssueTlsCertificateRequest, &str)> = vec![
        (request("database-admin", "app", &[], &[]).0, "kind"),
        (request("database-client", "", &[], &[]).0, "user"),
        (request("database-client", &long, &[], &[]).0, "user"),
        (request("database-client", "app\r\nCN=admin", &[], &[]).0, "user"),
        (request("database-client", "app/CN=admin", &[], &[]).0, "user"),
        (request("kubernetes-client", "u", &many, &[]).0, "groups"),
        (request("kubernetes-client", "u", &["ok", "a\u{0}b"], &[]).0, "groups[1]"),
        (request("database-client", "app", &["dev"], &[]).0, "groups"),
        (request("database-server", "", &[], &["*.db.internal"]).0, "server_names[0]"),
        (request("database-server", "", &[], &[]).0, "server_names"),
        (bad_csr, "csr"),
    ];
    for (r, field) in cases {
        let e = issue(&mut app, r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(&format!("invalid {field}:")), "{field}: {}", e.message());
    }
    // What is echoed back and audited of a request is bounded.
    let e = issue(&mut app, request(&"k".repeat(30_000), &"u".repeat(30_000), &[], &[]).0).await.unwrap_err();
    assert!(e.message().len() < 300, "{} bytes", e.message().len());
    let events = admin.list_audit_events(pb::ListAuditEventsRequest { after_id: 0, limit: 0 }).await.unwrap().into_inner().items;
    let last = events.iter().rev().find(|e| e.kind == "tls.certificate").unwrap();
    assert!(last.resource.len() <= 256 && last.detail_json.len() < 1024, "{} / {} bytes", last.resource.len(), last.detail_json.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetimes_are_capped_by_the_role_then_the_broker_maximum() {
    let b = Broker::start_configured(tempfile::tempdir().unwrap(), |c| c.tls_certificates.max_ttl_seconds = Some(900)).await;
    let mut admin = b.admin().await;
    let mut allow = access_allow();
    allow.kubernetes.as_mut().unwrap().max_ttl_seconds = 300;
    let mut app = bot(&b, &mut admin, "app", allow).await;
    let mut r = request("kubernetes-client", "deploy", &[], &[]).0;
    r.ttl_seconds = 86_400;
    let k = issue(&mut app, r).await.unwrap();
    assert!(k.expires_at <= now() + 300, "role cap");
    let mut r = request("database-client", "app", &[], &[]).0;
    r.ttl_seconds = 86_400;
    let d = issue(&mut app, r).await.unwrap();
    assert!(d.expires_at > now() + 800 && d.expires_at <= now() + 900, "broker tls_certificates.max_ttl_seconds");
    let mut r = request("database-client", "app", &[], &[]).0;
    r.ttl_seconds = -1;
    assert_eq!(issue(&mut app, r).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_bot_or_instance_gets_no_certificate() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut app = bot(&b, &mut admin, "app", access_allow()).await;
    assert!(issue(&mut app, request("database-client", "app", &[], &[]).0).await.is_ok());
    let lock = pb::Lock {
        name: "stop-app".into(),
        target: Some(pb::LockTarget { bot: "app".into(), ..Default::default() }),
        reason: "incident".into(),
        ..Default::default()
    };
    admin.create_lock(lock).await.unwrap();
    for r in [request("database-client", "app", &[], &[]).0, request("kubernetes-client", "deploy", &[], &[]).0] {
        let e = issue(&mut app, r).await.unwrap_err();
        assert_ne!(e.code(), Code::Ok);
        assert!(e.message().contains("locked"), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_certificate_is_revoked_by_serial_and_by_instance() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut app = bot(&b, &mut admin, "app", access_allow()).await;
    let d = issue(&mut app, request("database-client", "app", &[], &[]).0).await.unwrap();
    let k = issue(&mut app, request("kubernetes-client", "deploy", &[], &[]).0).await.unwrap();
    let r = admin.revoke_svids(pb::RevokeSvidsRequest { serials: vec![d.serial.clone()], ..Default::default() }).await.unwrap();
    assert_eq!(r.into_inner().serials, vec![d.serial.clone()], "found in the audit log like an SVID");
    // By instance: everything the instance holds, the Kubernetes certificate included.
    let instances = admin.list_bot_instances(pb::ListBotInstancesRequest { bot: "app".into(), ..Default::default() }).await.unwrap().into_inner().items;
    let r = admin
        .revoke_svids(pb::RevokeSvidsRequest { bot_instance: instances[0].id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.serials.contains(&k.serial), "{:?}", r.serials);
    // The database CA key's CRL lists the revoked serial.
    let key = admin.get_ca_status(pb::GetCaStatusRequest::default()).await.unwrap().into_inner().keys.into_iter().find(|k| k.purpose == "database").unwrap().id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, _, body) = common_https_get(&b, &format!("/crl/{key}.crl")).await;
        assert_eq!(status, 200);
        let (_, crl) = parse_x509_crl(&body).unwrap();
        let serials: Vec<String> = crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect();
        if serials.contains(&d.serial) {
            let ca = &ders(&d.ca_bundle_pem)[0];
            let (_, ca) = parse_x509_certificate(ca).unwrap();
            assert!(crl.verify_signature(ca.public_key()).is_ok(), "signed by the database CA key");
            // openssl (what PostgreSQL's ssl_crl_file uses) refuses the revoked certificate.
            let dir = tempfile::tempdir().unwrap();
            let (crl_der, crl_pem) = (dir.path().join("crl.der"), dir.path().join("crl.pem"));
            std::fs::write(&crl_der, &body).unwrap();
            std::fs::write(dir.path().join("ca.pem"), &d.ca_bundle_pem).unwrap();
            std::fs::write(dir.path().join("leaf.pem"), &d.certificate_pem).unwrap();
            let conv = std::process::Command::new(openssl()).args(["crl", "-inform", "DER", "-in"]).arg(&crl_der).arg("-out").arg(&crl_pem).output().unwrap();
            assert!(conv.status.success(), "{}", String::from_utf8_lossy(&conv.stderr));
            let out = std::process::Command::new(openssl())
                .args(["verify", "-crl_check", "-CAfile"])
                .arg(dir.path().join("ca.pem"))
                .arg("-CRLfile")
                .arg(&crl_pem)
                .arg(dir.path().join("leaf.pem"))
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(!out.status.success() && text.contains("certificate revoked"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the database CRL does not list {}: {serials:?}", d.serial);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// GET `path` over HTTPS on the broker's public listener: (status, content type, body).
async fn common_https_get(b: &Broker, path: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for der in ders(&std::fs::read_to_string(b.path("tls-ca.pem")).unwrap()) {
        roots.add(rustls_pki_types::CertificateDer::from(der)).unwrap();
    }
    let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
    // HTTP/1.0: no chunked encoding to undo.
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..at]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, raw[at + 4..].to_vec())
}

/// Whether a TLS server requiring client certificates from `client_ca_pem`
/// (an API server's `--client-ca-file`) accepts `cert_pem` / `key_pem`.
async fn tls_server_accepts(client_ca_pem: &str, cert_pem: &str, key_pem: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in ders(client_ca_pem) {
        roots.add(rustls_pki_types::CertificateDer::from(der)).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&server_key).unwrap();
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots.add(server_cert.der().clone()).unwrap();
    let chain: Vec<rustls_pki_types::CertificateDer<'static>> = ders(cert_pem).into_iter().map(Into::into).collect();
    use rustls_pki_types::pem::PemObject as _;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(client_roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg)).accept(s).await.ok()?;
        let mut b = [0u8; 2];
        tls.read_exact(&mut b).await.ok()?;
        tls.write_all(b"ok").await.ok()?;
        tls.shutdown().await.ok()
    });
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let client = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client_cfg)).connect(name, c).await.ok()?;
        tls.write_all(b"hi").await.ok()?;
        let mut b = [0u8; 2];
        tls.read_exact(&mut b).await.ok()?;
        Some(b == *b"ok")
    };
    let got = client.await.unwrap_or(false);
    let _ = server.await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_certificate_is_never_accepted_where_a_kubernetes_certificate_is_expected() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    // One role grants CN=admin for both: the CA decides what it is good for.
    let allow = pb::RoleAllow {
        database: Some(pb::DatabaseRules { users: strings(&["admin"]), ..Default::default() }),
        kubernetes: Some(pb::KubernetesRules { users: strings(&["admin"]), ..Default::default() }),
        ..Default::default()
    };
    let mut app = bot(&b, &mut admin, "app", allow).await;
    let (r, db_key) = request("database-client", "admin", &[], &[]);
    let db = issue(&mut app, r).await.unwrap();
    let (r, kube_key) = request("kubernetes-client", "admin", &[], &[]);
    let kube = issue(&mut app, r).await.unwrap();
    assert!(tls_server_accepts(&kube.ca_bundle_pem, &kube.certificate_pem, &kube_key).await, "the Kubernetes certificate is accepted");
    assert!(!tls_server_accepts(&kube.ca_bundle_pem, &db.certificate_pem, &db_key).await, "a database certificate is no Kubernetes login");
    assert!(tls_server_accepts(&db.ca_bundle_pem, &db.certificate_pem, &db_key).await);
    assert!(!tls_server_accepts(&db.ca_bundle_pem, &kube.certificate_pem, &kube_key).await);
    // Nor is either an SVID: a server trusting the X.509-SVID bundle refuses both.
    let svids = admin.get_trust_bundle(pb::GetTrustBundleRequest::default()).await.unwrap().into_inner().x509_authorities_pem;
    assert!(!tls_server_accepts(&svids, &db.certificate_pem, &db_key).await);
    assert!(!tls_server_accepts(&svids, &kube.certificate_pem, &kube_key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_database_or_kubernetes_grants_the_caller_does_not_hold_needs_escalate() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    // A delegated role writer holding only its own database / kubernetes grants.
    let mut writer_allow = access_allow();
    writer_allow.rules = vec![rule(&["role"], &["create", "update", "read"])];
    let mut writer = bot(&b, &mut admin, "writer", writer_allow).await;
    let role = |name: &str, db: pb::DatabaseRules, kube: pb::KubernetesRules| pb::Role {
        name: name.into(),
        allow: Some(pb::RoleAllow { database: Some(db), kubernetes: Some(kube), ..Default::default() }),
        ..Default::default()
    };
    // Within its grants: allowed.
    let ok = role("ok", pb::DatabaseRules { users: strings(&["app"]), ..Default::default() }, pb::KubernetesRules { groups: strings(&["view-pods"]), ..Default::default() });
    writer.create_role(ok).await.unwrap();
    let wider = [
        role("w1", pb::DatabaseRules { users: strings(&["*"]), ..Default::default() }, Default::default()),
        role("w2", pb::DatabaseRules { users: strings(&["postgres"]), ..Default::default() }, Default::default()),
        role("w3", pb::DatabaseRules { server_names: strings(&["*"]), ..Default::default() }, Default::default()),
        role("w4", Default::default(), pb::KubernetesRules { groups: strings(&["system:masters"]), ..Default::default() }),
        role("w5", Default::default(), pb::KubernetesRules { users: strings(&["admin"]), ..Default::default() }),
        // The caller's template is its own name; written as a template it is anyone's.
        role("w6", pb::DatabaseRules { users: strings(&["{{bot.name}}-ro"]), ..Default::default() }, Default::default()),
    ];
    for r in wider.clone() {
        let name = r.name.clone();
        let e = writer.create_role(r).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}: {e:?}");
        assert!(e.message().contains("escalate"), "{name}: {}", e.message());
    }
    // With escalate on roles, the same writes go through.
    let mut esc = access_allow();
    esc.rules = vec![rule(&["role"], &["create", "escalate"])];
    let mut escalator = bot(&b, &mut admin, "escalator", esc).await;
    for r in wider {
        escalator.create_role(r).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_database_and_kubernetes_blocks_are_validated_with_field_names() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let cases = [
        (pb::DatabaseRules { server_names: strings(&["Bad Name"]), ..Default::default() }, pb::KubernetesRules::default(), "allow.database.server_names[0]"),
        (pb::DatabaseRules { users: strings(&["a/b"]), ..Default::default() }, pb::KubernetesRules::default(), "allow.database.users[0]"),
        (pb::DatabaseRules { max_ttl_seconds: -5, ..Default::default() }, pb::KubernetesRules::default(), "allow.database.max_ttl_seconds"),
        (pb::DatabaseRules::default(), pb::KubernetesRules { groups: strings(&["{{bot.name"]), ..Default::default() }, "allow.kubernetes.groups[0]"),
    ];
    for (db, kube, field) in cases {
        let r = pb::Role { name: "r".into(), allow: Some(pb::RoleAllow { database: Some(db), kubernetes: Some(kube), ..Default::default() }), ..Default::default() };
        let e = admin.create_role(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
}

async fn rotate(admin: &mut Client, purpose: &str, phase: &str, force: bool) {
    admin.rotate_ca(pb::RotateCaRequest { purpose: purpose.into(), phase: phase.into(), force }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_ca_rotates_on_its_own_and_the_bundle_follows_every_phase() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut app = bot(&b, &mut admin, "app", access_allow()).await;
    let before = issue(&mut app, request("database-client", "app", &[], &[]).0).await.unwrap();
    let old_ca = ders(&before.ca_bundle_pem).remove(0);
    let kube_before = issue(&mut app, request("kubernetes-client", "deploy", &[], &[]).0).await.unwrap().ca_bundle_pem;

    rotate(&mut admin, "database", "prepare", false).await;
    let p = issue(&mut app, request("database-client", "app", &[], &[]).0).await.unwrap();
    let bundle = ders(&p.ca_bundle_pem);
    assert_eq!(bundle.len(), 2, "prepared and active are published");
    assert!(signed_by(&ders(&p.certificate_pem)[0], &old_ca), "the prepared key signs nothing yet");
    let new_ca = bundle.into_iter().find(|c| *c != old_ca).unwrap();
    let (_, _, served) = common_https_get(&b, "/ca/database.pem").await;
    assert_eq!(ders(&String::from_utf8(served).unwrap()).len(), 2, "/ca/database.pem follows: servers learn the new CA before it signs");

    rotate(&mut admin, "database", "activate", false).await;
    let a = issue(&mut app, request("database-client", "app", &[], &[]).0).await.unwrap();
    assert!(signed_by(&ders(&a.certificate_pem)[0], &new_ca), "the new key signs after activate");
    assert_eq!(ders(&a.ca_bundle_pem).len(), 2, "the previous key stays published for what it signed");
    // The retire bound is the longest database / Kubernetes certificate.
    let early = admin.rotate_ca(pb::RotateCaRequest { purpose: "database".into(), phase: "retire".into(), force: false }).await.unwrap_err();
    assert!(early.message().contains("wait, or pass --force"), "{early:?}");
    let s = admin.get_ca_status(pb::GetCaStatusRequest::default()).await.unwrap().into_inner();
    let prev = s.keys.iter().find(|k| k.purpose == "database" && k.state == "previous").unwrap();
    assert!(prev.retire_safe_at >= now() + 12 * 3600 - 60, "tls_certificates.max_ttl_seconds (12 h) bounds retire: {prev:?}");

    rotate(&mut admin, "database", "retire", true).await;
    let r = issue(&mut app, request("database-client", "app", &[], &[]).0).await.unwrap();
    assert_eq!(ders(&r.ca_bundle_pem), vec![new_ca.clone()], "the retired key is unpublished");
    // The Kubernetes CA did not move.
    let kube_after = issue(&mut app, request("kubernetes-client", "deploy", &[], &[]).0).await.unwrap().ca_bundle_pem;
    assert_eq!(kube_before, kube_after);
}

fn venv_bin(name: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin").join(name);
    assert!(p.exists(), "{} is missing: run scripts/setup.sh (installs pkilint from acceptance-tests/requirements.txt into .venv)", p.display());
    p
}

fn openssl() -> &'static str {
    let ok = std::process::Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "openssl is missing: apt-get install openssl");
    "openssl"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificates_pass_openssl_verify_and_pkilint() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut app = bot(&b, &mut admin, "app", access_allow()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = issue(&mut app, request("database-client", "app", &[], &[]).0).await.unwrap();
    let server = issue(&mut app, request("database-server", "", &[], &["pg1.db.internal", "127.0.0.1"]).0).await.unwrap();
    let kube = issue(&mut app, request("kubernetes-client", "deploy", &["dev", "view-pods"], &[]).0).await.unwrap();
    for (name, c, purpose) in [("db", &db, "sslclient"), ("server", &server, "sslserver"), ("kube", &kube, "sslclient")] {
        let leaf = dir.path().join(format!("{name}.pem"));
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&leaf, &c.certificate_pem).unwrap();
        std::fs::write(&ca, &c.ca_bundle_pem).unwrap();
        let out = std::process::Command::new(openssl())
            .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
            .arg(&ca)
            .arg(&leaf)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.trim_end().ends_with("OK"), "{name}: {text}");
        // The client certificates are not server certificates.
        if purpose == "sslclient" {
            let out = std::process::Command::new(openssl()).args(["verify", "-purpose", "sslserver", "-CAfile"]).arg(&ca).arg(&leaf).output().unwrap();
            assert!(!out.status.success(), "{name} must not pass as a server certificate");
        }
        // RFC 5280 profile (pkilint's PKIX linter: these are neither web PKI
        // server certificates nor S/MIME, the CA/B profiles do not apply).
        for (what, file) in [("leaf", &leaf), ("CA", &ca)] {
            let out = std::process::Command::new(venv_bin("lint_pkix_cert")).args(["lint", "-s", "WARNING", "-f", "JSON"]).arg(file).output().unwrap();
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name} {what}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
            let findings: Vec<&serde_json::Value> = report["results"].as_array().unwrap().iter().flat_map(|r| r["finding_descriptions"].as_array().unwrap()).collect();
            assert!(findings.is_empty(), "{name} {what}: {findings:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_signs_with_the_database_ca_key_activated_on_another() {
    let (a, b, _url) = common::replicas_on_postgres(|_| {}).await;
    let mut admin_a = a.admin().await;
    let mut on_b = bot(&b, &mut admin_a, "app", access_allow()).await;
    let before = issue(&mut on_b, request("database-client", "app", &[], &[]).0).await.unwrap();
    let on_a = issue(&mut bot(&a, &mut admin_a, "app2", access_allow()).await, request("database-client", "app", &[], &[]).0).await;
    assert_eq!(on_a.unwrap().ca_bundle_pem, before.ca_bundle_pem, "both replicas use the database CA the first one stored");
    let old_ca = ders(&before.ca_bundle_pem).remove(0);
    rotate(&mut admin_a, "database", "prepare", false).await;
    rotate(&mut admin_a, "database", "activate", false).await;
    let started = std::time::Instant::now();
    loop {
        let c = issue(&mut on_b, request("database-client", "app", &[], &[]).0).await.unwrap();
        let bundle = ders(&c.ca_bundle_pem);
        if bundle.len() == 2 && !signed_by(&ders(&c.certificate_pem)[0], &old_ca) {
            let new_ca = bundle.iter().find(|d| **d != old_ca).unwrap();
            assert!(signed_by(&ders(&c.certificate_pem)[0], new_ca));
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "B never signed with the database key activated on A");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!("replica B signed with the database key activated on A after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_postgresql_store_gets_its_database_and_kubernetes_cas_at_the_first_start() {
    use sigil_broker::ca::{backend::KeyStore, create_key, seal::SealKey};
    use sigil_broker::config::{PostgresUrlOrName, StoreSetting};
    use sigil_broker::store::Store;
    use sigil_core::domain::ca_rotation::KeyState;
    use sigil_core::keys::KeyAlg;
    // A store written before these purposes existed: the three issue-15 keys, sealed with the broker's seal key.
    let url = sigil_broker::store::pg_harness::shared().fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let seal_hex = SealKey::generate_hex().unwrap();
    let seal_file = dir.path().join("seal.key");
    std::fs::write(&seal_file, &seal_hex).unwrap();
    let old_ids = {
        let store = sigil_broker::store::postgres::PgStore::connect(&url).await.unwrap();
        let keys = KeyStore::sealed(SealKey::parse(&seal_hex).unwrap());
        let td: sigil_core::domain::TrustDomain = "example.org".parse().unwrap();
        let mut ids = Vec::new();
        // A year, like the default: a shorter key would make the automatic schedule prepare its successor at once.
        for (p, alg) in [("x509-svid", KeyAlg::EcP256), ("internal", KeyAlg::EcP256), ("jwt-svid", KeyAlg::Rsa2048)] {
            let (rec, _) = create_key(&keys, &td, p, alg, 365 * 86_400, now(), KeyState::Active).unwrap();
            store.insert_ca_key(&rec).await.unwrap();
            ids.push(rec.id);
        }
        ids
    };
    let b = Broker::start_configured(tempfile::tempdir().unwrap(), |cfg| {
        cfg.store = StoreSetting::Url(PostgresUrlOrName(url.clone()));
        cfg.seal_key_file = Some(seal_file.clone());
    })
    .await;
    let mut admin = b.admin().await;
    let s = admin.get_ca_status(pb::GetCaStatusRequest::default()).await.unwrap().into_inner();
    assert_eq!(s.keys.len(), 7, "{s:?}");
    for id in &old_ids {
        assert!(s.keys.iter().any(|k| &k.id == id && k.state == "active"), "the old key {id} stays active");
    }
    for p in ["database", "kubernetes"] {
        assert_eq!(s.keys.iter().filter(|k| k.purpose == p && k.state == "active").count(), 1, "{p}");
    }
    let mut app = bot(&b, &mut admin, "app", access_allow()).await;
    let c = issue(&mut app, request("database-client", "app", &[], &[]).0).await.unwrap();
    assert!(signed_by(&ders(&c.certificate_pem)[0], &ders(&c.ca_bundle_pem)[0]));
}
