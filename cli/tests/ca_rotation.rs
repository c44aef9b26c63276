//! CA rotation through the API (`GetCaStatus`, `RotateCa`) on the real broker:
//! prepare publishes a key that signs nothing, activate signs with it while the
//! old key stays published, retire unpublishes the old key (refused before
//! retire_safe_at unless forced); every replica on one PostgreSQL follows.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::{replicas_on_postgres, Broker};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

async fn rotate(c: &mut SigilClient<Channel>, purpose: &str, phase: &str, force: bool) -> Result<pb::CaStatus, tonic::Status> {
    c.rotate_ca(pb::RotateCaRequest { purpose: purpose.into(), phase: phase.into(), force }).await.map(|r| r.into_inner())
}

async fn status(c: &mut SigilClient<Channel>) -> pb::CaStatus {
    c.get_ca_status(pb::GetCaStatusRequest {}).await.unwrap().into_inner()
}

/// Id of the `purpose` key in `state`.
fn key(s: &pb::CaStatus, purpose: &str, state: &str) -> pb::CaKey {
    s.keys.iter().find(|k| k.purpose == purpose && k.state == state).cloned().unwrap_or_else(|| panic!("no {state} {purpose} key in {s:?}"))
}

async fn bundle(c: &mut SigilClient<Channel>) -> pb::TrustBundle {
    c.get_trust_bundle(pb::GetTrustBundleRequest {}).await.unwrap().into_inner()
}

fn roots(b: &pb::TrustBundle) -> Vec<Vec<u8>> {
    sigil_core::pem::certificate_ders(&b.x509_authorities_pem, "bundle").unwrap()
}

fn sha256_hex(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Fingerprints of the bundle's X.509 authorities.
fn root_prints(b: &pb::TrustBundle) -> Vec<String> {
    roots(b).iter().map(|d| sha256_hex(d)).collect()
}

fn jwks_kids(b: &pb::TrustBundle) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&b.jwks_json).unwrap();
    v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
}

/// Issues an X.509-SVID and returns the fingerprint of the bundle root whose
/// key verifies it (the bundle sent with it).
async fn x509_signer(c: &mut SigilClient<Channel>) -> String {
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let req = pb::IssueX509SvidRequest { csr, spiffe_id: "spiffe://example.org/w".into(), ..Default::default() };
    let s = c.issue_x509_svid(req).await.unwrap().into_inner();
    let leaf = sigil_core::pem::certificate_ders(&s.certificate_pem, "svid").unwrap().remove(0);
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    for root in sigil_core::pem::certificate_ders(&s.bundle_pem, "bundle").unwrap() {
        let (_, r) = x509_parser::parse_x509_certificate(&root).unwrap();
        if leaf.verify_signature(Some(r.public_key())).is_ok() {
            return sha256_hex(&root);
        }
    }
    panic!("no root of the bundle sent with the SVID verifies it");
}

async fn jwt_kid(c: &mut SigilClient<Channel>) -> String {
    let req = pb::IssueJwtSvidRequest { spiffe_id: "spiffe://example.org/w".into(), audiences: vec!["a".into()], ..Default::default() };
    let t = c.issue_jwt_svid(req).await.unwrap().into_inner().token;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.split('.').next().unwrap()).unwrap();
    serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_x509_rotation_publishes_then_signs_then_unpublishes_the_old_ca() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let s = status(&mut admin).await;
    assert_eq!(s.phases.get("x509-svid").map(String::as_str), Some("standby"), "{s:?}");
    let old = key(&s, "x509-svid", "active");
    assert_eq!(old.backend, "sealed");
    assert_eq!(root_prints(&bundle(&mut admin).await), vec![old.fingerprint.clone()]);
    assert_eq!(x509_signer(&mut admin).await, old.fingerprint);

    let mut sequence = bundle(&mut admin).await.sequence;
    let spiffe_sequence = |b: &pb::TrustBundle| serde_json::from_str::<serde_json::Value>(&b.spiffe_bundle_json).unwrap()["spiffe_sequence"].as_i64().unwrap();
    let s = rotate(&mut admin, "x509-svid", "prepare", false).await.unwrap();
    assert_eq!(s.phases["x509-svid"], "prepared");
    let new = key(&s, "x509-svid", "prepared");
    let t = bundle(&mut admin).await;
    assert!(t.sequence > sequence && spiffe_sequence(&t) == t.sequence, "each step grows the bundle sequence");
    sequence = t.sequence;
    let published = root_prints(&bundle(&mut admin).await);
    assert!(published.contains(&old.fingerprint) && published.contains(&new.fingerprint), "both published: {published:?}");
    assert_eq!(x509_signer(&mut admin).await, old.fingerprint, "a prepared key signs nothing yet");
    let again = rotate(&mut admin, "x509-svid", "prepare", false).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("already prepared"), "{again:?}");

    let s = rotate(&mut admin, "x509-svid", "activate", false).await.unwrap();
    assert_eq!(s.phases["x509-svid"], "activated");
    let previous = key(&s, "x509-svid", "previous");
    assert_eq!(previous.id, old.id);
    assert!(previous.deactivated_at > 0 && previous.retire_safe_at > previous.deactivated_at, "{previous:?}");
    assert_eq!(key(&s, "x509-svid", "active").id, new.id);
    assert_eq!(x509_signer(&mut admin).await, new.fingerprint, "the activated key signs");
    assert!(bundle(&mut admin).await.sequence > sequence);
    sequence = bundle(&mut admin).await.sequence;
    assert_eq!(root_prints(&bundle(&mut admin).await).len(), 2, "the previous key stays published");

    let early = rotate(&mut admin, "x509-svid", "retire", false).await.unwrap_err();
    assert_eq!(early.code(), tonic::Code::FailedPrecondition, "{early:?}");
    assert!(early.message().contains("--force"), "{early:?}");
    let s = rotate(&mut admin, "x509-svid", "retire", true).await.unwrap();
    assert_eq!(s.phases["x509-svid"], "standby");
    assert_eq!(key(&s, "x509-svid", "retired").id, old.id);
    assert_eq!(root_prints(&bundle(&mut admin).await), vec![new.fingerprint.clone()], "the retired key is unpublished");
    assert!(bundle(&mut admin).await.sequence > sequence);
    assert_eq!(x509_signer(&mut admin).await, new.fingerprint);
    // Each step was audited with the key ids it moved.
    let events = admin.list_audit_events(pb::ListAuditEventsRequest { after_id: 0, limit: 0 }).await.unwrap().into_inner().items;
    let rotations: Vec<_> = events.iter().filter(|e| e.kind == "ca.rotate").map(|e| (e.outcome.as_str(), e.detail_json.as_str())).collect();
    assert_eq!(rotations.len(), 5, "{rotations:?}");
    assert!(rotations[2].1.contains(&format!("\"activated\":\"{}\"", new.id)) && rotations[2].1.contains(&old.id), "{rotations:?}");
    assert_eq!(rotations[3].0, "denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_key_rotation_changes_the_kid_and_unpublishes_the_old_key_at_retire() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let old = key(&status(&mut admin).await, "jwt-svid", "active");
    assert_eq!(jwt_kid(&mut admin).await, old.id);
    let new = key(&rotate(&mut admin, "jwt-svid", "prepare", false).await.unwrap(), "jwt-svid", "prepared");
    assert_eq!(new.fingerprint, new.id, "a JWT key's fingerprint is its kid (RFC 7638 thumbprint)");
    let kids = jwks_kids(&bundle(&mut admin).await);
    assert!(kids.contains(&old.id) && kids.contains(&new.id), "{kids:?}");
    assert_eq!(jwt_kid(&mut admin).await, old.id, "a prepared key signs nothing yet");
    rotate(&mut admin, "jwt-svid", "activate", false).await.unwrap();
    assert_eq!(jwt_kid(&mut admin).await, new.id);
    assert_eq!(jwks_kids(&bundle(&mut admin).await).len(), 2);
    rotate(&mut admin, "jwt-svid", "retire", true).await.unwrap();
    assert_eq!(jwks_kids(&bundle(&mut admin).await), vec![new.id.clone()]);
    // The other purposes did not move.
    let s = status(&mut admin).await;
    assert_eq!((s.phases["x509-svid"].as_str(), s.phases["internal"].as_str()), ("standby", "standby"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_internal_ca_is_published_to_clients_and_a_rollback_drops_it() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let s = rotate(&mut admin, "internal", "prepare", false).await.unwrap();
    let prepared = key(&s, "internal", "prepared");
    // Clients get every published internal CA with an identity (ca_pem).
    admin
        .create_bot(pb::Bot { name: "w".into(), ..Default::default() })
        .await
        .unwrap();
    let t = admin
        .create_join_token(pb::JoinToken { name: "t".into(), bot: "w".into(), method: "token".into(), expires_at: common::now() + 600, max_uses: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let r = b.anonymous().await.join(pb::JoinRequest { method: "token".into(), token: t.secret, csr, ..Default::default() }).await.unwrap().into_inner();
    let cas: Vec<String> = sigil_core::pem::certificate_ders(&r.ca_pem, "ca").unwrap().iter().map(|d| sha256_hex(d)).collect();
    assert!(cas.contains(&prepared.fingerprint) && cas.len() == 2, "{cas:?}");
    let before = bundle(&mut admin).await.sequence;
    let s = rotate(&mut admin, "internal", "rollback", false).await.unwrap();
    assert_eq!(s.phases["internal"], "standby");
    let dropped = s.keys.iter().find(|k| k.id == prepared.id).unwrap();
    assert_eq!((dropped.state.as_str(), dropped.activated_at), ("retired", 0), "kept for the record, never active: {s:?}");
    assert!(bundle(&mut admin).await.sequence > before, "the bundle sequence grows at a rollback too");
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let t = admin
        .create_join_token(pb::JoinToken { name: "t2".into(), bot: "w".into(), method: "token".into(), expires_at: common::now() + 600, max_uses: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let r = b.anonymous().await.join(pb::JoinRequest { method: "token".into(), token: t.secret, csr, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(sigil_core::pem::certificate_ders(&r.ca_pem, "ca").unwrap().len(), 1, "the rolled back CA is unpublished");
    let nothing = rotate(&mut admin, "internal", "rollback", false).await.unwrap_err();
    assert_eq!(nothing.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_without_the_ca_update_verb_cannot_rotate_and_is_audited() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let rules = vec![pb::Rule { resources: vec!["ca".into()], verbs: vec!["read".into()], names: vec![] }];
    let allow = pb::RoleAllow { rules, ..Default::default() };
    admin.create_role(pb::Role { name: "ca-reader".into(), allow: Some(allow), ..Default::default() }).await.unwrap();
    admin.create_bot(pb::Bot { name: "viewer".into(), roles: vec!["ca-reader".into()], ..Default::default() }).await.unwrap();
    let t = admin
        .create_join_token(pb::JoinToken { name: "v".into(), bot: "viewer".into(), method: "token".into(), expires_at: common::now() + 600, max_uses: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut viewer = b.join_as(&t.secret).await.unwrap();
    assert_eq!(status(&mut viewer).await.keys.len(), 7, "read is granted (x509-svid, internal, jwt-svid, ssh-user, ssh-host, database, kubernetes)");
    let denied = rotate(&mut viewer, "x509-svid", "prepare", false).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert_eq!(status(&mut admin).await.phases["x509-svid"], "standby", "nothing was prepared");
    let events = admin.list_audit_events(pb::ListAuditEventsRequest { after_id: 0, limit: 0 }).await.unwrap().into_inner().items;
    assert!(events.iter().any(|e| e.kind == "ca.rotate" && e.actor == "viewer" && e.outcome == "denied"), "{events:?}");
    let bad = rotate(&mut admin, "x509", "prepare", false).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
}

/// Waits until `f` holds, at most `bound`; returns how long it took.
async fn within<F, Fut>(bound: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < bound, "not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// The documented bound: one store change poll (0.5 s) + one watch tick
/// (0.25 s) + a reload, with room for a loaded CI machine.
const FOLLOW_BOUND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_follows_a_rotation_made_on_another() {
    let (a, b, _url) = replicas_on_postgres(|_| {}).await;
    let (mut ca, mut cb) = (a.admin().await, b.admin().await);
    let old = key(&status(&mut ca).await, "x509-svid", "active");
    assert_eq!(x509_signer(&mut cb).await, old.fingerprint);

    let new = key(&rotate(&mut ca, "x509-svid", "prepare", false).await.unwrap(), "x509-svid", "prepared");
    let took = within(FOLLOW_BOUND, || {
        let mut cb = cb.clone();
        let p = new.fingerprint.clone();
        async move { root_prints(&bundle(&mut cb).await).contains(&p) }
    })
    .await;
    eprintln!("B published A's prepared key after {took:?}");
    assert_eq!(x509_signer(&mut cb).await, old.fingerprint, "B does not sign with a prepared key");

    rotate(&mut ca, "x509-svid", "activate", false).await.unwrap();
    let took = within(FOLLOW_BOUND, || {
        let mut cb = cb.clone();
        let p = new.fingerprint.clone();
        async move { x509_signer(&mut cb).await == p }
    })
    .await;
    eprintln!("B signed with the key A activated after {took:?}");
    // The same step on B now is a refusal, not a second activation.
    let again = rotate(&mut cb, "x509-svid", "activate", false).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");

    rotate(&mut cb, "x509-svid", "retire", true).await.unwrap();
    within(FOLLOW_BOUND, || {
        let mut ca = ca.clone();
        let p = new.fingerprint.clone();
        async move { root_prints(&bundle(&mut ca).await) == vec![p.clone()] }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_step_sent_to_two_replicas_at_once_lands_once() {
    let (a, b, _url) = replicas_on_postgres(|_| {}).await;
    let (mut ca, mut cb) = (a.admin().await, b.admin().await);
    let (ra, rb) = tokio::join!(rotate(&mut ca, "jwt-svid", "prepare", false), rotate(&mut cb, "jwt-svid", "prepare", false));
    assert_eq!([ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count(), 1, "{ra:?} {rb:?}");
    let s = status(&mut ca).await;
    assert_eq!(s.keys.iter().filter(|k| k.purpose == "jwt-svid" && k.state == "prepared").count(), 1);
    within(FOLLOW_BOUND, || {
        let mut cb = cb.clone();
        async move { status(&mut cb).await.phases["jwt-svid"] == "prepared" }
    })
    .await;
    let (ra, rb) = tokio::join!(rotate(&mut ca, "jwt-svid", "activate", false), rotate(&mut cb, "jwt-svid", "activate", false));
    assert_eq!([ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count(), 1, "{ra:?} {rb:?}");
    let s = status(&mut ca).await;
    assert_eq!(s.keys.iter().filter(|k| k.purpose == "jwt-svid" && k.state == "active").count(), 1);
    assert_eq!(s.keys.iter().filter(|k| k.purpose == "jwt-svid" && k.state == "previous").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_cannot_raise_an_svid_lifetime_past_the_configured_maximum() {
    // retire_safe_at counts on the configured maxima: a role's larger cap must not outlive them.
    let b = Broker::start_configured(tempfile::tempdir().unwrap(), |cfg| {
        cfg.x509_svid_max_ttl = Some(600);
        cfg.jwt_svid_max_ttl = Some(300);
    })
    .await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow {
        spiffe_ids: vec!["/long".into()],
        audiences: vec!["*".into()],
        max_x509_ttl_seconds: 7200,
        max_jwt_ttl_seconds: 7200,
        ..Default::default()
    };
    admin.create_role(pb::Role { name: "long".into(), allow: Some(allow), ..Default::default() }).await.unwrap();
    admin.create_bot(pb::Bot { name: "long".into(), roles: vec!["long".into()], ..Default::default() }).await.unwrap();
    let t = admin
        .create_join_token(pb::JoinToken { name: "l".into(), bot: "long".into(), method: "token".into(), expires_at: common::now() + 600, max_uses: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut bot = b.join_as(&t.secret).await.unwrap();
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let x = bot
        .issue_x509_svid(pb::IssueX509SvidRequest { csr, spiffe_id: "spiffe://example.org/long".into(), ttl_seconds: 7200, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(x.expires_at <= common::now() + 600, "X.509-SVID capped at x509_svid_max_ttl: {}", x.expires_at - common::now());
    let j = bot
        .issue_jwt_svid(pb::IssueJwtSvidRequest { spiffe_id: "spiffe://example.org/long".into(), audiences: vec!["a".into()], ttl_seconds: 7200, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(j.expires_at <= common::now() + 300, "JWT-SVID capped at jwt_svid_max_ttl: {}", j.expires_at - common::now());
}
