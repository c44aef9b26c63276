//! One verifier, three entry points: every row of the hostile-token table
//! (`jwt_table`) goes through
//! 1. a real join (method `oidc` with a static JWKS) against an in-process broker,
//! 2. the agent's `ValidateJWTSVID` over a real Workload API unix socket,
//! 3. `sigil federation verify`'s token rules (`cloud::verify::check_oidc`, the
//!    function the command runs on the fetched discovery + JWKS),
//!
//! and each must give the row's verdict. The agent's trust bundle is the only
//! injected part: the Workload API service is served as `sigil agent` serves
//! it, but its bundle channel carries the table's JWKS instead of the broker's
//! (the broker never publishes PS256, EdDSA or a stranger's keys).
#![allow(clippy::unwrap_used)]

mod common;
mod jwt_table;

use common::{now, Broker};
use jwt_table::{Keys, Row, Set, AUDIENCE, ISSUER, SUBJECT};
use serde_json::json;
use sigil_agent::bundle::Bundle;
use sigil_agent::workload;
use sigil_agent::cloud::verify::{check_oidc, Cloud, Expectations, IssuerEvidence, Level};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::spiffe_workload as wl;
use std::path::Path;
use std::sync::Arc;
use tonic::transport::Channel;

type WlClient = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient<Channel>;

fn token_name(set: Set) -> &'static str {
    match set {
        Set::Several => "table-several",
        Set::One => "table-one",
    }
}

async fn setup_joins(b: &Broker, keys: &Keys) {
    let mut admin = b.admin().await;
    admin
        .create_role(pb::Role { name: "table".into(), allow: Some(pb::RoleAllow { spiffe_ids: vec!["/table/**".into()], ..Default::default() }), ..Default::default() })
        .await
        .unwrap();
    admin.create_bot(pb::Bot { name: "table".into(), roles: vec!["table".into()], ..Default::default() }).await.unwrap();
    for set in [Set::Several, Set::One] {
        let config = [("issuer", ISSUER.to_string()), ("audience", AUDIENCE.to_string()), ("jwks", keys.jwks(set).to_string())];
        admin
            .create_join_token(pb::JoinToken {
                name: token_name(set).into(),
                bot: "table".into(),
                method: "oidc".into(),
                expires_at: now() + 3600,
                max_uses: 1000,
                allow: vec![pb::AllowRule { claims: [("sub".to_string(), SUBJECT.to_string())].into() }],
                config: config.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

/// Entry point 1: the join. Ok(()) = joined; Err = the audited refusal reason.
async fn join_verdict(b: &Broker, set: Set, jwt: String) -> Result<(), String> {
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let req = pb::JoinRequest { method: "oidc".into(), token: jwt, token_name: token_name(set).into(), csr, ..Default::default() };
    match b.anonymous().await.join(req).await {
        Ok(_) => Ok(()),
        Err(s) => {
            common::assert_refused(&s);
            Err(common::last_join_denial(&mut b.admin().await).await)
        }
    }
}

/// A Workload API served on `sock` whose trust bundle holds `jwks`.
async fn serve_workload_api(agent: &sigil_agent::Agent, sock: &Path, jwks: &serde_json::Value) -> tokio::sync::watch::Sender<Option<Arc<Bundle>>> {
    let bundle = Bundle { trust_domain: "example.org".into(), jwks_json: jwks.to_string(), ..Default::default() };
    let (tx, rx) = tokio::sync::watch::channel(Some(Arc::new(bundle)));
    let (_rotate_tx, rotate_rx) = tokio::sync::watch::channel(sigil_agent::renewal::Renewal::default());
    let cfg = serde_json::from_value(json!({"socket": sock, "workload_identities": []})).unwrap();
    let svc = workload::api::Service::new(agent.session().clone(), cfg, rx, rotate_rx);
    let listener = workload::bind(sock).unwrap();
    tokio::spawn(async move {
        let _keep = _rotate_tx;
        workload::serve(listener, svc, workload::conn::Limits::default(), None, std::future::pending()).await.unwrap();
    });
    tx
}

/// Entry point 2: `ValidateJWTSVID`. Ok(()) = valid; Err = the refusal.
async fn agent_verdict(c: &mut WlClient, jwt: String) -> Result<(), String> {
    let mut r = tonic::Request::new(wl::ValidateJwtsvidRequest { audience: AUDIENCE.into(), svid: jwt });
    r.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    match c.validate_jwtsvid(r).await {
        Ok(v) => {
            assert_eq!(v.into_inner().spiffe_id, SUBJECT);
            Ok(())
        }
        Err(s) if s.code() == tonic::Code::InvalidArgument => Err(s.message().to_string()),
        Err(s) => panic!("ValidateJWTSVID failed for another reason than the token: {s:?}"),
    }
}

/// Entry point 3: `federation verify`'s findings on the token (`token.*`;
/// the cloud's own `aws.*` rules come on top and are not the verifier's).
fn federation_verdict(keys: &Keys, set: Set, jwt: &str) -> Result<(), String> {
    let ev = IssuerEvidence {
        issuer_url: ISSUER.into(),
        discovery: Ok(json!({"issuer": ISSUER, "jwks_uri": format!("{ISSUER}/jwks"), "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"]})),
        jwks: Ok(keys.jwks(set)),
        used_private_ca: false,
    };
    let findings = check_oidc(Cloud::Aws, &ev, Some(jwt), &Expectations { audience: Some(AUDIENCE.into()), now: now() });
    let failed: Vec<String> = findings.iter().filter(|f| f.rule.starts_with("token.") && f.level == Level::Fail).map(|f| format!("{}: {}", f.rule, f.message)).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

fn show(v: &Result<(), String>) -> String {
    match v {
        Ok(()) => "accept".into(),
        Err(why) => format!("refuse ({})", why.chars().take(140).collect::<String>()),
    }
}

#[tokio::test]
async fn every_verifier_entry_point_gives_the_same_verdict_on_hostile_tokens() {
    let b = Broker::start().await;
    let keys = Keys::generate();
    setup_joins(&b, &keys).await;
    let d = tempfile::tempdir().unwrap();
    let agent_cfg = format!("broker: {}\nca_file: {}\nstate_dir: {}\njoin: {{method: token}}\n", b.addr, b.path("tls-ca.pem").display(), d.path().join("state").display());
    let agent = sigil_agent::Agent::new(sigil_agent::config::AgentConfig::from_yaml(&agent_cfg).unwrap(), None, Arc::new(sigil_core::clock::SystemClock)).unwrap();
    let mut clients = Vec::new();
    let mut _bundles = Vec::new();
    for set in [Set::Several, Set::One] {
        let sock = d.path().join(format!("run/{set:?}.sock"));
        _bundles.push(serve_workload_api(&agent, &sock, &keys.jwks(set)).await);
        clients.push((set, common::workload_client(&sock).await));
    }

    let rows: Vec<Row> = jwt_table::rows();
    let mut differ = Vec::new();
    for r in &rows {
        let c = &mut clients.iter_mut().find(|(s, _)| *s == r.set).unwrap().1;
        let join = join_verdict(&b, r.set, (r.mint)(&keys, now())).await;
        let agent = agent_verdict(c, (r.mint)(&keys, now())).await;
        let federation = federation_verdict(&keys, r.set, &(r.mint)(&keys, now()));
        let verdicts = [("join", &join), ("agent ValidateJWTSVID", &agent), ("federation verify", &federation)];
        if verdicts.iter().any(|(_, v)| v.is_ok() != r.accept) {
            let want = if r.accept { "accept" } else { "refuse" };
            let got: Vec<String> = verdicts.iter().map(|(who, v)| format!("    {who}: {}", show(v))).collect();
            differ.push(format!("{} (want {want}):\n{}", r.name, got.join("\n")));
        }
        // A join refusal must come from the verifier, not from the allow rules.
        if let Err(why) = &join {
            assert!(why.contains("ID token refused"), "{}: join refused for another reason: {why}", r.name);
        }
    }
    assert!(differ.is_empty(), "{} of {} rows judged differently:\n{}", differ.len(), rows.len(), differ.join("\n"));
    assert_eq!(rows.len(), 36);
}
