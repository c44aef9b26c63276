#![allow(clippy::unwrap_used)]
//! RBAC attacks against the real broker, in process, over mTLS: bots with
//! delegated admin rules trying to raise their own power, crafted template
//! values, workload identities used to bypass role limits, and the controls
//! that already held (admin RPCs refused to plain bots, CSR contents ignored).
//!
//! Each test is named after the attack it shows Sigil refuses.

mod common;
mod join_oidc_issuer;

use common::{now, Broker};
use sigil_core::csr::key_and_csr;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::collections::HashMap;
use tonic::transport::Channel;
use tonic::Code;

type Client = SigilClient<Channel>;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn rule(resources: &[&str], verbs: &[&str], names: &[&str]) -> pb::Rule {
    pb::Rule { resources: strings(resources), verbs: strings(verbs), names: strings(names) }
}

fn attrs(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn create_role(admin: &mut Client, name: &str, allow: pb::RoleAllow) {
    admin.create_role(pb::Role { name: name.into(), allow: Some(allow), ..Default::default() }).await.unwrap();
}

async fn create_bot(admin: &mut Client, name: &str, roles: &[&str]) {
    admin.create_bot(pb::Bot { name: name.into(), roles: strings(roles), ..Default::default() }).await.unwrap();
}

async fn token_secret(client: &mut Client, token: &str, bot: &str) -> Result<String, tonic::Status> {
    client
        .create_join_token(pb::JoinToken { name: token.into(), bot: bot.into(), expires_at: now() + 600, max_uses: 1, ..Default::default() })
        .await
        .map(|r| r.into_inner().secret)
}

/// Creates role and bot `name` (the role holding `allow`) and joins as the bot.
async fn bot_with(b: &Broker, admin: &mut Client, name: &str, allow: pb::RoleAllow) -> Client {
    create_role(admin, name, allow).await;
    create_bot(admin, name, &[name]).await;
    let secret = token_secret(admin, &format!("{name}-token"), name).await.unwrap();
    b.join_as(&secret).await.unwrap()
}

async fn audit_denied(admin: &mut Client, kind: &str) -> usize {
    let items = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    items.iter().filter(|e| e.kind == kind && e.outcome == "denied").count()
}

fn denied(r: Result<impl std::fmt::Debug, tonic::Status>, needle: &str) {
    let err = r.expect_err("should be refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains(needle), "denial should mention {needle:?}: {}", err.message());
}

fn csr() -> Vec<u8> {
    key_and_csr().unwrap().1
}

fn x509_req(id: &str) -> pb::IssueX509SvidRequest {
    pb::IssueX509SvidRequest { csr: csr(), spiffe_id: id.into(), ..Default::default() }
}

/// `exp - iat` of a JWT-SVID.
fn jwt_lifetime(token: &str) -> i64 {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
}

// ------------------------------------------------------------- escalation (11.2)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_create_alone_cannot_mint_a_token_for_a_more_privileged_bot() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    create_role(&mut admin, "deployer", pb::RoleAllow { spiffe_ids: strings(&["/prod/**"]), ..Default::default() }).await;
    create_bot(&mut admin, "deployer", &["deployer"]).await;
    create_role(&mut admin, "nothing", pb::RoleAllow::default()).await;
    create_bot(&mut admin, "idle", &["nothing"]).await;
    let mut minter = bot_with(&b, &mut admin, "minter", pb::RoleAllow { rules: vec![rule(&["join_token"], &["create"], &[])], ..Default::default() }).await;

    // The attack: a token for the admin bot (or any bot with more power), then join as it.
    denied(token_secret(&mut minter, "steal-admin", "admin").await, "bind");
    denied(token_secret(&mut minter, "steal-deployer", "deployer").await, "/prod/**");
    for t in ["steal-admin", "steal-deployer"] {
        assert_eq!(admin.get_join_token(pb::GetRequest { name: t.into() }).await.unwrap_err().code(), Code::NotFound);
    }
    assert_eq!(audit_denied(&mut admin, "join_token.create").await, 2);

    // A bot whose roles grant nothing beyond the minter's is fine, and the token works.
    let secret = token_secret(&mut minter, "idle-token", "idle").await.unwrap();
    let mut idle = b.join_as(&secret).await.unwrap();
    assert_eq!(idle.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().bot, "idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_update_cannot_attach_a_role_the_caller_does_not_hold() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let self_editor = pb::RoleAllow {
        spiffe_ids: strings(&["/team/**"]),
        rules: vec![rule(&["bot"], &["read", "update", "create"], &[])],
        ..Default::default()
    };
    let mut bot = bot_with(&b, &mut admin, "lead", self_editor).await;
    create_role(&mut admin, "team-web", pb::RoleAllow { spiffe_ids: strings(&["/team/web/*"]), ..Default::default() }).await;

    // The attack: give itself the admin role.
    let mut me = bot.get_bot(pb::GetRequest { name: "lead".into() }).await.unwrap().into_inner();
    me.roles.push("admin".into());
    denied(bot.update_bot(me.clone()).await, "bind");
    assert_eq!(admin.get_bot(pb::GetRequest { name: "lead".into() }).await.unwrap().into_inner().roles, ["lead"]);
    // ... or a new bot holding it.
    denied(bot.create_bot(pb::Bot { name: "puppet".into(), roles: strings(&["admin"]), ..Default::default() }).await, "bind");
    assert_eq!(audit_denied(&mut admin, "bot.update").await, 1);
    assert_eq!(audit_denied(&mut admin, "bot.create").await, 1);

    // Roles within its own grants can be attached.
    me.roles = strings(&["lead", "team-web"]);
    bot.update_bot(me).await.unwrap();
    bot.create_bot(pb::Bot { name: "web".into(), roles: strings(&["team-web"]), ..Default::default() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_create_cannot_grant_more_than_the_caller_holds() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let lead = pb::RoleAllow {
        spiffe_ids: strings(&["/team/**"]),
        audiences: strings(&["sts.amazonaws.com"]),
        max_x509_ttl_seconds: 600,
        max_jwt_ttl_seconds: 60,
        rules: vec![rule(&["role"], &["create", "read"], &[])],
        ..Default::default()
    };
    let mut bot = bot_with(&b, &mut admin, "lead", lead).await;
    let within = pb::RoleAllow {
        spiffe_ids: strings(&["/team/web/*"]),
        audiences: strings(&["sts.amazonaws.com"]),
        max_x509_ttl_seconds: 300,
        max_jwt_ttl_seconds: 60,
        rules: vec![rule(&["role"], &["read"], &["team-*"])],
        ..Default::default()
    };
    let attempts: Vec<(&str, pb::RoleAllow, &str)> = vec![
        ("other-ids", pb::RoleAllow { spiffe_ids: strings(&["/prod/**"]), ..within.clone() }, "/prod/**"),
        ("templated", pb::RoleAllow { spiffe_ids: strings(&["/{{bot.name}}/**"]), ..within.clone() }, "{{bot.name}}"),
        ("no-cap", pb::RoleAllow { max_x509_ttl_seconds: 0, ..within.clone() }, "max TTL"),
        ("longer-jwt", pb::RoleAllow { max_jwt_ttl_seconds: 3600, ..within.clone() }, "max TTL"),
        ("any-audience", pb::RoleAllow { audiences: strings(&["*"]), ..within.clone() }, "audience \"*\""),
        ("workloads", pb::RoleAllow { workload_identities: strings(&["*"]), ..within.clone() }, "workload_identities"),
        ("more-verbs", pb::RoleAllow { rules: vec![rule(&["bot"], &["*"], &[])], ..within.clone() }, "\"bot\""),
        ("all-roles", pb::RoleAllow { rules: vec![rule(&["role"], &["update"], &[])], ..within.clone() }, "\"update\""),
    ];
    let n = attempts.len();
    for (name, allow, why) in attempts {
        denied(bot.create_role(pb::Role { name: name.into(), allow: Some(allow), ..Default::default() }).await, why);
        assert_eq!(admin.get_role(pb::GetRequest { name: name.into() }).await.unwrap_err().code(), Code::NotFound, "{name}");
    }
    assert_eq!(audit_denied(&mut admin, "role.create").await, n);
    bot.create_role(pb::Role { name: "team-web".into(), allow: Some(within), ..Default::default() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_update_cannot_widen_the_callers_own_role() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow { spiffe_ids: strings(&["/team/**"]), rules: vec![rule(&["role"], &["read", "update"], &[])], ..Default::default() };
    let mut bot = bot_with(&b, &mut admin, "lead", allow).await;
    let mine = bot.get_role(pb::GetRequest { name: "lead".into() }).await.unwrap().into_inner();
    let mut wider = mine.clone();
    wider.allow.as_mut().unwrap().spiffe_ids = strings(&["/**"]);
    denied(bot.update_role(wider).await, "escalate");
    // ... nor the admin role, nor its own rules.
    let mut admin_role = bot.get_role(pb::GetRequest { name: "admin".into() }).await.unwrap().into_inner();
    admin_role.description = "mine now".into();
    denied(bot.update_role(admin_role).await, "escalate");
    let mut more_rules = mine.clone();
    more_rules.allow.as_mut().unwrap().rules.push(rule(&["bot"], &["update"], &[]));
    denied(bot.update_role(more_rules).await, "escalate");
    assert_eq!(admin.get_role(pb::GetRequest { name: "lead".into() }).await.unwrap().into_inner().allow, mine.allow);
    // Narrowing is always allowed.
    let mut narrower = mine;
    narrower.allow.as_mut().unwrap().spiffe_ids = strings(&["/team/web"]);
    bot.update_role(narrower).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_create_cannot_name_spiffe_ids_beyond_the_caller() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow {
        spiffe_ids: strings(&["/team/**"]),
        workload_identities: strings(&["*"]),
        rules: vec![rule(&["workload_identity"], &["create"], &[])],
        ..Default::default()
    };
    let mut bot = bot_with(&b, &mut admin, "lead", allow).await;
    let wi = |name: &str, id: &str| pb::WorkloadIdentity { name: name.into(), spiffe_id: id.into(), ..Default::default() };
    // The attack: a workload identity for an ID outside its roles, then obtain it.
    denied(bot.create_workload_identity(wi("db", "/prod/db")).await, "escalate");
    let got = bot.issue_x509_svid(pb::IssueX509SvidRequest { csr: csr(), workload_identity: "db".into(), ..Default::default() }).await;
    assert_eq!(got.unwrap_err().code(), Code::NotFound);
    denied(bot.create_workload_identity(wi("any", "/{{workload.team}}/x")).await, "escalate");
    bot.create_workload_identity(wi("web", "/team/web/{{workload.unix.uid}}")).await.unwrap();
    let ok = bot
        .issue_x509_svid(pb::IssueX509SvidRequest { csr: csr(), workload_identity: "web".into(), workload_attributes: attrs(&[("workload.unix.uid", "1000")]), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().spiffe_id, "spiffe://example.org/team/web/1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalate_and_bind_are_explicit_grants_and_admin_keeps_full_power() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow {
        rules: vec![
            rule(&["role"], &["create"], &[]),
            rule(&["role"], &["escalate"], &["ops-*"]),
            rule(&["role"], &["bind"], &["admin"]),
            rule(&["bot", "join_token"], &["create"], &[]),
        ],
        ..Default::default()
    };
    let mut bot = bot_with(&b, &mut admin, "ops", allow).await;
    let everything = pb::RoleAllow { spiffe_ids: strings(&["/**"]), audiences: strings(&["*"]), ..Default::default() };
    bot.create_role(pb::Role { name: "ops-all".into(), allow: Some(everything.clone()), ..Default::default() }).await.unwrap();
    denied(bot.create_role(pb::Role { name: "other".into(), allow: Some(everything.clone()), ..Default::default() }).await, "escalate");
    // bind on "admin" lets it hand out that role (and so make tokens for bots holding it), not "ops-all".
    bot.create_bot(pb::Bot { name: "helper".into(), roles: strings(&["admin"]), ..Default::default() }).await.unwrap();
    token_secret(&mut bot, "helper-token", "helper").await.unwrap();
    denied(bot.create_bot(pb::Bot { name: "helper2".into(), roles: strings(&["ops-all"]), ..Default::default() }).await, "bind");
    // The admin identity: every write, whatever it grants.
    admin.create_role(pb::Role { name: "wide".into(), allow: Some(everything), ..Default::default() }).await.unwrap();
    create_bot(&mut admin, "wide", &["wide", "admin"]).await;
    token_secret(&mut admin, "wide-token", "wide").await.unwrap();
    token_secret(&mut admin, "admin-token", "admin").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_limited_to_names_grant_only_those_names() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    create_role(&mut admin, "nothing", pb::RoleAllow::default()).await;
    for name in ["team-a", "team-b", "zeta"] {
        create_bot(&mut admin, name, &["nothing"]).await;
    }
    let allow = pb::RoleAllow { rules: vec![rule(&["bot"], &["read", "list", "update", "delete"], &["team-*"])], ..Default::default() };
    let mut bot = bot_with(&b, &mut admin, "teamlead", allow).await;
    let a = bot.get_bot(pb::GetRequest { name: "team-a".into() }).await.unwrap().into_inner();
    bot.update_bot(a).await.unwrap();
    denied(bot.get_bot(pb::GetRequest { name: "admin".into() }).await, "\"admin\"");
    denied(bot.delete_bot(pb::DeleteRequest { name: "zeta".into(), revision: 0 }).await, "\"zeta\"");
    let listed: Vec<String> = bot.list_bots(pb::ListRequest { limit: 2, after: String::new() }).await.unwrap().into_inner().items.into_iter().map(|b| b.name).collect();
    assert_eq!(listed, ["team-a", "team-b"]);
    bot.delete_bot(pb::DeleteRequest { name: "team-b".into(), revision: 0 }).await.unwrap();
    admin.get_bot(pb::GetRequest { name: "zeta".into() }).await.expect("zeta untouched");
    // A role scoped to names is still subject to the escalation check: no bind on roles.
    let mut a = bot.get_bot(pb::GetRequest { name: "team-a".into() }).await.unwrap().into_inner();
    a.roles = strings(&["admin"]);
    denied(bot.update_bot(a).await, "bind");
}

// --------------------------------------------------------------- templates (11.3)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_in_a_workload_attribute_cannot_widen_a_role_pattern() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow { spiffe_ids: strings(&["/svc/{{workload.unix.uid}}"]), ..Default::default() };
    let mut bot = bot_with(&b, &mut admin, "agent", allow).await;
    let with = |id: &str, uid: &str| pb::IssueX509SvidRequest { workload_attributes: attrs(&[("workload.unix.uid", uid)]), ..x509_req(id) };
    let ok = bot.issue_x509_svid(with("spiffe://example.org/svc/1000", "1000")).await.unwrap();
    assert_eq!(ok.into_inner().spiffe_id, "spiffe://example.org/svc/1000");
    // The attack: "**" (any depth) and "*" (any segment) as the attribute value.
    denied(bot.issue_x509_svid(with("spiffe://example.org/svc/a/b/c", "**")).await, "cannot be used in a SPIFFE ID path segment");
    denied(bot.issue_x509_svid(with("spiffe://example.org/svc/web", "*")).await, "cannot be used in a SPIFFE ID path segment");
    denied(bot.issue_x509_svid(with("spiffe://example.org/svc/1000", "1*")).await, "cannot be used in a SPIFFE ID path segment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_in_a_join_claim_cannot_widen_a_role_pattern() {
    use join_oidc_issuer::{Issuer, Key};
    let b = Broker::start().await;
    let issuer = Issuer::start().await;
    let mut admin = b.admin().await;
    create_role(&mut admin, "jobs", pb::RoleAllow { spiffe_ids: strings(&["/jobs/{{join.sub}}"]), ..Default::default() }).await;
    create_bot(&mut admin, "jobs", &["jobs"]).await;
    let iss = issuer.url("ci");
    let config: HashMap<String, String> =
        [("issuer", iss.clone()), ("audience", "sigil".into()), ("ca_pem", issuer.ca_pem.clone()), ("allow_private_network", "true".into())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    admin
        .create_join_token(pb::JoinToken {
            name: "ci".into(),
            bot: "jobs".into(),
            method: "oidc".into(),
            expires_at: now() + 600,
            max_uses: 5,
            allow: vec![pb::AllowRule { claims: [("sub".to_string(), "job-*".to_string())].into() }],
            config,
            ..Default::default()
        })
        .await
        .unwrap();
    // A job whose (partly caller-chosen) subject is literally "job-*" passes the
    // join rule; rendered into the role it would have matched every job's ID.
    let claims = serde_json::json!({"iss": iss, "aud": "sigil", "sub": "job-*", "iat": now() - 5, "exp": now() + 300});
    let (kp, join_csr) = key_and_csr().unwrap();
    let r = b
        .anonymous()
        .await
        .join(pb::JoinRequest { method: "oidc".into(), token: issuer.mint(Key::Rsa, &claims), token_name: "ci".into(), csr: join_csr, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let id = sigil_schemas::identity::Identity::new(r.certificate_pem, kp.serialize_pem(), r.ca_pem);
    let mut bot = sigil_schemas::client::connect_with_identity(&b.addr, &id).await.unwrap();
    denied(bot.issue_x509_svid(x509_req("spiffe://example.org/jobs/job-42")).await, "cannot be used in a SPIFFE ID path segment");
}

// ------------------------------------------------ workload identities (11.5, suspected)

async fn web_identity(admin: &mut Client, spiffe_id: &str) {
    admin
        .create_workload_identity(pb::WorkloadIdentity { name: "web".into(), spiffe_id: spiffe_id.into(), ..Default::default() })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_cannot_bypass_the_roles_ttl_caps() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    web_identity(&mut admin, "/svc/web").await;
    let allow = pb::RoleAllow {
        workload_identities: strings(&["web"]),
        audiences: strings(&["sts.amazonaws.com"]),
        max_x509_ttl_seconds: 300,
        max_jwt_ttl_seconds: 60,
        ..Default::default()
    };
    let mut bot = bot_with(&b, &mut admin, "capped", allow).await;
    let day = 86_400;
    let x = pb::IssueX509SvidRequest { csr: csr(), workload_identity: "web".into(), ttl_seconds: day, ..Default::default() };
    let j = pb::IssueJwtSvidRequest { workload_identity: "web".into(), audiences: strings(&["sts.amazonaws.com"]), ttl_seconds: day, ..Default::default() };
    let t0 = now();
    let svid = bot.issue_x509_svid(x.clone()).await.unwrap().into_inner();
    assert!(svid.expires_at <= now() + 300 && svid.expires_at >= t0 + 290, "X.509-SVID for {} s", svid.expires_at - t0);
    let jwt = bot.issue_jwt_svid(j.clone()).await.unwrap().into_inner();
    assert_eq!(jwt_lifetime(&jwt.token), 60);
    let batch = bot.batch_issue_svids(pb::BatchIssueSvidsRequest { x509: vec![x], jwt: vec![j] }).await.unwrap().into_inner();
    let bx = batch.x509[0].svid.as_ref().unwrap();
    assert!(bx.expires_at <= now() + 300, "batch X.509-SVID for {} s", bx.expires_at - t0);
    assert_eq!(jwt_lifetime(&batch.jwt[0].svid.as_ref().unwrap().token), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_cannot_mint_under_the_bot_identity_prefix() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    web_identity(&mut admin, "/sigil/{{workload.kind}}/{{workload.name}}").await;
    let mut bot = bot_with(&b, &mut admin, "agent", pb::RoleAllow { workload_identities: strings(&["web"]), ..Default::default() }).await;
    let attrs = attrs(&[("workload.kind", "bot"), ("workload.name", "admin")]);
    for client in [&mut bot, &mut admin] {
        let req = pb::IssueX509SvidRequest { csr: csr(), workload_identity: "web".into(), workload_attributes: attrs.clone(), ..Default::default() };
        denied(client.issue_x509_svid(req.clone()).await, "reserved bot identity prefix");
        let batch = client.batch_issue_svids(pb::BatchIssueSvidsRequest { x509: vec![req], jwt: vec![] }).await.unwrap().into_inner();
        assert_eq!(batch.x509[0].error.as_ref().map(|e| e.code), Some(Code::PermissionDenied as i32));
    }
    // A template that names the prefix outright is refused when stored.
    let err = admin
        .create_workload_identity(pb::WorkloadIdentity { name: "imp".into(), spiffe_id: "/sigil/bot/{{workload.name}}".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
}

/// Confirms the suspected finding and the way out: `workload.*` attributes are
/// asserted by the calling bot (the agent's attestation; the broker cannot check
/// them), so a condition on them does not restrict the bot itself. `bot.*` and
/// `join.*` attributes are set only by the broker, so conditions on them do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_asserts_workload_attributes_itself_but_cannot_assert_bot_or_join_ones() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let cond = |attribute: &str, values: &[&str]| pb::Condition { attribute: attribute.into(), values: strings(values) };
    for (name, condition) in [("root", cond("workload.unix.uid", &["0"])), ("prod", cond("bot.traits.tier", &["prod"])), ("github", cond("join.method", &["github"]))] {
        admin
            .create_workload_identity(pb::WorkloadIdentity { name: name.into(), spiffe_id: format!("/svc/{name}"), allow: vec![condition], ..Default::default() })
            .await
            .unwrap();
    }
    let mut bot = bot_with(&b, &mut admin, "agent", pb::RoleAllow { workload_identities: strings(&["*"]), ..Default::default() }).await;
    let req = |wi: &str, kv: &[(&str, &str)]| pb::IssueX509SvidRequest { csr: csr(), workload_identity: wi.into(), workload_attributes: attrs(kv), ..Default::default() };
    // Any bot the role grants "root" to can claim to serve a uid-0 process.
    let got = bot.issue_x509_svid(req("root", &[("workload.unix.uid", "0")])).await.unwrap();
    assert_eq!(got.into_inner().spiffe_id, "spiffe://example.org/svc/root");
    // It cannot claim broker-set attributes.
    for (wi, key, value) in [("prod", "bot.traits.tier", "prod"), ("github", "join.method", "github")] {
        let err = bot.issue_x509_svid(req(wi, &[(key, value)])).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains("only workload.* attributes"), "{}", err.message());
        denied(bot.issue_x509_svid(req(wi, &[])).await, key);
    }
}

// ------------------------------------------------------ controls that already held

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_identities_without_admin_rules_are_refused_on_every_admin_rpc() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow { spiffe_ids: strings(&["/**"]), audiences: strings(&["*"]), workload_identities: strings(&["*"]), ..Default::default() };
    let mut bot = bot_with(&b, &mut admin, "svids-only", allow).await;
    let get = || pb::GetRequest { name: "admin".into() };
    let del = || pb::DeleteRequest { name: "admin".into(), revision: 0 };
    let list = || pb::ListRequest::default();
    let role = pb::Role { name: "admin".into(), ..Default::default() };
    let bot_doc = pb::Bot { name: "admin".into(), ..Default::default() };
    let token = pb::JoinToken { name: "t".into(), bot: "admin".into(), expires_at: now() + 60, ..Default::default() };
    let wi = pb::WorkloadIdentity { name: "w".into(), spiffe_id: "/w".into(), ..Default::default() };
    let results: Vec<(&str, Code)> = vec![
        ("CreateRole", bot.create_role(role.clone()).await.map(|_| ()).unwrap_err().code()),
        ("GetRole", bot.get_role(get()).await.map(|_| ()).unwrap_err().code()),
        ("ListRoles", bot.list_roles(list()).await.map(|_| ()).unwrap_err().code()),
        ("UpdateRole", bot.update_role(role).await.map(|_| ()).unwrap_err().code()),
        ("DeleteRole", bot.delete_role(del()).await.map(|_| ()).unwrap_err().code()),
        ("CreateBot", bot.create_bot(bot_doc.clone()).await.map(|_| ()).unwrap_err().code()),
        ("GetBot", bot.get_bot(get()).await.map(|_| ()).unwrap_err().code()),
        ("ListBots", bot.list_bots(list()).await.map(|_| ()).unwrap_err().code()),
        ("UpdateBot", bot.update_bot(bot_doc).await.map(|_| ()).unwrap_err().code()),
        ("DeleteBot", bot.delete_bot(del()).await.map(|_| ()).unwrap_err().code()),
        ("CreateJoinToken", bot.create_join_token(token.clone()).await.map(|_| ()).unwrap_err().code()),
        ("GetJoinToken", bot.get_join_token(get()).await.map(|_| ()).unwrap_err().code()),
        ("ListJoinTokens", bot.list_join_tokens(list()).await.map(|_| ()).unwrap_err().code()),
        ("UpdateJoinToken", bot.update_join_token(token).await.map(|_| ()).unwrap_err().code()),
        ("DeleteJoinToken", bot.delete_join_token(del()).await.map(|_| ()).unwrap_err().code()),
        ("CreateWorkloadIdentity", bot.create_workload_identity(wi.clone()).await.map(|_| ()).unwrap_err().code()),
        ("GetWorkloadIdentity", bot.get_workload_identity(get()).await.map(|_| ()).unwrap_err().code()),
        ("ListWorkloadIdentities", bot.list_workload_identities(list()).await.map(|_| ()).unwrap_err().code()),
        ("UpdateWorkloadIdentity", bot.update_workload_identity(wi).await.map(|_| ()).unwrap_err().code()),
        ("DeleteWorkloadIdentity", bot.delete_workload_identity(del()).await.map(|_| ()).unwrap_err().code()),
        ("ListAuditEvents", bot.list_audit_events(pb::ListAuditEventsRequest::default()).await.map(|_| ()).unwrap_err().code()),
    ];
    let wrong: Vec<String> = results.iter().filter(|(_, c)| *c != Code::PermissionDenied).map(|(rpc, c)| format!("{rpc}: {c:?}")).collect();
    assert!(wrong.is_empty(), "not refused with PermissionDenied: {wrong:?}");
    admin.get_bot(get()).await.expect("admin bot untouched");
    assert_eq!(admin.get_role(get()).await.unwrap().into_inner().allow.unwrap().spiffe_ids, ["/**"]);
}

/// A CSR asking for a CA certificate, other SANs (including a bot identity),
/// a subject, key usages and a private extension: the SVID carries none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_subject_sans_and_extensions_are_never_copied_into_svids() {
    use rcgen::{CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer as _;
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut bot = bot_with(&b, &mut admin, "ci", pb::RoleAllow { spiffe_ids: strings(&["/ci/**"]), ..Default::default() }).await;

    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "admin");
    p.distinguished_name.push(DnType::OrganizationName, "Evil Corp");
    p.subject_alt_names = vec![
        SanType::DnsName("evil.example.com".try_into().unwrap()),
        SanType::URI("spiffe://example.org/sigil/bot/admin".try_into().unwrap()),
        SanType::IpAddress("10.0.0.1".parse().unwrap()),
        SanType::Rfc822Name("root@example.com".try_into().unwrap()),
    ];
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    p.custom_extensions = vec![CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x04, 0x02, 0x68, 0x69])];
    let evil_csr = p.serialize_request(&kp).unwrap().der().to_vec();
    // The CSR really asks for all of that.
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(&evil_csr).unwrap();
    assert_eq!(parsed.requested_extensions().map(|e| e.count()).unwrap_or(0), 5, "SAN, key usage, EKU, basic constraints, private");

    let svid = bot
        .issue_x509_svid(pb::IssueX509SvidRequest { csr: evil_csr.clone(), spiffe_id: "spiffe://example.org/ci/a".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let joined = {
        let secret = token_secret(&mut admin, "again", "ci").await.unwrap();
        let r = b.anonymous().await.join(pb::JoinRequest { method: "token".into(), token: secret, csr: evil_csr, ..Default::default() }).await.unwrap();
        r.into_inner().certificate_pem
    };
    for (what, pem, uri) in [("X.509-SVID", &svid.certificate_pem, "spiffe://example.org/ci/a"), ("bot identity", &joined, "spiffe://example.org/sigil/bot/ci")] {
        let der = sigil_agent::bundle::pem_certs(pem).unwrap().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let subject = cert.subject().to_string();
        assert!(!subject.contains("admin") && !subject.contains("Evil"), "{what}: subject {subject:?} copied from the CSR");
        let mut sans = Vec::new();
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => sans.extend(san.general_names.iter().map(|n| format!("{n:?}"))),
                ParsedExtension::BasicConstraints(bc) => assert!(!bc.ca, "{what}: CA:TRUE copied"),
                ParsedExtension::KeyUsage(ku) => assert!(!ku.key_cert_sign() && !ku.crl_sign(), "{what}: key usage copied: {ku}"),
                ParsedExtension::ExtendedKeyUsage(eku) => assert!(!eku.code_signing, "{what}: codeSigning copied"),
                _ => {}
            }
            assert_ne!(ext.oid.to_id_string(), "1.3.6.1.4.1.99999.1", "{what}: private extension copied");
        }
        assert_eq!(sans, [format!("{:?}", GeneralName::URI(uri))], "{what}: SANs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_update_cannot_change_its_own_traits_to_reach_another_teams_ids() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow { spiffe_ids: strings(&["/team/{{bot.traits.team}}/**"]), rules: vec![rule(&["bot"], &["read", "update"], &[])], ..Default::default() };
    create_role(&mut admin, "member", allow).await;
    let traits = |t: &str| [("team".to_string(), pb::StringList { values: strings(&[t]) })].into_iter().collect();
    admin.create_bot(pb::Bot { name: "web-bot".into(), roles: strings(&["member"]), traits: traits("web"), ..Default::default() }).await.unwrap();
    let secret = token_secret(&mut admin, "t", "web-bot").await.unwrap();
    let mut bot = b.join_as(&secret).await.unwrap();
    bot.issue_x509_svid(x509_req("spiffe://example.org/team/web/api")).await.unwrap();
    // The attack: move itself to team "db". Its role, read for any bot, grants /team/*/**: more than it holds.
    let mut me = bot.get_bot(pb::GetRequest { name: "web-bot".into() }).await.unwrap().into_inner();
    me.traits = traits("db");
    denied(bot.update_bot(me).await, "bind");
    denied(bot.issue_x509_svid(x509_req("spiffe://example.org/team/db/api")).await, "/team/web/**");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_writes_cannot_add_dns_sans_or_jwt_claims_without_escalate() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow {
        spiffe_ids: strings(&["/team/**"]),
        workload_identities: strings(&["*"]),
        audiences: strings(&["x"]),
        rules: vec![rule(&["workload_identity"], &["create", "read", "update"], &[])],
        ..Default::default()
    };
    let mut bot = bot_with(&b, &mut admin, "lead", allow).await;
    let wi = |name: &str, dns: &[&str], claims: &[(&str, &str)]| pb::WorkloadIdentity {
        name: name.into(),
        spiffe_id: "/team/web".into(),
        dns_sans: strings(dns),
        jwt_extra_claims: claims.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    // The attack: a server certificate for any DNS name, or a JWT claim a relying party trusts.
    denied(bot.create_workload_identity(wi("bank", &["www.bank.example"], &[])).await, "DNS SAN");
    denied(bot.create_workload_identity(wi("groups", &[], &[("groups", "admins")])).await, "JWT claim");
    bot.create_workload_identity(wi("web", &[], &[])).await.unwrap();
    // Those an admin set may be kept on update, not changed.
    admin.create_workload_identity(wi("api", &["api.team.example"], &[("team", "web")])).await.unwrap();
    let mut api = bot.get_workload_identity(pb::GetRequest { name: "api".into() }).await.unwrap().into_inner();
    api.allow = vec![pb::Condition { attribute: "workload.unix.uid".into(), values: strings(&["1000"]) }];
    let api = bot.update_workload_identity(api).await.unwrap().into_inner();
    let mut changed = api.clone();
    changed.jwt_extra_claims.insert("team".into(), "admins".into());
    denied(bot.update_workload_identity(changed).await, "JWT claim");
    let mut changed = api;
    changed.dns_sans.push("*.bank.example".into());
    denied(bot.update_workload_identity(changed).await, "DNS SAN");
}
