//! Challenge joins across broker replicas on one PostgreSQL (a throwaway
//! cluster on loopback, `sigil_broker::store::pg_harness`): the pending
//! challenges live in the shared store, so `BeginJoin` and `Join` may reach
//! different replicas; a challenge is still single use and short-lived, and
//! issuing one changes no cached state (the store's change version stays).
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_refused, last_join_denial, now, replicas_on_postgres, Broker};
use sigil_agent::join::client::bound_keypair::AgentKey;
use sigil_broker::store::postgres::PgStore;
use sigil_broker::store::Store;
use sigil_schemas::sigil::v1 as pb;

/// Bot `edge` and a bound-keypair join token `name` with `key` pre-registered.
async fn keypair_token(b: &Broker, name: &str, key: &AgentKey) {
    let mut admin = b.admin().await;
    if admin.get_bot(pb::GetRequest { name: "edge".into() }).await.is_err() {
        admin.create_bot(pb::Bot { name: "edge".into(), ..Default::default() }).await.unwrap();
    }
    let config = [("public_key".to_string(), key.public_key_b64())].into();
    let t = pb::JoinToken { name: name.into(), bot: "edge".into(), method: "bound_keypair".into(), expires_at: now() + 3600, max_uses: 100, config, ..Default::default() };
    admin.create_join_token(t).await.unwrap();
}

async fn begin(b: &Broker, token: &str, key: &AgentKey) -> pb::BeginJoinResponse {
    let req = pb::BeginJoinRequest { method: "bound_keypair".into(), token_name: token.into(), payload: key.begin_payload() };
    b.anonymous().await.begin_join(req).await.unwrap().into_inner()
}

/// The Join answering `c` at `sequence`, signed by `key`.
fn answer(token: &str, key: &AgentKey, c: &pb::BeginJoinResponse, sequence: i64) -> pb::JoinRequest {
    let payload = key.answer(token, &c.challenge_id, &c.payload, sequence, "").unwrap();
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    pb::JoinRequest { method: "bound_keypair".into(), token_name: token.into(), challenge_id: c.challenge_id.clone(), payload, csr, ..Default::default() }
}

/// The store-wide change version, as a replica starting now reads it.
async fn change_version(url: &str) -> u64 {
    PgStore::connect(url).await.unwrap().change_counter()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_keypair_join_begun_on_one_replica_completes_on_the_other() {
    let (a, b, _url) = replicas_on_postgres(|_| {}).await;
    let key = AgentKey::generate().unwrap();
    keypair_token(&a, "edge-kp", &key).await;
    let c = begin(&a, "edge-kp", &key).await;
    let id = b.anonymous().await.join(answer("edge-kp", &key, &c, 0)).await.expect("begun on A, joined on B").into_inner();
    assert_eq!(id.bot, "edge");
    // And the other way round, at the next sequence.
    let c = begin(&b, "edge-kp", &key).await;
    a.anonymous().await.join(answer("edge-kp", &key, &c, 1)).await.expect("begun on B, joined on A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_challenge_answered_on_both_replicas_at_once_joins_once_and_locks_nothing() {
    let (a, b, _url) = replicas_on_postgres(|_| {}).await;
    let key = AgentKey::generate().unwrap();
    keypair_token(&a, "edge-kp", &key).await;
    let c = begin(&a, "edge-kp", &key).await;
    let (mut ca, mut cb) = (a.anonymous().await, b.anonymous().await);
    let (ra, rb) = tokio::join!(ca.join(answer("edge-kp", &key, &c, 0)), cb.join(answer("edge-kp", &key, &c, 0)));
    assert_eq!([&ra, &rb].iter().filter(|r| r.is_ok()).count(), 1, "A: {ra:?}, B: {rb:?}");
    assert_refused(ra.as_ref().err().or(rb.as_ref().err()).unwrap());
    let why = last_join_denial(&mut a.admin().await).await;
    assert!(why.contains("unknown, used or expired challenge_id"), "the loser found the challenge taken, it was no copy: {why}");
    // The binding is not locked: the next join, through either replica, works.
    let c = begin(&b, "edge-kp", &key).await;
    b.anonymous().await.join(answer("edge-kp", &key, &c, 1)).await.expect("not locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_challenge_is_refused_on_every_replica() {
    let (a, b, url) = replicas_on_postgres(|_| {}).await;
    let key = AgentKey::generate().unwrap();
    keypair_token(&a, "edge-kp", &key).await;
    let c = begin(&a, "edge-kp", &key).await;
    // As if its 60 s had passed (the broker's clock is the system's).
    PgStore::connect(&url).await.unwrap().execute_raw("UPDATE join_challenges SET expires_at = expires_at - 60").await.unwrap();
    for r in [&b, &a] {
        let err = r.anonymous().await.join(answer("edge-kp", &key, &c, 0)).await.unwrap_err();
        assert_refused(&err);
        assert!(last_join_denial(&mut a.admin().await).await.contains("unknown, used or expired challenge_id"));
    }
    assert!(PgStore::connect(&url).await.unwrap().keypair_binding("edge-kp").await.unwrap().is_none(), "nothing bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_join_does_not_move_the_store_change_version() {
    let (a, b, url) = replicas_on_postgres(|_| {}).await;
    let key = AgentKey::generate().unwrap();
    keypair_token(&a, "edge-kp", &key).await;
    let before = change_version(&url).await;
    let mut last = None;
    for i in 0..40 {
        last = Some(begin(if i % 2 == 0 { &a } else { &b }, "edge-kp", &key).await);
    }
    assert_eq!(change_version(&url).await, before, "BeginJoin retired every replica's caches");
    // Answering one (taking it) moves it only by the join's own writes.
    b.anonymous().await.join(answer("edge-kp", &key, &last.unwrap(), 0)).await.unwrap();
    assert!(change_version(&url).await > before);
}
