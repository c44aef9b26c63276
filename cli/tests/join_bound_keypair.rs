//! Bound-keypair joins against an in-process dev broker: registration with the
//! token's one-time secret or a pre-registered key, signed challenges, and a
//! copied key detected through the join sequence.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_refused, last_join_denial, now, Broker};
use sigil_agent::join::client::bound_keypair::{self, AgentKey, JoinState};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

async fn setup(admin: &mut SigilClient<Channel>, name: &str, config: &[(&str, String)]) -> String {
    if admin.get_bot(pb::GetRequest { name: "edge".into() }).await.is_err() {
        admin.create_bot(pb::Bot { name: "edge".into(), ..Default::default() }).await.unwrap();
    }
    admin
        .create_join_token(pb::JoinToken {
            name: name.into(),
            bot: "edge".into(),
            method: "bound_keypair".into(),
            expires_at: now() + 3600,
            max_uses: 100,
            config: config.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

/// One join from `sequence` with a new attempt (what an agent, or a copy of
/// it, does at rest); Ok(new sequence) or the refusal's code and the reason
/// the broker audited (the caller itself only gets the generic refusal).
async fn join(b: &Broker, key: &AgentKey, token: &str, sequence: i64, secret: Option<&str>) -> Result<i64, String> {
    join_state(b, key, token, &JoinState { sequence, attempt: None }.start().unwrap(), secret).await
}

/// One join with a saved state (sequence and attempt).
async fn join_state(b: &Broker, key: &AgentKey, token: &str, state: &JoinState, secret: Option<&str>) -> Result<i64, String> {
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let mut cl = b.anonymous().await;
    match bound_keypair::join(&mut cl, key, token, state, secret, csr, 0).await {
        Ok((r, next)) => {
            assert_eq!(r.bot, "edge");
            Ok(next)
        }
        Err(bound_keypair::ClientError::Broker(s)) => {
            assert_refused(&s);
            Err(format!("{:?}: {}", s.code(), last_join_denial(&mut b.admin().await).await))
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn registration_secret_binds_the_first_key_and_later_joins_sign_challenges() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup(&mut admin, "edge-1", &[]).await;
    let key = AgentKey::generate().unwrap();
    let err = join(&b, &key, "edge-1", 0, None).await.unwrap_err();
    assert!(err.contains("needs the token's registration secret"), "{err}");
    assert_eq!(join(&b, &key, "edge-1", 0, Some(&secret)).await.unwrap(), 1);
    assert_eq!(join(&b, &key, "edge-1", 1, None).await.unwrap(), 2);
    assert_eq!(join(&b, &key, "edge-1", 2, None).await.unwrap(), 3);
    // The secret was one-time, and the token now only accepts the bound key.
    let other = AgentKey::generate().unwrap();
    let err = join(&b, &other, "edge-1", 0, Some(&secret)).await.unwrap_err();
    assert!(err.contains("not the one bound"), "{err}");
}

#[tokio::test]
async fn a_second_agent_with_a_copied_key_is_detected_and_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup(&mut admin, "edge-2", &[]).await;
    let original = AgentKey::generate().unwrap();
    let mut seq = join(&b, &original, "edge-2", 0, Some(&secret)).await.unwrap();
    // An attacker copies the key and the agent's state (sequence 1) ...
    let copy = AgentKey::from_pem(&original.to_pem()).unwrap();
    let copied_seq = seq;
    // ... the original keeps joining ...
    seq = join(&b, &original, "edge-2", seq, None).await.unwrap();
    // ... and the copy is caught by its stale sequence.
    let err = join(&b, &copy, "edge-2", copied_seq, None).await.unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
    assert!(err.contains("another agent holds a copy of this key"), "{err}");
    // The binding is locked: neither holder joins until an operator re-binds.
    let err = join(&b, &original, "edge-2", seq, None).await.unwrap_err();
    assert!(err.contains("locked"), "{err}");
    let events = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    assert!(events.iter().any(|e| e.kind == "join" && e.outcome == "denied" && e.detail_json.contains("copy")), "copy detection is audited");
}

#[tokio::test]
async fn a_copy_that_joins_first_locks_out_the_original_too() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup(&mut admin, "edge-3", &[]).await;
    let original = AgentKey::generate().unwrap();
    let seq = join(&b, &original, "edge-3", 0, Some(&secret)).await.unwrap();
    let copy = AgentKey::from_pem(&original.to_pem()).unwrap();
    assert_eq!(join(&b, &copy, "edge-3", seq, None).await.unwrap(), seq + 1);
    let err = join(&b, &original, "edge-3", seq, None).await.unwrap_err();
    assert!(err.contains("another agent holds a copy"), "{err}");
}

#[tokio::test]
async fn a_pre_registered_public_key_joins_without_a_secret_and_no_other_key_does() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let key = AgentKey::generate().unwrap();
    setup(&mut admin, "edge-4", &[("public_key", key.public_key_b64())]).await;
    let other = AgentKey::generate().unwrap();
    let err = join(&b, &other, "edge-4", 0, None).await.unwrap_err();
    assert!(err.contains("not config.public_key"), "{err}");
    assert_eq!(join(&b, &key, "edge-4", 0, None).await.unwrap(), 1);
    // A copy that starts over from sequence 0 is a copy too.
    let err = join(&b, &key, "edge-4", 0, None).await.unwrap_err();
    assert!(err.contains("another agent holds a copy"), "{err}");
}

#[tokio::test]
async fn challenges_are_single_use_bound_to_their_key_and_token() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let key = AgentKey::generate().unwrap();
    setup(&mut admin, "edge-5", &[("public_key", key.public_key_b64())]).await;
    setup(&mut admin, "edge-6", &[("public_key", key.public_key_b64())]).await;
    let mut cl = b.anonymous().await;
    let begin = |cl: &mut SigilClient<Channel>, token: &str| {
        let req = pb::BeginJoinRequest { method: "bound_keypair".into(), token_name: token.into(), payload: key.begin_payload() };
        let mut cl = cl.clone();
        async move { cl.begin_join(req).await.unwrap().into_inner() }
    };
    let attempt = |cl: &mut SigilClient<Channel>, token: &str, challenge_id: &str, payload: Vec<u8>| {
        let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
        let req = pb::JoinRequest { method: "bound_keypair".into(), token_name: token.into(), challenge_id: challenge_id.into(), payload, csr, ..Default::default() };
        let mut cl = cl.clone();
        let admin = b.admin();
        async move {
            match cl.join(req).await {
                Ok(_) => Ok(()),
                Err(s) => {
                    assert_refused(&s);
                    Err(last_join_denial(&mut admin.await).await)
                }
            }
        }
    };
    // Signed by a different key.
    let c = begin(&mut cl, "edge-5").await;
    let forged = AgentKey::generate().unwrap().answer("edge-5", &c.challenge_id, &c.payload, 0, "").unwrap();
    let err = attempt(&mut cl, "edge-5", &c.challenge_id, forged).await.unwrap_err();
    assert!(err.contains("signature does not verify"), "{err}");
    // A challenge of one token answered for another.
    let c = begin(&mut cl, "edge-5").await;
    let answer = key.answer("edge-6", &c.challenge_id, &c.payload, 0, "").unwrap();
    let err = attempt(&mut cl, "edge-6", &c.challenge_id, answer).await.unwrap_err();
    assert!(err.contains("challenge_id"), "{err}");
    // A good answer works once; replaying it does not.
    let c = begin(&mut cl, "edge-5").await;
    let answer = key.answer("edge-5", &c.challenge_id, &c.payload, 0, "").unwrap();
    attempt(&mut cl, "edge-5", &c.challenge_id, answer.clone()).await.unwrap();
    let err = attempt(&mut cl, "edge-5", &c.challenge_id, answer).await.unwrap_err();
    assert!(err.contains("unknown, used or expired challenge_id"), "{err}");
}

#[tokio::test]
async fn deleting_the_join_token_removes_its_binding() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup(&mut admin, "edge-7", &[]).await;
    let old = AgentKey::generate().unwrap();
    join(&b, &old, "edge-7", 0, Some(&secret)).await.unwrap();
    admin.delete_join_token(pb::DeleteRequest { name: "edge-7".into(), revision: 0 }).await.unwrap();
    let secret = setup(&mut admin, "edge-7", &[]).await;
    let new = AgentKey::generate().unwrap();
    assert_eq!(join(&b, &new, "edge-7", 0, Some(&secret)).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_join_keeps_the_sequence_and_a_copied_key_directory_is_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = setup(&mut admin, "edge-8", &[]).await;
    let work = tempfile::tempdir().unwrap();
    let (a, c) = (work.path().join("a"), work.path().join("copy"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&c).unwrap();
    let cli = |dir: &std::path::Path, secret: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"));
        cmd.args(["--addr", &b.addr, "join", "--method", "bound_keypair", "--token-name", "edge-8"])
            .arg("--key-file")
            .arg(dir.join("bound.key"))
            .arg("--ca-file")
            .arg(b.path("tls-ca.pem"))
            .arg("--out")
            .arg(dir.join("identity"))
            .env_remove("SIGIL_TOKEN");
        if let Some(s) = secret {
            cmd.args(["--token", s]);
        }
        cmd.output().unwrap()
    };
    let out = tokio::task::block_in_place(|| cli(&a, Some(&secret)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(a.join("bound.key.sequence")).unwrap(), "1");
    for f in ["bound.key", "bound.key.sequence"] {
        std::fs::copy(a.join(f), c.join(f)).unwrap();
    }
    let out = tokio::task::block_in_place(|| cli(&a, None));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(a.join("bound.key.sequence")).unwrap(), "2");
    let out = tokio::task::block_in_place(|| cli(&c, None));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(sigil_broker::join::REFUSED), "{stderr}");
    let why = last_join_denial(&mut admin).await;
    assert!(why.contains("another agent holds a copy of this key"), "{why}");
}

/// Issue 11 #17: the broker advanced the sequence, the answer was lost (a
/// dropped packet), and the agent's retry with its old number was taken for a
/// copy: the key was locked for good. A retry of the same attempt is the same
/// join; a copy is still a copy.
#[tokio::test]
async fn a_lost_join_answer_does_not_lock_the_key_when_the_agent_retries() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let key = AgentKey::generate().unwrap();
    setup(&mut admin, "edge-9", &[("public_key", key.public_key_b64())]).await;
    // The agent saves its attempt, joins; the broker advances to 1, the answer is lost.
    let saved = JoinState::default().start().unwrap();
    assert_eq!(join_state(&b, &key, "edge-9", &saved, None).await.unwrap(), 1);
    // It asks again with what it saved: the same answer, twice if need be.
    assert_eq!(join_state(&b, &key, "edge-9", &saved, None).await.unwrap(), 1);
    assert_eq!(join_state(&b, &key, "edge-9", &saved, None).await.unwrap(), 1);
    // It stores 1 and joins on.
    let next = saved.after_join().start().unwrap();
    assert_eq!(join_state(&b, &key, "edge-9", &next, None).await.unwrap(), 2);
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "edge-9".into() }).await.unwrap().into_inner().uses, 2, "a retry is not another use");
    // The retry of an older attempt, or a copy of the state at rest (its own
    // attempt), is a copy.
    let err = join_state(&b, &key, "edge-9", &saved, None).await.unwrap_err();
    assert!(err.contains("another agent holds a copy"), "{err}");
}

/// Issue 11 #13: a new `config.public_key` was accepted and did nothing: the
/// new key was refused and the old (perhaps stolen) key still joined. It now
/// rotates the binding, and also frees a binding locked after a copy.
#[tokio::test]
async fn updating_the_public_key_rotates_the_binding_and_refuses_the_old_key() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let old = AgentKey::generate().unwrap();
    setup(&mut admin, "edge-10", &[("public_key", old.public_key_b64())]).await;
    assert_eq!(join(&b, &old, "edge-10", 0, None).await.unwrap(), 1);
    let rotate = |admin: &mut SigilClient<Channel>, key: &AgentKey| {
        let mut admin = admin.clone();
        let key = key.public_key_b64();
        async move {
            let t = admin.get_join_token(pb::GetRequest { name: "edge-10".into() }).await.unwrap().into_inner();
            admin.update_join_token(pb::JoinToken { config: [("public_key".to_string(), key)].into(), ..t }).await.unwrap();
        }
    };
    let new = AgentKey::generate().unwrap();
    rotate(&mut admin, &new).await;
    let err = join(&b, &old, "edge-10", 1, None).await.unwrap_err();
    assert!(err.contains("not config.public_key"), "{err}");
    assert_eq!(join(&b, &new, "edge-10", 0, None).await.unwrap(), 1);
    assert_eq!(join(&b, &new, "edge-10", 1, None).await.unwrap(), 2);
    let err = join(&b, &old, "edge-10", 1, None).await.unwrap_err();
    assert!(err.contains("not the one bound"), "{err}");
    // A copy locks the binding; a new key is the way out.
    join(&b, &new, "edge-10", 0, None).await.unwrap_err();
    assert!(join(&b, &new, "edge-10", 2, None).await.unwrap_err().contains("locked"));
    let third = AgentKey::generate().unwrap();
    rotate(&mut admin, &third).await;
    assert_eq!(join(&b, &third, "edge-10", 0, None).await.unwrap(), 1);
    let events = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    assert!(events.iter().any(|e| e.kind == "join_token.update" && e.detail_json.contains("keypair_binding")), "the rotation is audited");
}

#[tokio::test]
async fn an_invalid_public_key_is_refused_when_the_token_is_created_or_updated() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    admin.create_bot(pb::Bot { name: "edge".into(), ..Default::default() }).await.unwrap();
    let t = pb::JoinToken {
        name: "bad".into(),
        bot: "edge".into(),
        method: "bound_keypair".into(),
        expires_at: now() + 600,
        max_uses: 1,
        config: [("public_key".to_string(), "not a key".to_string())].into(),
        ..Default::default()
    };
    let err = admin.create_join_token(t).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("config.public_key"), "{}", err.message());
}
