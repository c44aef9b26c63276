#![allow(clippy::unwrap_used)]
//! Locks against the real broker, in process, over mTLS: each target kind
//! (bot, bot instance, join token, SPIFFE ID pattern) stops what it names and
//! nothing else, from the next request on, on connections opened before the
//! lock too; the reason reaches the audit log, never the locked caller; an
//! unlock restores the caller without a new join; a lock made on one replica
//! is enforced by another (PostgreSQL). Lock expiry with an injected clock:
//! `sigil_broker::service::locks` tests. With the real agent:
//! acceptance-tests/agent/test_locks.py.

mod common;

use common::{assert_refused, last_join_denial, now, replicas_on_postgres, Broker};
use sigil_broker::service::locks::LOCKED;
use sigil_core::csr::key_and_csr;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

type Client = SigilClient<Channel>;

const REASON: &str = "key found on a pastebin; ticket SEC-4711";

/// Role and bot `name` (SVIDs under /svc/**, any audience) and join token
/// `token` for `uses` joins; returns the token's secret.
async fn bot(admin: &mut Client, name: &str, token: &str, uses: i64) -> String {
    if admin.get_bot(pb::GetRequest { name: name.into() }).await.is_err() {
        let allow = pb::RoleAllow { spiffe_ids: vec!["/svc/**".into()], audiences: vec!["*".into()], ..Default::default() };
        admin.create_role(pb::Role { name: name.into(), allow: Some(allow), ..Default::default() }).await.unwrap();
        admin.create_bot(pb::Bot { name: name.into(), roles: vec![name.into()], ..Default::default() }).await.unwrap();
    }
    let t = pb::JoinToken { name: token.into(), bot: name.into(), expires_at: now() + 600, max_uses: uses, ..Default::default() };
    admin.create_join_token(t).await.unwrap().into_inner().secret
}

fn target(kind: &str, value: &str) -> pb::LockTarget {
    let mut t = pb::LockTarget::default();
    match kind {
        "bot" => t.bot = value.into(),
        "bot_instance" => t.bot_instance = value.into(),
        "join_token" => t.join_token = value.into(),
        _ => t.spiffe_id = value.into(),
    }
    t
}

fn lock(name: &str, kind: &str, value: &str) -> pb::Lock {
    pb::Lock { name: name.into(), target: Some(target(kind, value)), reason: REASON.into(), ..Default::default() }
}

fn x509(id: &str) -> pb::IssueX509SvidRequest {
    pb::IssueX509SvidRequest { csr: key_and_csr().unwrap().1, spiffe_id: format!("spiffe://example.org{id}"), ..Default::default() }
}

fn jwt(id: &str) -> pb::IssueJwtSvidRequest {
    pb::IssueJwtSvidRequest { spiffe_id: format!("spiffe://example.org{id}"), audiences: vec!["aud".into()], ..Default::default() }
}

fn renew() -> pb::RenewIdentityRequest {
    pb::RenewIdentityRequest { csr: key_and_csr().unwrap().1, ttl_seconds: 0 }
}

/// The status of a locked caller's request: PermissionDenied with the one
/// generic message, never the lock's reason or name.
fn assert_locked<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    let s = r.expect_err(what);
    assert_eq!((s.code(), s.message()), (Code::PermissionDenied, LOCKED), "{what}: {s:?}");
    let all = format!("{s:?}");
    assert!(!all.contains("pastebin") && !all.contains("SEC-4711"), "{what}: the reason leaked to the caller: {all}");
}

/// Every request a bot identity makes, on the client's one connection.
async fn every_call_is_locked(c: &mut Client) {
    assert_locked(c.who_am_i(pb::WhoAmIRequest {}).await, "WhoAmI");
    assert_locked(c.renew_identity(renew()).await, "RenewIdentity");
    assert_locked(c.issue_x509_svid(x509("/svc/a")).await, "IssueX509Svid");
    assert_locked(c.issue_jwt_svid(jwt("/svc/a")).await, "IssueJwtSvid");
    assert_locked(c.batch_issue_svids(pb::BatchIssueSvidsRequest { x509: vec![x509("/svc/a")], jwt: vec![] }).await, "BatchIssueSvids");
    assert_locked(c.get_trust_bundle(pb::GetTrustBundleRequest {}).await, "GetTrustBundle");
    assert_locked(c.heartbeat(pb::HeartbeatRequest { host_name: "h".into(), ..Default::default() }).await, "Heartbeat");
    assert_locked(c.list_locks(pb::ListRequest::default()).await, "ListLocks");
}

/// Audit events of `kind`, oldest first.
async fn audit(admin: &mut Client, kind: &str) -> Vec<pb::AuditEvent> {
    let items = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    items.into_iter().filter(|e| e.kind == kind).collect()
}

async fn token_uses(admin: &mut Client, name: &str) -> i64 {
    admin.get_join_token(pb::GetRequest { name: name.into() }).await.unwrap().into_inner().uses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_bots_open_connection_is_refused_from_its_next_request_and_an_unlock_restores_it() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "ci", "ci-t", 3).await;
    // One client is one HTTP/2 connection, opened and used before the lock.
    let mut ci = b.join_as(&secret).await.unwrap();
    ci.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    ci.issue_x509_svid(x509("/svc/a")).await.unwrap();

    let created = admin.create_lock(lock("stop-ci", "bot", "ci")).await.unwrap().into_inner();
    assert_eq!((created.created_by.as_str(), created.revision), ("admin", 1));
    every_call_is_locked(&mut ci).await;
    // Joining again as the bot is refused too, and spends no use of the token.
    let uses = token_uses(&mut admin, "ci-t").await;
    assert_refused(&b.join_as(&secret).await.unwrap_err());
    assert_eq!(token_uses(&mut admin, "ci-t").await, uses, "a refused join spends nothing");
    assert!(last_join_denial(&mut admin).await.contains("stop-ci"));
    // The operator sees which lock and why.
    let refused = audit(&mut admin, "locked").await;
    let e = refused.first().expect("the refusal is audited");
    assert_eq!((e.actor.as_str(), e.outcome.as_str()), ("ci", "denied"));
    assert!(e.detail_json.contains("stop-ci") && e.detail_json.contains("SEC-4711"), "{e:?}");
    let made = audit(&mut admin, "lock.create").await;
    assert!(made.iter().any(|e| e.resource == "stop-ci" && e.actor == "admin" && e.detail_json.contains("pastebin")), "{made:?}");

    admin.delete_lock(pb::DeleteRequest { name: "stop-ci".into(), revision: 0 }).await.unwrap();
    // Same connection, same identity: no new join needed.
    ci.who_am_i(pb::WhoAmIRequest {}).await.expect("unlocked");
    ci.renew_identity(renew()).await.expect("renewal after the unlock");
    assert!(audit(&mut admin, "lock.delete").await.iter().any(|e| e.resource == "stop-ci"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_lock_stops_that_agent_only() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "web", "web-t", 2).await;
    let mut one = b.join_as(&secret).await.unwrap();
    let mut two = b.join_as(&secret).await.unwrap();
    one.heartbeat(pb::HeartbeatRequest { host_name: "host-one".into(), ..Default::default() }).await.unwrap();
    let items = admin.list_bot_instances(pb::ListBotInstancesRequest { bot: "web".into(), ..Default::default() }).await.unwrap().into_inner().items;
    let id_one = items.iter().find(|i| i.heartbeat.as_ref().is_some_and(|h| h.host_name == "host-one")).unwrap().id.clone();

    admin.create_lock(lock("stop-one", "bot_instance", &id_one)).await.unwrap();
    every_call_is_locked(&mut one).await;
    two.who_am_i(pb::WhoAmIRequest {}).await.expect("the bot's other instance is not locked");
    two.renew_identity(renew()).await.expect("the other instance renews");
    let refused = audit(&mut admin, "locked").await;
    assert!(refused.iter().all(|e| e.resource == id_one), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_lock_refuses_joins_with_that_token_and_spends_nothing() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let locked_secret = bot(&mut admin, "db", "db-t1", 5).await;
    let other_secret = bot(&mut admin, "db", "db-t2", 5).await;
    let mut joined = b.join_as(&locked_secret).await.unwrap();

    admin.create_lock(lock("stop-t1", "join_token", "db-t1")).await.unwrap();
    assert_refused(&b.join_as(&locked_secret).await.unwrap_err());
    assert_eq!(token_uses(&mut admin, "db-t1").await, 1, "the refused join spent no use");
    let reason = last_join_denial(&mut admin).await;
    assert!(reason.contains("stop-t1") && reason.contains("SEC-4711"), "{reason}");
    b.join_as(&other_secret).await.expect("another token of the same bot joins");
    joined.who_am_i(pb::WhoAmIRequest {}).await.expect("an instance joined earlier keeps working: the lock stops joins");
    joined.renew_identity(renew()).await.expect("and renews");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spiffe_id_lock_refuses_matching_svids_only() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "api", "api-t", 1).await;
    let mut api = b.join_as(&secret).await.unwrap();
    admin.create_lock(lock("stop-web", "spiffe_id", "/svc/web/*")).await.unwrap();

    assert_locked(api.issue_x509_svid(x509("/svc/web/a")).await, "X.509 under the pattern");
    assert_locked(api.issue_jwt_svid(jwt("/svc/web/a")).await, "JWT under the pattern");
    api.issue_x509_svid(x509("/svc/web")).await.expect("/svc/web is not under /svc/web/*");
    api.issue_jwt_svid(jwt("/svc/api")).await.expect("another path");
    api.who_am_i(pb::WhoAmIRequest {}).await.expect("the bot itself is not locked");
    // A batch: the locked entry fails alone.
    let r = api
        .batch_issue_svids(pb::BatchIssueSvidsRequest { x509: vec![x509("/svc/web/b"), x509("/svc/api")], jwt: vec![jwt("/svc/web/c")] })
        .await
        .unwrap()
        .into_inner();
    let e = r.x509[0].error.as_ref().expect("locked entry refused");
    assert_eq!((e.code, e.message.as_str()), (Code::PermissionDenied as i32, LOCKED));
    assert!(r.x509[1].svid.is_some(), "{r:?}");
    assert_eq!(r.jwt[0].error.as_ref().map(|e| e.code), Some(Code::PermissionDenied as i32));
    let denied: Vec<_> = audit(&mut admin, "svid.x509").await.into_iter().filter(|e| e.outcome == "denied").collect();
    assert!(!denied.is_empty() && denied.iter().all(|e| e.detail_json.contains("stop-web") && e.detail_json.contains("SEC-4711")), "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_has_exactly_one_valid_target_and_a_bounded_reason() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let field = |s: tonic::Status| {
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        <tonic::Status as tonic_types::StatusExt>::get_error_details(&s).bad_request().unwrap().field_violations[0].field.clone()
    };
    let two = pb::LockTarget { bot: "a".into(), join_token: "b".into(), ..Default::default() };
    let cases: Vec<(pb::Lock, &str)> = vec![
        (pb::Lock { target: Some(two), ..lock("l", "bot", "x") }, "target"),
        (pb::Lock { target: None, ..lock("l", "bot", "x") }, "target"),
        (lock("l", "bot", "Not A Name"), "target.bot"),
        (lock("l", "spiffe_id", "svc/*"), "target.spiffe_id"),
        (lock("l", "spiffe_id", "/bot/{{bot.name}}"), "target.spiffe_id"),
        (lock("l", "bot_instance", "../x"), "target.bot_instance"),
        (pb::Lock { reason: "x".repeat(1025), ..lock("l", "bot", "x") }, "reason"),
        (pb::Lock { expires_at: now() - 1, ..lock("l", "bot", "x") }, "expires_at"),
        (lock("Bad Name", "bot", "x"), "name"),
        // The caller's own bot: it could not delete the lock afterwards.
        (lock("l", "bot", "admin"), "target.bot"),
    ];
    for (l, want) in cases {
        assert_eq!(field(admin.create_lock(l.clone()).await.unwrap_err()), want, "{l:?}");
    }
    assert!(admin.list_locks(pb::ListRequest::default()).await.unwrap().into_inner().items.is_empty(), "nothing was stored");
    let ok = pb::Lock { expires_at: now() + 3600, ..lock("later", "bot", "x") };
    admin.create_lock(ok.clone()).await.unwrap();
    assert_eq!(admin.create_lock(ok).await.unwrap_err().code(), Code::AlreadyExists);
    let got = admin.get_lock(pb::GetRequest { name: "later".into() }).await.unwrap().into_inner();
    assert_eq!((got.target.unwrap().bot.as_str(), got.reason.as_str(), got.created_by.as_str()), ("x", REASON, "admin"));
    admin.delete_lock(pb::DeleteRequest { name: "later".into(), revision: 0 }).await.unwrap();
    assert_eq!(admin.get_lock(pb::GetRequest { name: "later".into() }).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_need_the_lock_verbs() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let plain = bot(&mut admin, "plain", "plain-t", 1).await;
    let mut plain = b.join_as(&plain).await.unwrap();
    assert_eq!(plain.create_lock(lock("l", "bot", "x")).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(plain.list_locks(pb::ListRequest::default()).await.unwrap_err().code(), Code::PermissionDenied);

    let rules = vec![pb::Rule { resources: vec!["lock".into()], verbs: vec!["create".into(), "read".into(), "list".into(), "delete".into()], names: vec!["ops-*".into()] }];
    let allow = pb::RoleAllow { rules, ..Default::default() };
    admin.create_role(pb::Role { name: "locker".into(), allow: Some(allow), ..Default::default() }).await.unwrap();
    admin.create_bot(pb::Bot { name: "ops".into(), roles: vec!["locker".into()], ..Default::default() }).await.unwrap();
    let t = pb::JoinToken { name: "ops-t".into(), bot: "ops".into(), expires_at: now() + 600, max_uses: 1, ..Default::default() };
    let secret = admin.create_join_token(t).await.unwrap().into_inner().secret;
    let mut ops = b.join_as(&secret).await.unwrap();
    ops.create_lock(lock("ops-1", "bot", "plain")).await.expect("a name the rule grants");
    assert_eq!(ops.create_lock(lock("other", "bot", "plain")).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(ops.list_locks(pb::ListRequest::default()).await.unwrap().into_inner().items.len(), 1);
    assert_locked(plain.who_am_i(pb::WhoAmIRequest {}).await, "locked by ops");
    ops.delete_lock(pb::DeleteRequest { name: "ops-1".into(), revision: 0 }).await.unwrap();
    plain.who_am_i(pb::WhoAmIRequest {}).await.expect("unlocked");
}

/// How long until `f` answers as `done` says, polled every 20 ms, at most `bound`.
async fn within<F, Fut>(bound: Duration, mut f: F, done: impl Fn(&Result<pb::WhoAmIResponse, tonic::Status>) -> bool) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<pb::WhoAmIResponse, tonic::Status>>,
{
    let start = Instant::now();
    loop {
        let r = f().await;
        if done(&r) {
            return start.elapsed();
        }
        assert!(start.elapsed() < bound, "not within {bound:?}: last answer {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn who_am_i(c: &Client) -> impl std::future::Future<Output = Result<pb::WhoAmIResponse, tonic::Status>> {
    // A clone shares the connection.
    let mut c = c.clone();
    async move { c.who_am_i(pb::WhoAmIRequest {}).await.map(tonic::Response::into_inner) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_made_on_one_replica_is_enforced_by_the_other_on_an_open_connection() {
    let (a, b, _url) = replicas_on_postgres(|_| {}).await;
    let mut admin_a = a.admin().await;
    let secret = bot(&mut admin_a, "edge", "edge-t", 1).await;
    // An agent of B, on a connection opened before the lock.
    let mut on_b = b.join_as(&secret).await.unwrap();
    on_b.who_am_i(pb::WhoAmIRequest {}).await.unwrap();

    admin_a.create_lock(lock("stop-edge", "bot", "edge")).await.unwrap();
    // The documented bound: the PostgreSQL change poll (500 ms) plus one
    // poll query; 3 s leaves room for a loaded CI machine.
    let bound = Duration::from_secs(3);
    let took = within(bound, || who_am_i(&on_b), |r| r.as_ref().is_err_and(|s| s.code() == Code::PermissionDenied)).await;
    eprintln!("lock made on A enforced by B after {took:?}");
    assert_locked(on_b.who_am_i(pb::WhoAmIRequest {}).await, "on B");
    assert_locked(on_b.renew_identity(renew()).await, "renewal on B");

    admin_a.delete_lock(pb::DeleteRequest { name: "stop-edge".into(), revision: 0 }).await.unwrap();
    let took = within(bound, || who_am_i(&on_b), |r| r.is_ok()).await;
    eprintln!("unlock on A reached B after {took:?}");
}
