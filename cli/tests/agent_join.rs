//! `sigil agent` join methods through the agent's `JoinMethod` interface, against
//! an in-process broker: bound keypair (key and join sequence kept in the state
//! directory, a copied state detected), and OIDC-family methods reading the
//! platform token from a file (Kubernetes projected token with a static JWKS,
//! GitHub Enterprise token verified through discovery at a local issuer).
#![allow(clippy::unwrap_used)]

mod common;
mod join_oidc_issuer;

use common::{last_join_denial, now, Broker};
use join_oidc_issuer::{Issuer, Key};
use serde_json::json;
use sigil_agent::config::AgentConfig;
use sigil_agent::join::{BOUND_KEY_FILE, BOUND_SEQUENCE_FILE};
use sigil_agent::Agent;
use sigil_core::clock::SystemClock;
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1 as pb;
use std::path::Path;
use std::sync::Arc;

async fn setup(b: &Broker, token: pb::JoinToken) -> String {
    let mut a = b.admin().await;
    let _ = a
        .create_role(pb::Role {
            name: "edge".into(),
            allow: Some(pb::RoleAllow { spiffe_ids: vec!["/edge/**".into()], audiences: vec!["*".into()], ..Default::default() }),
            ..Default::default()
        })
        .await;
    let _ = a.create_bot(pb::Bot { name: "edge".into(), roles: vec!["edge".into()], ..Default::default() }).await;
    a.create_join_token(pb::JoinToken { bot: "edge".into(), expires_at: now() + 3600, ..token }).await.unwrap().into_inner().secret
}

fn config(b: &Broker, state: &Path, out: &Path, join: &str) -> AgentConfig {
    let text = format!(
        "broker: {}\nca_file: {}\nstate_dir: {}\njoin: {join}\nretry: {{initial: 100ms, max: 1s}}\noutputs:\n  - type: jwt-svid\n    path: {}\n    audiences: [x]\n    spiffe_id: spiffe://example.org/edge/app\n",
        b.addr,
        b.path("tls-ca.pem").display(),
        state.display(),
        out.display()
    );
    AgentConfig::from_yaml(&text).unwrap()
}

async fn oneshot(cfg: AgentConfig) -> Result<(), String> {
    Agent::new(cfg, None, Arc::new(SystemClock)).unwrap().oneshot().await.map_err(|e| e.to_string())
}

fn bot_of(state: &Path) -> String {
    Identity::load(&state.join("identity")).unwrap().subject().unwrap().0
}

fn sequence(state: &Path) -> String {
    std::fs::read_to_string(state.join(BOUND_SEQUENCE_FILE)).unwrap()
}

#[tokio::test]
async fn bound_keypair_agent_registers_its_key_keeps_the_sequence_and_a_copied_state_is_refused() {
    let b = Broker::start().await;
    let secret = setup(&b, pb::JoinToken { name: "edge-kp".into(), method: "bound_keypair".into(), max_uses: 10, ..Default::default() }).await;
    let d = tempfile::tempdir().unwrap();
    let (state, out) = (d.path().join("state"), d.path().join("out/jwt"));
    let secret_file = d.path().join("registration-secret");
    std::fs::write(&secret_file, &secret).unwrap();
    let join = format!("{{method: bound_keypair, token_name: edge-kp, registration_secret_file: {}}}", secret_file.display());

    // First join: the agent creates its key in the state dir and registers it with the one-time secret.
    oneshot(config(&b, &state, &out, &join)).await.unwrap();
    assert!(bot_of(&state).ends_with("/edge"), "{}", bot_of(&state));
    assert!(std::fs::read_to_string(state.join(BOUND_KEY_FILE)).unwrap().contains("PRIVATE KEY"));
    assert_eq!(sequence(&state), "1");
    assert_eq!(std::fs::read_to_string(&out).unwrap().split('.').count(), 3);

    // The identity is lost (or expired): the agent joins again by signing a challenge; no secret needed any more.
    std::fs::remove_file(&secret_file).unwrap();
    let snapshot = d.path().join("copied-state");
    std::fs::create_dir(&snapshot).unwrap();
    for f in [BOUND_KEY_FILE, BOUND_SEQUENCE_FILE] {
        std::fs::copy(state.join(f), snapshot.join(f)).unwrap();
    }
    std::fs::remove_file(state.join("identity")).unwrap();
    oneshot(config(&b, &state, &out, "{method: bound_keypair, token_name: edge-kp}")).await.unwrap();
    assert_eq!(sequence(&state), "2");

    // Someone copied the key and sequence before that join: their stale sequence gives them away.
    let err = oneshot(config(&b, &snapshot, &d.path().join("out/copy"), "{method: bound_keypair, token_name: edge-kp}")).await.unwrap_err();
    assert!(err.contains("join with method bound_keypair rejected") && err.contains(sigil_broker::join::REFUSED), "{err}");
    let why = last_join_denial(&mut b.admin().await).await;
    assert!(why.contains("copy"), "{why}");
}

#[tokio::test]
async fn bound_keypair_first_join_without_a_secret_says_what_is_missing() {
    let b = Broker::start().await;
    setup(&b, pb::JoinToken { name: "edge-kp2".into(), method: "bound_keypair".into(), max_uses: 1, ..Default::default() }).await;
    let d = tempfile::tempdir().unwrap();
    let err = oneshot(config(&b, &d.path().join("state"), &d.path().join("jwt"), "{method: bound_keypair, token_name: edge-kp2}")).await.unwrap_err();
    assert!(err.contains(sigil_broker::join::REFUSED), "{err}");
    let why = last_join_denial(&mut b.admin().await).await;
    assert!(why.contains("registration secret"), "{why}");
    // The attempt was saved before the join; the sequence did not move.
    let saved = std::fs::read_to_string(d.path().join("state").join(BOUND_SEQUENCE_FILE)).unwrap();
    assert_eq!(sigil_agent::join::client::bound_keypair::JoinState::parse(&saved).unwrap().sequence, 0, "{saved}");
}

fn k8s_claims(iss: &str, account: &str) -> serde_json::Value {
    let t = now();
    json!({
        "aud": ["sigil"], "iss": iss, "iat": t - 5, "nbf": t - 5, "exp": t + 600,
        "kubernetes.io": {"namespace": "ci", "pod": {"name": "builder-7d9f8", "uid": "a9b8c7d6-e5f4-4a3b-2c1d-0e9f8a7b6c5d"},
            "serviceaccount": {"name": account, "uid": "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b5a"}},
        "sub": format!("system:serviceaccount:ci:{account}")
    })
}

#[tokio::test]
async fn kubernetes_agent_joins_with_its_projected_token_file_and_rereads_it() {
    let b = Broker::start().await;
    let issuer = Issuer::start().await;
    let iss = "https://kubernetes.default.svc.cluster.local";
    let config_kv = [("issuer", iss.to_string()), ("audience", "sigil".into()), ("jwks", issuer.jwks.clone())];
    setup(
        &b,
        pb::JoinToken {
            name: "k8s".into(),
            method: "kubernetes".into(),
            max_uses: 10,
            allow: vec![pb::AllowRule { claims: [("service_account".to_string(), "ci:builder".to_string())].into() }],
            config: config_kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            ..Default::default()
        },
    )
    .await;
    let d = tempfile::tempdir().unwrap();
    let token_file = d.path().join("projected/token");
    std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
    let join = format!("{{method: kubernetes, token_name: k8s, token_file: {}}}", token_file.display());

    // The kubelet rotated the file to a token of another service account: refused, naming the rule.
    std::fs::write(&token_file, issuer.mint(Key::Rsa, &k8s_claims(iss, "intruder"))).unwrap();
    let err = oneshot(config(&b, &d.path().join("s1"), &d.path().join("o1"), &join)).await.unwrap_err();
    assert!(err.contains("join with method kubernetes rejected") && err.contains(sigil_broker::join::REFUSED), "{err}");
    let why = last_join_denial(&mut b.admin().await).await;
    assert!(why.contains("service_account") && why.contains("ci:intruder"), "{why}");

    // The right account's token, read from the same file at the next join.
    std::fs::write(&token_file, issuer.mint(Key::Rsa, &k8s_claims(iss, "builder"))).unwrap();
    oneshot(config(&b, &d.path().join("s2"), &d.path().join("o2"), &join)).await.unwrap();
    assert!(bot_of(&d.path().join("s2")).ends_with("/edge"));
}

#[tokio::test]
async fn github_agent_joins_with_an_id_token_file_verified_through_discovery() {
    let b = Broker::start().await;
    let issuer = Issuer::start().await;
    let cfg = [
        ("enterprise_host", issuer.host.clone()),
        ("audience", "sigil".into()),
        ("ca_pem", issuer.ca_pem.clone()),
        ("allow_private_network", "true".into()),
    ];
    setup(
        &b,
        pb::JoinToken {
            name: "gh".into(),
            method: "github".into(),
            max_uses: 1,
            allow: vec![pb::AllowRule { claims: [("repository".to_string(), "octo-org/*".to_string())].into() }],
            config: cfg.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            ..Default::default()
        },
    )
    .await;
    let t = now();
    let claims = json!({
        "iss": issuer.url("_services/token"), "aud": "sigil", "iat": t - 5, "nbf": t - 5, "exp": t + 300,
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main", "repository": "octo-org/octo-repo", "repository_owner": "octo-org",
        "ref": "refs/heads/main", "ref_type": "branch", "workflow": "deploy", "actor": "octocat", "event_name": "push"
    });
    let d = tempfile::tempdir().unwrap();
    let id_token = d.path().join("id-token");
    std::fs::write(&id_token, issuer.mint(Key::Ec, &claims)).unwrap();
    let join = format!("{{method: github, token_name: gh, id_token_file: {}}}", id_token.display());
    oneshot(config(&b, &d.path().join("state"), &d.path().join("jwt"), &join)).await.unwrap();
    assert!(bot_of(&d.path().join("state")).ends_with("/edge"));
}
