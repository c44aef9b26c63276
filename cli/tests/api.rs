#![allow(clippy::unwrap_used)]
//! End-to-end tests of the broker API over real mTLS, in process.
//!
//! Each test starts a dev-mode broker on a loopback port with its own data
//! directory, then talks to it through the shared client.

mod common;

use common::{assert_refused, last_join_denial, now, replace_bytes, Broker};
use sigil_core::csr::key_and_csr;
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;
use tonic::Code;

/// Creates role `ci` (SPIFFE IDs under /ci/**, audience sts.amazonaws.com, no admin
/// verbs), bot `ci` with it, and a token; returns the token secret.
async fn setup_ci_bot(admin: &mut SigilClient<Channel>, max_uses: i64) -> String {
    admin
        .create_role(pb::Role {
            name: "ci".into(),
            allow: Some(pb::RoleAllow {
                spiffe_ids: vec!["/ci/{{bot.name}}/**".into()],
                audiences: vec!["sts.amazonaws.com".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.create_bot(pb::Bot { name: "ci".into(), roles: vec!["ci".into()], ..Default::default() }).await.unwrap();
    admin
        .create_join_token(pb::JoinToken { name: "t1".into(), bot: "ci".into(), expires_at: now() + 600, max_uses, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .secret
}

async fn audit_count(admin: &mut SigilClient<Channel>, kind: &str, outcome: &str) -> usize {
    let items = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    items.iter().filter(|e| e.kind == kind && e.outcome == outcome).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_is_refused_and_creates_no_instance() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup_ci_bot(&mut admin, 1).await;
    let err = b.join_as("not-a-real-token").await.unwrap_err();
    assert_refused(&err);
    assert!(last_join_denial(&mut admin).await.contains("unknown token"));
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "t1".into() }).await.unwrap().into_inner().uses, 0);
    assert_eq!(audit_count(&mut admin, "join", "denied").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_used_single_use_token_is_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    b.join_as(&secret).await.unwrap();
    let err = b.join_as(&secret).await.unwrap_err();
    assert_refused(&err);
    assert!(last_join_denial(&mut admin).await.contains("already used"));
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "t1".into() }).await.unwrap().into_inner().uses, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup_ci_bot(&mut admin, 1).await;
    let secret = admin
        .create_join_token(pb::JoinToken { name: "short".into(), bot: "ci".into(), expires_at: now() + 1, max_uses: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .secret;
    // Wall-clock expiry on a real broker: wait past it.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let err = b.join_as(&secret).await.unwrap_err();
    assert_refused(&err);
    assert!(last_join_denial(&mut admin).await.contains("expired"));
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "short".into() }).await.unwrap().into_inner().uses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_past_expiry_cannot_be_created() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup_ci_bot(&mut admin, 1).await;
    let err = admin
        .create_join_token(pb::JoinToken { name: "old".into(), bot: "ci".into(), expires_at: now() - 5, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("expires_at"), "{}", err.message());
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "old".into() }).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_bad_csr_does_not_use_up_the_token() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let (_, mut csr) = key_and_csr().unwrap();
    let last = csr.len() - 1;
    csr[last] ^= 0x55; // corrupt the signature
    let err = b
        .anonymous()
        .await
        .join(pb::JoinRequest { method: "token".into(), token: secret.clone(), csr, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("csr"), "{}", err.message());
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "t1".into() }).await.unwrap().into_inner().uses, 0);
    b.join_as(&secret).await.expect("token still usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_with_wrong_signature_is_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let mut bot = b.join_as(&secret).await.unwrap();
    // A CSR whose signature was made by a different key than the one it carries.
    let (kp_a, csr_a) = key_and_csr().unwrap();
    let (kp_b, _) = key_and_csr().unwrap();
    let forged = replace_bytes(&csr_a, kp_a.public_key_raw(), kp_b.public_key_raw());
    let err = bot
        .issue_x509_svid(pb::IssueX509SvidRequest { csr: forged, spiffe_id: "spiffe://example.org/ci/ci/a".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("CSR signature does not verify"), "{}", err.message());
    assert_eq!(audit_count(&mut admin, "svid.x509", "ok").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_id_outside_the_role_is_denied_naming_the_rule() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let mut bot = b.join_as(&secret).await.unwrap();
    let (_, csr) = key_and_csr().unwrap();
    let ok = bot
        .issue_x509_svid(pb::IssueX509SvidRequest { csr: csr.clone(), spiffe_id: "spiffe://example.org/ci/ci/deploy".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().spiffe_id, "spiffe://example.org/ci/ci/deploy");
    let err = bot
        .issue_x509_svid(pb::IssueX509SvidRequest { csr, spiffe_id: "spiffe://example.org/prod/db".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("/ci/ci/**"), "denial should name the pattern: {}", err.message());
    assert_eq!(audit_count(&mut admin, "svid.x509", "denied").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_svid_without_audience_is_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let err = admin
        .issue_jwt_svid(pb::IssueJwtSvidRequest { spiffe_id: "spiffe://example.org/a".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("audience"), "{}", err.message());
    let secret = setup_ci_bot(&mut admin, 1).await;
    let mut bot = b.join_as(&secret).await.unwrap();
    let err = bot
        .issue_jwt_svid(pb::IssueJwtSvidRequest {
            spiffe_id: "spiffe://example.org/ci/ci/x".into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("AzureADTokenExchange"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_refused_and_stores_nothing() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let big = pb::Role {
        name: "huge".into(),
        description: "x".repeat(200 * 1024),
        ..Default::default()
    };
    let err = admin.create_role(big).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert_eq!(admin.get_role(pb::GetRequest { name: "huge".into() }).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_without_the_verb_is_denied_and_nothing_changes() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let mut bot = b.join_as(&secret).await.unwrap();
    let err = bot.create_role(pb::Role { name: "escalate".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("\"create\"") && err.message().contains("\"role\""), "{}", err.message());
    let err = bot.delete_bot(pb::DeleteRequest { name: "admin".into(), revision: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(admin.get_role(pb::GetRequest { name: "escalate".into() }).await.unwrap_err().code(), Code::NotFound);
    admin.get_bot(pb::GetRequest { name: "admin".into() }).await.expect("admin bot still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_caller_cannot_manage_resources() {
    let b = Broker::start().await;
    let err = b.anonymous().await.list_roles(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_token_redeemed_by_50_concurrent_joins_succeeds_once() {
    let b = std::sync::Arc::new(Broker::start().await);
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let b = b.clone();
        let s = secret.clone();
        tasks.push(tokio::spawn(async move { b.join_as(&s).await.map(|_| ()) }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (1, 49));
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "t1".into() }).await.unwrap().into_inner().uses, 1);
    assert_eq!(audit_count(&mut admin, "join", "ok").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_revision_update_is_refused_and_keeps_the_newer_version() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let r1 = admin.create_role(pb::Role { name: "r".into(), description: "v1".into(), ..Default::default() }).await.unwrap().into_inner();
    let mut r2 = r1.clone();
    r2.description = "v2".into();
    admin.update_role(r2).await.unwrap();
    let mut stale = r1.clone();
    stale.description = "stale".into();
    let err = admin.update_role(stale).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(admin.get_role(pb::GetRequest { name: "r".into() }).await.unwrap().into_inner().description, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_detects_a_copied_identity() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let (kp, csr) = key_and_csr().unwrap();
    let r = b.anonymous().await.join(pb::JoinRequest { method: "token".into(), token: secret, csr, ..Default::default() }).await.unwrap().into_inner();
    let original = Identity::new(r.certificate_pem, kp.serialize_pem(), r.ca_pem);
    let mut legit = sigil_schemas::client::connect_with_identity(&b.addr, &original).await.unwrap();
    // The legitimate agent renews and stores generation 2.
    let (kp2, csr2) = key_and_csr().unwrap();
    let r2 = legit.renew_identity(pb::RenewIdentityRequest { csr: csr2, ttl_seconds: 0 }).await.unwrap().into_inner();
    assert_eq!(r2.generation, 2);
    let renewed = Identity::new(r2.certificate_pem, kp2.serialize_pem(), r2.ca_pem);
    let mut legit2 = sigil_schemas::client::connect_with_identity(&b.addr, &renewed).await.unwrap();
    let (kp3, csr3) = key_and_csr().unwrap();
    let r3 = legit2.renew_identity(pb::RenewIdentityRequest { csr: csr3, ttl_seconds: 0 }).await.unwrap().into_inner();
    assert_eq!(r3.generation, 3);
    // It stores generation 3 and renews with it, which commits generation 3.
    let third = Identity::new(r3.certificate_pem, kp3.serialize_pem(), r3.ca_pem);
    let mut legit3 = sigil_schemas::client::connect_with_identity(&b.addr, &third).await.unwrap();
    let (_, csr5) = key_and_csr().unwrap();
    assert_eq!(legit3.renew_identity(pb::RenewIdentityRequest { csr: csr5, ttl_seconds: 0 }).await.unwrap().into_inner().generation, 4);
    // A copy of generation 2 shows up: refused, and the instance is locked.
    let (_, csr4) = key_and_csr().unwrap();
    let mut thief = sigil_schemas::client::connect_with_identity(&b.addr, &renewed).await.unwrap();
    let err = thief.renew_identity(pb::RenewIdentityRequest { csr: csr4, ttl_seconds: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("copied"), "{}", err.message());
    let err = legit3.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert!(err.message().contains("locked"), "{}", err.message());
}

/// Agents see an `activate` (which publishes nothing new) only through these fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_bundle_names_the_keys_that_sign_now() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let t = admin.get_trust_bundle(pb::GetTrustBundleRequest {}).await.unwrap().into_inner();
    let sha = |der: &[u8]| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>();
    let x509 = sigil_core::pem::certificate_ders(&t.x509_authorities_pem, "bundle").unwrap();
    assert_eq!(t.x509_signing_sha256, sha(&x509[0]));
    let jwks: serde_json::Value = serde_json::from_str(&t.jwks_json).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], t.jwt_signing_kid.as_str());
    let id = Identity::from_pem(&std::fs::read_to_string(b.dir.path().join("admin.identity")).unwrap()).unwrap();
    let internal = sigil_core::pem::certificate_ders(&id.ca_pem, "internal CA").unwrap();
    assert_eq!(t.internal_signing_sha256, sha(&internal[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_resources_ca_keys_and_audit() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup_ci_bot(&mut admin, 3).await;
    let bundle1 = admin.get_trust_bundle(pb::GetTrustBundleRequest {}).await.unwrap().into_inner();
    let audit1 = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    drop(admin);
    let dir = b.stop().await;
    let b2 = Broker::start_in(dir).await;
    let mut admin = b2.admin().await;
    let bundle2 = admin.get_trust_bundle(pb::GetTrustBundleRequest {}).await.unwrap().into_inner();
    assert_eq!(bundle1.jwks_json, bundle2.jwks_json);
    assert_eq!(bundle1.x509_authorities_pem, bundle2.x509_authorities_pem);
    assert_eq!(admin.get_bot(pb::GetRequest { name: "ci".into() }).await.unwrap().into_inner().roles, vec!["ci".to_string()]);
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "t1".into() }).await.unwrap().into_inner().max_uses, 3);
    let audit2 = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    assert!(audit2.len() >= audit1.len());
    assert_eq!(&audit2[..audit1.len()], &audit1[..]);
}

/// Callers are remembered per certificate between requests; a committed change
/// to the role or the bot must still apply to the very next request on an
/// already open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_bot_changes_apply_to_the_next_request_of_an_open_connection() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let mut bot = b.join_as(&secret).await.unwrap();
    let (_, csr) = key_and_csr().unwrap();
    let req = pb::IssueX509SvidRequest { csr, spiffe_id: "spiffe://example.org/ci/ci/deploy".into(), ..Default::default() };
    for _ in 0..3 {
        bot.issue_x509_svid(req.clone()).await.unwrap();
    }
    let role = admin.get_role(pb::GetRequest { name: "ci".into() }).await.unwrap().into_inner();
    let mut narrowed = role.clone();
    narrowed.allow = Some(pb::RoleAllow { spiffe_ids: vec!["/other/**".into()], ..Default::default() });
    admin.update_role(narrowed).await.unwrap();
    let err = bot.issue_x509_svid(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());

    let bot_doc = admin.get_bot(pb::GetRequest { name: "ci".into() }).await.unwrap().into_inner();
    admin.delete_bot(pb::DeleteRequest { name: "ci".into(), revision: bot_doc.revision }).await.unwrap();
    let err = bot.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_issues_and_audits_each_entry_on_its_own() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let mut bot = b.join_as(&secret).await.unwrap();
    let x509 = |id: &str| pb::IssueX509SvidRequest { csr: key_and_csr().unwrap().1, spiffe_id: id.into(), ..Default::default() };
    let jwt = |id: &str, aud: &[&str]| pb::IssueJwtSvidRequest {
        spiffe_id: id.into(),
        audiences: aud.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    let r = bot
        .batch_issue_svids(pb::BatchIssueSvidsRequest {
            x509: vec![x509("spiffe://example.org/ci/ci/a"), x509("spiffe://example.org/prod/db"), x509("spiffe://example.org/ci/ci/b")],
            jwt: vec![jwt("spiffe://example.org/ci/ci/a", &["sts.amazonaws.com"]), jwt("spiffe://example.org/ci/ci/a", &[])],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.bundle_pem.contains("BEGIN CERTIFICATE"));
    let ids: Vec<String> = r.x509.iter().map(|e| e.svid.as_ref().map(|s| s.spiffe_id.clone()).unwrap_or_default()).collect();
    assert_eq!(ids, ["spiffe://example.org/ci/ci/a", "", "spiffe://example.org/ci/ci/b"]);
    let denied = r.x509[1].error.as_ref().unwrap();
    assert_eq!(denied.code, Code::PermissionDenied as i32);
    assert!(denied.message.contains("/ci/ci/**"), "{}", denied.message);
    for e in [&r.x509[0], &r.x509[2]] {
        let pem = &e.svid.as_ref().unwrap().certificate_pem;
        let der = sigil_agent::bundle::pem_certs(pem).unwrap().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let bundle = sigil_agent::bundle::pem_certs(&r.bundle_pem).unwrap().remove(0);
        let (_, ca) = x509_parser::parse_x509_certificate(&bundle).unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
    }
    assert!(r.jwt[0].svid.as_ref().unwrap().token.split('.').count() == 3);
    assert_eq!(r.jwt[1].error.as_ref().unwrap().code, Code::InvalidArgument as i32);
    assert_eq!(audit_count(&mut admin, "svid.x509", "ok").await, 2);
    assert_eq!(audit_count(&mut admin, "svid.x509", "denied").await, 1);
    assert_eq!(audit_count(&mut admin, "svid.jwt", "ok").await, 1);
    assert_eq!(audit_count(&mut admin, "svid.jwt", "denied").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_oversized_batch_is_refused_and_issues_nothing() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let mut bot = b.join_as(&secret).await.unwrap();
    let err = bot.batch_issue_svids(pb::BatchIssueSvidsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let jwt = pb::IssueJwtSvidRequest { spiffe_id: "spiffe://example.org/ci/ci/a".into(), audiences: vec!["sts.amazonaws.com".into()], ..Default::default() };
    let err = bot.batch_issue_svids(pb::BatchIssueSvidsRequest { x509: vec![], jwt: vec![jwt; 65] }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("1 to 64"), "{}", err.message());
    assert_eq!(audit_count(&mut admin, "svid.jwt", "ok").await, 0);
}
