#![allow(clippy::unwrap_used)]
//! Join tokens as an attacker sees them, against an in-process dev broker:
//! secrets that would skip a method's proof, rules that match everything,
//! refusals that would tell a stranger which tokens exist and what their rules
//! say, and `max_uses` for methods other than `token`.

mod common;

use common::{assert_refused, last_join_denial, now, Broker};
use sigil_agent::join::client::bound_keypair::{self, AgentKey, JoinState};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;
use tonic::Code;

fn claims(rule: &[(&str, &str)]) -> pb::AllowRule {
    pb::AllowRule { claims: rule.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
}

async fn bot(admin: &mut SigilClient<Channel>) {
    admin.create_bot(pb::Bot { name: "edge".into(), ..Default::default() }).await.unwrap();
}

fn token(name: &str, method: &str) -> pb::JoinToken {
    pb::JoinToken { name: name.into(), bot: "edge".into(), method: method.into(), expires_at: now() + 600, max_uses: 5, ..Default::default() }
}

async fn create(admin: &mut SigilClient<Channel>, t: pb::JoinToken) -> String {
    admin.create_join_token(t).await.unwrap().into_inner().secret
}

async fn uses(admin: &mut SigilClient<Channel>, name: &str) -> i64 {
    admin.get_join_token(pb::GetRequest { name: name.into() }).await.unwrap().into_inner().uses
}

/// A bound-keypair join with `key`; Ok(new sequence) or the refusal.
async fn keypair_join(b: &Broker, key: &AgentKey, token: &str, state: &JoinState) -> Result<i64, tonic::Status> {
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    match bound_keypair::join(&mut b.anonymous().await, key, token, state, None, csr, 0).await {
        Ok((_, next)) => Ok(next),
        Err(bound_keypair::ClientError::Broker(s)) => Err(s),
        Err(e) => panic!("{e}"),
    }
}

/// Issue 11 #1: the secret printed for a github/iam/tpm/gcp/... token (and kept in
/// Terraform state) joined with method `token`, skipping the platform proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_token_secret_cannot_be_redeemed_with_method_token() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    bot(&mut admin).await;
    let key = AgentKey::generate().unwrap();
    let cases = [
        ("github", vec![claims(&[("repository", "acme/web")])], vec![("audience", "sigil".to_string())]),
        ("iam", vec![claims(&[("aws_account", "111122223333")])], vec![]),
        ("tpm", vec![claims(&[("ek_public_hash", "00ff")])], vec![]),
        ("gcp", vec![claims(&[("project_id", "acme-prod")])], vec![("audience", "sigil".to_string())]),
        ("bound_keypair", vec![], vec![("public_key", key.public_key_b64())]),
    ];
    for (method, allow, config) in cases {
        let name = format!("{method}-tok");
        let t = pb::JoinToken { allow, config: config.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), ..token(&name, method) };
        let secret = create(&mut admin, t).await;
        if !secret.is_empty() {
            let r = b.join_as(&secret).await;
            assert!(r.is_err(), "the secret of the {method} token joined with method token, skipping the {method} proof");
        }
        assert_eq!(secret, "", "a {method} token has no secret: its platform credential is the proof");
        assert_eq!(uses(&mut admin, &name).await, 0);
    }
    // A bound-keypair token without a key has a registration secret: it binds
    // a key at the first bound-keypair join, and is no `token` secret.
    let registration = create(&mut admin, token("unkeyed", "bound_keypair")).await;
    assert!(registration.starts_with("sigil_"), "{registration}");
    let err = b.join_as(&registration).await.unwrap_err();
    assert_refused(&err);
    let why = last_join_denial(&mut admin).await;
    assert!(why.contains("\"unkeyed\"") && why.contains("\"bound_keypair\", not \"token\""), "{why}");
    assert_eq!(uses(&mut admin, "unkeyed").await, 0);
    // The registration secret still registers a key by its own method.
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let (r, _) = bound_keypair::join(&mut b.anonymous().await, &key, "unkeyed", &JoinState::default().start().unwrap(), Some(&registration), csr, 0)
        .await
        .unwrap();
    assert_eq!(r.bot, "edge");
}

/// Issue 11 #8: `allow: [{}]` matches every credential of the method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_allow_rule_that_would_match_every_credential_is_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    bot(&mut admin).await;
    // IAM: every AWS principal anywhere could sign the request.
    let open = pb::JoinToken { allow: vec![claims(&[("aws_account", "111122223333")]), pb::AllowRule::default()], ..token("aws", "iam") };
    let err = admin.create_join_token(open.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("allow[1]") && err.message().contains("empty"), "{}", err.message());
    // Nor can an update open an existing token up.
    let t = pb::JoinToken { allow: vec![claims(&[("aws_account", "111122223333")])], ..token("aws", "iam") };
    let created = admin.create_join_token(t).await.unwrap().into_inner();
    let err = admin.update_join_token(pb::JoinToken { revision: created.revision, ..open }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let stored = admin.get_join_token(pb::GetRequest { name: "aws".into() }).await.unwrap().into_inner();
    assert_eq!(stored.allow.len(), 1);
}

/// Issue 11 #11, issue 12 #12: a stranger told "does not exist", "is for
/// method tpm", "already used" or "ek_cert_issuer does not match ..." learns
/// token names, methods and rules. Every refusal reads the same; the audit
/// log keeps the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_tell_a_stranger_which_tokens_exist_or_what_they_allow() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    bot(&mut admin).await;
    let used = create(&mut admin, pb::JoinToken { max_uses: 1, ..token("used", "token") }).await;
    b.join_as(&used).await.unwrap();
    let registration = create(&mut admin, token("kp", "bound_keypair")).await;
    create(&mut admin, pb::JoinToken { allow: vec![claims(&[("ek_cert_issuer", "CN=Secret Vendor*")])], ..token("tpm-tok", "tpm") }).await;
    let key = AgentKey::generate().unwrap();
    create(&mut admin, pb::JoinToken { config: [("public_key".to_string(), key.public_key_b64())].into(), ..token("keyed", "bound_keypair") }).await;

    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let join = |method: &str, token: &str, token_name: &str| pb::JoinRequest {
        method: method.into(),
        token: token.into(),
        token_name: token_name.into(),
        csr: csr.clone(),
        ..Default::default()
    };
    let begin = |method: &str, token_name: &str, payload: Vec<u8>| pb::BeginJoinRequest { method: method.into(), token_name: token_name.into(), payload };
    let mut anon = b.anonymous().await;
    let joins = [
        (join("token", "sigil_not-a-real-secret", ""), "unknown token"),
        (join("token", &used, ""), "already used"),
        (join("token", &registration, ""), "whose method is \"bound_keypair\""),
        (join("github", "a.b.c", "nope"), "\"nope\" does not exist"),
        (join("github", "a.b.c", "tpm-tok"), "is for method \"tpm\""),
        (join("tpm", "", "tpm-tok"), "challenge_id"),
    ];
    for (req, why) in joins {
        let label = format!("Join {} {:?}", req.method, req.token_name);
        let err = anon.join(req).await.unwrap_err();
        assert_refused(&err);
        let audited = last_join_denial(&mut admin).await;
        assert!(audited.contains(why), "{label}: audit says {audited:?}, wanted {why:?}");
    }
    let other = AgentKey::generate().unwrap();
    let begins = [
        (begin("tpm", "nope", b"{}".to_vec()), "\"nope\" does not exist"),
        (begin("tpm", "tpm-tok", b"not json".to_vec()), "payload"),
        (begin("iam", "tpm-tok", vec![]), "is for method \"tpm\""),
        (begin("bound_keypair", "keyed", other.begin_payload()), "not config.public_key"),
    ];
    for (req, why) in begins {
        let label = format!("BeginJoin {} {:?}", req.method, req.token_name);
        let err = anon.begin_join(req).await.unwrap_err();
        assert_refused(&err);
        let audited = last_join_denial(&mut admin).await;
        assert!(audited.contains(why), "{label}: audit says {audited:?}, wanted {why:?}");
    }
    // What does not depend on any token is still said plainly.
    let err = anon.join(join("magic", "", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("unknown join method"), "{}", err.message());
}

/// Issue 11 #12: `max_uses: 1` on a GCE or TPM token let the machine join
/// again and again (`uses` stayed 0). Bound-keypair joins count too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_uses_bounds_the_joins_of_a_bound_keypair_token() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    bot(&mut admin).await;
    let key = AgentKey::generate().unwrap();
    create(&mut admin, pb::JoinToken { max_uses: 2, config: [("public_key".to_string(), key.public_key_b64())].into(), ..token("kp", "bound_keypair") }).await;
    let mut state = JoinState::default();
    for _ in 0..2 {
        let started = state.start().unwrap();
        keypair_join(&b, &key, "kp", &started).await.unwrap();
        state = started.after_join();
    }
    assert_eq!(uses(&mut admin, "kp").await, 2);
    let err = keypair_join(&b, &key, "kp", &state.start().unwrap()).await.unwrap_err();
    assert_refused(&err);
    assert!(last_join_denial(&mut admin).await.contains("already used"));
    assert_eq!(uses(&mut admin, "kp").await, 2);
    // Used up is not a copy: raising max_uses lets the same agent, at the
    // same sequence, join again.
    let t = admin.get_join_token(pb::GetRequest { name: "kp".into() }).await.unwrap().into_inner();
    admin.update_join_token(pb::JoinToken { max_uses: 3, ..t }).await.unwrap();
    keypair_join(&b, &key, "kp", &state.start().unwrap()).await.unwrap();
    assert_eq!(uses(&mut admin, "kp").await, 3);
}

/// The field the broker blames, from the status's `google.rpc.BadRequest` details.
fn blamed(s: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    let b = s.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest details on {:?}: {}", s.code(), s.message()));
    b.field_violations.into_iter().map(|v| (v.field, v.description)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_join_token_is_refused_with_the_field_in_bad_request_details() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    bot(&mut admin).await;
    let with = |config: &[(&str, &str)], rule: &[(&str, &str)]| pb::JoinToken {
        config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        allow: vec![claims(rule)],
        ..token("gh", "github")
    };
    let pinned = [("repository", "acme/web")];
    let cases = [
        (with(&[("audience", "sigil"), ("audiance", "sigil")], &pinned), "config.audiance", "unknown setting for join method \"github\""),
        (with(&[], &pinned), "config.audience", "join method \"github\" requires config.audience"),
        (with(&[("audience", "sigil"), ("allow_any_tenant", "yes")], &pinned), "config.allow_any_tenant", "must be \"true\" or \"false\""),
        (with(&[("audience", "sigil")], &[("repo", "acme/web")]), "allow[0].repo", "not a field of join method \"github\""),
        (pb::JoinToken { expires_at: now() - 5, ..token("old", "token") }, "expires_at", "must be in the future"),
    ];
    for (t, field, why) in cases {
        let s = admin.create_join_token(t).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{field}: {}", s.message());
        let v = blamed(&s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].0, field);
        assert!(v[0].1.contains(why), "{field}: {:?}", v[0].1);
    }
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "gh".into() }).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_setting_of_a_platform_method_is_refused_not_ignored() {
    // `ek_ca` misspelt would silently drop the EK certificate check; an
    // `sts_endpoint` typo would silently leave only AWS's own endpoints.
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    bot(&mut admin).await;
    for (method, key) in [("tpm", "ek_cas"), ("iam", "sts_endpoint"), ("token", "audience"), ("gcp", "audiences")] {
        let mut t = token(method, method);
        t.config = [(key.to_string(), "x".to_string())].into_iter().collect();
        if method == "gcp" {
            t.config.insert("audience".into(), "sigil".into());
        }
        let s = admin.create_join_token(t).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{method}: {}", s.message());
        assert_eq!(blamed(&s)[0].0, format!("config.{key}"), "{method}");
    }
}
