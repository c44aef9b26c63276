//! OIDC-family joins end to end: a dev broker in process, a local HTTPS issuer
//! with its own CA and keys, tokens with the claim sets each platform documents.
//! One table row per method; every row runs the same allowed/refused matrix.
#![allow(clippy::unwrap_used)]

mod common;
mod join_oidc_issuer;

use common::{last_join_denial, now, Broker};
use join_oidc_issuer::{Issuer, Key};
use serde_json::{json, Value};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

const CIRCLE_ORG: &str = "c2d0b3e4-1b3f-4a5e-9d3c-6f0a1b2c3d4e";
const CIRCLE_PROJECT: &str = "8a7b6c5d-4e3f-4a1b-9c2d-1e0f9a8b7c6d";
const AZDO_ORG: &str = "6f1c7a1e-3d2b-4c5a-8e9f-0a1b2c3d4e5f";
const BB_WORKSPACE: &str = "{4d3c2b1a-0f9e-4d8c-b7a6-5f4e3d2c1b0a}";

/// One OIDC platform: how its join token is configured and what its tokens say.
struct Platform {
    /// Row label, also the join token name.
    label: &'static str,
    method: &'static str,
    key: Key,
    /// Join token config, given the issuer. `ca_pem`/`allow_private_network` are
    /// added for rows that use discovery.
    config: fn(&Issuer) -> Vec<(&'static str, String)>,
    discovery: bool,
    /// A realistic claim set, valid at `now`.
    claims: fn(&Issuer, i64) -> Value,
    allow: &'static [(&'static str, &'static str)],
    /// Changes the claims so that they fall outside the allow rule ...
    outside: fn(&mut Value),
    /// ... on this field.
    outside_field: &'static str,
}

/// Config entries of a join token.
type Config = Vec<(&'static str, String)>;

fn times(now: i64) -> Value {
    json!({"iat": now - 5, "nbf": now - 5, "exp": now + 300})
}

fn with_times(mut v: Value, now: i64) -> Value {
    for (k, t) in times(now).as_object().unwrap() {
        v[k] = t.clone();
    }
    v
}

fn platforms() -> Vec<Platform> {
    vec![
        Platform {
            label: "github",
            method: "github",
            key: Key::Rsa,
            config: |i| vec![("enterprise_host", i.host.clone()), ("audience", "sigil".into())],
            discovery: true,
            // https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect
            claims: |i, now| with_times(json!({
                "jti": "example-id", "iss": i.url("_services/token"), "aud": "sigil",
                "sub": "repo:octo-org/octo-repo:environment:prod", "environment": "prod", "ref": "refs/heads/main",
                "sha": "example-sha", "repository": "octo-org/octo-repo", "repository_owner": "octo-org",
                "actor_id": "12", "repository_visibility": "private", "repository_id": "74", "repository_owner_id": "65",
                "run_id": "example-run-id", "run_number": "10", "run_attempt": "2", "runner_environment": "github-hosted",
                "actor": "octocat", "workflow": "example-workflow", "head_ref": "", "base_ref": "", "event_name": "workflow_dispatch",
                "ref_type": "branch", "job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main"
            }), now),
            allow: &[("repository", "octo-org/*"), ("ref", "refs/heads/main"), ("environment", "prod")],
            outside: |c| c["ref"] = json!("refs/heads/evil"),
            outside_field: "ref",
        },
        Platform {
            label: "gitlab",
            method: "gitlab",
            key: Key::Rsa,
            config: |i| vec![("domain", i.host.clone()), ("audience", "https://sigil.example.com".into())],
            discovery: true,
            // https://docs.gitlab.com/ci/secrets/id_token_authentication/
            claims: |i, now| with_times(json!({
                "namespace_id": "72", "namespace_path": "my-group", "project_id": "20", "project_path": "my-group/my-project",
                "user_id": "1", "user_login": "sample-user", "user_email": "sample-user@example.com",
                "user_identities": [{"provider": "github", "extern_uid": "2435223452345"}],
                "pipeline_id": "574", "pipeline_source": "push", "job_id": "302", "ref": "main", "ref_type": "branch",
                "ref_path": "refs/heads/main", "ref_protected": "true", "environment": "production",
                "environment_protected": "true", "deployment_tier": "production", "environment_action": "start",
                "runner_id": 1, "runner_environment": "gitlab-hosted", "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
                "project_visibility": "private", "ci_config_ref_uri": "gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main",
                "ci_config_sha": "714a629c0b401fdce83e847fc9589983fc6f46bc", "jti": "235b3a54-b797-45c7-ae9a-f72d7bc6ef5b",
                "iss": i.url(""), "sub": "project_path:my-group/my-project:ref_type:branch:ref:main",
                "aud": "https://sigil.example.com"
            }), now),
            allow: &[("project_path", "my-group/*"), ("ref_protected", "true"), ("ref_type", "branch")],
            outside: |c| c["ref_protected"] = json!("false"),
            outside_field: "ref_protected",
        },
        Platform {
            label: "circleci",
            method: "circleci",
            key: Key::Rsa,
            config: |i| vec![("organization_id", CIRCLE_ORG.into()), ("issuer", i.url(&format!("org/{CIRCLE_ORG}")))],
            discovery: true,
            // https://circleci.com/docs/openid-connect-tokens/
            claims: |i, now| with_times(json!({
                "iss": i.url(&format!("org/{CIRCLE_ORG}")), "aud": CIRCLE_ORG,
                "sub": format!("org/{CIRCLE_ORG}/project/{CIRCLE_PROJECT}/user/1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"),
                "oidc.circleci.com/project-id": CIRCLE_PROJECT,
                "oidc.circleci.com/context-ids": ["11111111-2222-4333-8444-555555555555", "66666666-7777-4888-9999-000000000000"],
                "oidc.circleci.com/vcs-origin": "github.com/acme/web", "oidc.circleci.com/vcs-ref": "refs/heads/main",
                "oidc.circleci.com/ssh-rerun": false
            }), now),
            allow: &[("project_id", CIRCLE_PROJECT), ("context_id", "66666666-7777-4888-9999-000000000000")],
            outside: |c| c["oidc.circleci.com/context-ids"] = json!(["99999999-9999-4999-8999-999999999999"]),
            outside_field: "context_id",
        },
        Platform {
            label: "bitbucket",
            method: "bitbucket",
            key: Key::Rsa,
            config: |i| vec![
                ("issuer", i.url("2.0/workspaces/acme/pipelines-config/identity/oidc")),
                ("audience", format!("ari:cloud:bitbucket::workspace/{BB_WORKSPACE}")),
            ],
            discovery: true,
            // https://support.atlassian.com/bitbucket-cloud/docs/integrate-pipelines-with-resource-servers-using-oidc/
            claims: |i, now| with_times(json!({
                "sub": "{7a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d}:{0f1e2d3c-4b5a-4697-8887-a9b8c7d6e5f4}",
                "aud": format!("ari:cloud:bitbucket::workspace/{BB_WORKSPACE}"),
                "stepUuid": "{0f1e2d3c-4b5a-4697-8887-a9b8c7d6e5f4}",
                "iss": i.url("2.0/workspaces/acme/pipelines-config/identity/oidc"),
                "repositoryUuid": "{7a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d}", "branchName": "main",
                "pipelineUuid": "{a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d}", "workspaceUuid": BB_WORKSPACE,
                "deploymentEnvironmentUuid": "{d4c3b2a1-f6e5-4b7a-9d8c-5d4c3b2a1f0e}"
            }), now),
            allow: &[("workspace_uuid", BB_WORKSPACE), ("repository_uuid", "{7a4b3c2d-*}"), ("branch_name", "main")],
            outside: |c| c["branchName"] = json!("feature/x"),
            outside_field: "branch_name",
        },
        Platform {
            label: "azure_devops",
            method: "azure_devops",
            key: Key::Ec,
            config: |i| vec![("organization_id", AZDO_ORG.into()), ("issuer", i.url(AZDO_ORG))],
            discovery: true,
            // Azure DevOps workload identity federation (System.OidcRequestUri) token.
            claims: |i, now| with_times(json!({
                "jti": "b8d5e5a4-3f2a-4c1b-9e8d-7c6b5a4f3e2d", "sub": "p://acme/web/deploy-prod",
                "aud": "api://AzureADTokenExchange", "org_id": AZDO_ORG, "prj_id": "0d9c8b7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a",
                "def_id": "12", "rpo_id": "acme/web", "rpo_uri": "https://github.com/acme/web", "rpo_ver": "5d6e7f",
                "rpo_ref": "refs/heads/main", "run_id": "2048", "iss": i.url(AZDO_ORG)
            }), now),
            allow: &[("project_name", "web"), ("pipeline_name", "deploy-*"), ("repository_ref", "refs/heads/main")],
            outside: |c| c["sub"] = json!("p://acme/web/nightly"),
            outside_field: "pipeline_name",
        },
        Platform {
            label: "terraform_cloud",
            method: "terraform_cloud",
            key: Key::Rsa,
            config: |i| vec![("hostname", i.host.clone()), ("audience", "sigil.workload.identity".into())],
            discovery: true,
            // https://developer.hashicorp.com/terraform/cloud-docs/workspaces/dynamic-provider-credentials/workload-identity-tokens
            claims: |i, now| with_times(json!({
                "jti": "1192426d-b525-4fde-9d52-f5b6ea6a4f3c", "iss": i.url(""), "aud": "sigil.workload.identity",
                "sub": "organization:acme:project:Default Project:workspace:prod-infra:run_phase:apply",
                "terraform_organization_id": "org-GRNbCjYNpBB6NEH9", "terraform_organization_name": "acme",
                "terraform_project_id": "prj-vegSA59s1XPwMr2t", "terraform_project_name": "Default Project",
                "terraform_workspace_id": "ws-mbsd5E3Ktt5Rg2Xm", "terraform_workspace_name": "prod-infra",
                "terraform_full_workspace": "organization:acme:project:Default Project:workspace:prod-infra",
                "terraform_run_id": "run-X3n1AUXNGWbfECsJ", "terraform_run_phase": "apply"
            }), now),
            allow: &[("organization", "acme"), ("workspace", "prod-*"), ("run_phase", "apply")],
            outside: |c| c["terraform_run_phase"] = json!("plan"),
            outside_field: "run_phase",
        },
        Platform {
            label: "spacelift",
            method: "spacelift",
            key: Key::Rsa,
            config: |i| vec![("hostname", i.host.clone())],
            discovery: true,
            // https://docs.spacelift.io/integrations/cloud-providers/oidc
            claims: |i, now| with_times(json!({
                "aud": i.host.clone(), "iss": i.url(""), "sub": "space:root:stack:infra:run_type:TRACKED:scope:write",
                "spaceId": "root", "callerType": "stack", "callerId": "infra", "runType": "TRACKED",
                "runId": "01HB8GW4WG4X0Z0Q4B6W4X5J9D", "scope": "write"
            }), now),
            allow: &[("space_id", "root"), ("caller_type", "stack"), ("caller_id", "infra"), ("scope", "write")],
            outside: |c| c["scope"] = json!("read"),
            outside_field: "scope",
        },
        Platform {
            label: "jenkins",
            method: "oidc",
            key: Key::Rsa,
            config: |i| vec![("issuer", i.url("jenkins/oidc")), ("audience", "sigil".into())],
            discovery: true,
            // Jenkins OpenID Connect Provider plugin (job-scoped id token credential).
            claims: |i, now| with_times(json!({
                "iss": i.url("jenkins/oidc"), "aud": "sigil", "sub": "https://jenkins.example.com/job/deploy/",
                "build_number": 42
            }), now),
            allow: &[("sub", "https://jenkins.example.com/job/deploy/")],
            outside: |c| c["sub"] = json!("https://jenkins.example.com/job/other/"),
            outside_field: "sub",
        },
        Platform {
            label: "kubernetes-static-jwks",
            method: "kubernetes",
            key: Key::Rsa,
            config: |i| vec![
                ("issuer", "https://kubernetes.default.svc.cluster.local".into()),
                ("audience", "sigil".into()),
                ("jwks", i.jwks.clone()),
            ],
            discovery: false,
            claims: |_, now| k8s_claims("https://kubernetes.default.svc.cluster.local", now),
            allow: &[("service_account", "ci:builder")],
            outside: k8s_intruder,
            outside_field: "service_account",
        },
        Platform {
            label: "kubernetes-discovery",
            method: "kubernetes",
            key: Key::Ec,
            config: |i| vec![("issuer", i.url("k8s")), ("audience", "sigil".into())],
            discovery: true,
            claims: |i, now| k8s_claims(&i.url("k8s"), now),
            allow: &[("service_account", "ci:*")],
            outside: |c| {
                c["sub"] = json!("system:serviceaccount:kube-system:builder");
                c["kubernetes.io"]["namespace"] = json!("kube-system");
            },
            outside_field: "service_account",
        },
    ]
}

/// A projected service-account token (`kubectl create token`, TokenRequest API).
fn k8s_claims(iss: &str, now: i64) -> Value {
    with_times(json!({
        "aud": ["sigil"], "iss": iss, "jti": "c2b8f0e3-7a1d-4f5e-9b6c-3d2e1f0a9b8c",
        "kubernetes.io": {"namespace": "ci", "node": {"name": "node-1", "uid": "5b4a3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"},
            "pod": {"name": "builder-7d9f8", "uid": "a9b8c7d6-e5f4-4a3b-2c1d-0e9f8a7b6c5d"},
            "serviceaccount": {"name": "builder", "uid": "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b5a"}, "warnafter": now + 240},
        "sub": "system:serviceaccount:ci:builder"
    }), now)
}

fn k8s_intruder(c: &mut Value) {
    c["sub"] = json!("system:serviceaccount:ci:intruder");
    c["kubernetes.io"]["serviceaccount"]["name"] = json!("intruder");
}

async fn setup_bot(admin: &mut SigilClient<Channel>) {
    admin
        .create_role(pb::Role {
            name: "ci".into(),
            allow: Some(pb::RoleAllow { spiffe_ids: vec!["/gh/{{join.repository_owner}}/**".into()], ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.create_bot(pb::Bot { name: "ci".into(), roles: vec!["ci".into()], ..Default::default() }).await.unwrap();
}

async fn create_token(admin: &mut SigilClient<Channel>, name: &str, method: &str, config: Vec<(&str, String)>, allow: &[(&str, &str)]) {
    try_create_token(admin, name, method, config, allow).await.unwrap();
}

async fn try_create_token(admin: &mut SigilClient<Channel>, name: &str, method: &str, config: Vec<(&str, String)>, allow: &[(&str, &str)]) -> Result<(), tonic::Status> {
    admin
        .create_join_token(pb::JoinToken {
            name: name.into(),
            bot: "ci".into(),
            method: method.into(),
            expires_at: now() + 3600,
            max_uses: 1,
            allow: vec![pb::AllowRule { claims: allow.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }],
            config: config.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

fn platform_config(p: &Platform, i: &Issuer) -> Vec<(&'static str, String)> {
    let mut c = (p.config)(i);
    if p.discovery {
        c.push(("ca_pem", i.ca_pem.clone()));
        c.push(("allow_private_network", "true".into()));
    }
    c
}

/// Joins with `jwt`; Ok(bot) or Err(status).
async fn join(b: &Broker, method: &str, token_name: &str, jwt: String) -> Result<pb::IdentityResponse, tonic::Status> {
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let req = pb::JoinRequest { method: method.into(), token: jwt, token_name: token_name.into(), csr, ..Default::default() };
    b.anonymous().await.join(req).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn every_oidc_method_admits_allowed_tokens_and_refuses_each_forgery() {
    let b = Broker::start().await;
    let issuer = Issuer::start().await;
    let mut admin = b.admin().await;
    setup_bot(&mut admin).await;
    let mut failures = Vec::new();
    let mut ran = 0;
    for p in platforms() {
        create_token(&mut admin, p.label, p.method, platform_config(&p, &issuer), p.allow).await;
        let t = now();
        let good = (p.claims)(&issuer, t);
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut c = good.clone();
            f(&mut c);
            c
        };
        let mut outside = good.clone();
        (p.outside)(&mut outside);
        let outside_msg = format!("{} = ", p.outside_field);
        let i = &issuer;
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            ("allowed", i.mint(p.key, &good), None),
            ("wrong issuer", i.mint(p.key, &edit(&|c| c["iss"] = json!("https://token.evil.example"))), Some("is not the expected")),
            ("wrong audience", i.mint(p.key, &edit(&|c| c["aud"] = json!("someone-else"))), Some("does not contain the expected")),
            ("expired", i.mint(p.key, &edit(&|c| {
                c["exp"] = json!(t - 3600);
                c["iat"] = json!(t - 3900);
                c["nbf"] = json!(t - 3900);
            })), Some("token expired at")),
            ("not yet valid", i.mint(p.key, &edit(&|c| c["nbf"] = json!(t + 3600))), Some("not valid before")),
            ("unknown kid", i.mint(Key::Unpublished, &good), Some("no key with kid \"unpublished\"")),
            ("alg none", i.unsigned(&good), Some("algorithm \"none\" is not accepted")),
            ("HS256 keyed with the public key", i.hs256_with_public_key(&good), Some("algorithm \"HS256\" is not accepted")),
            ("signature over other claims", i.spliced(p.key, &outside, &good), Some("signature verification failed")),
            ("claims outside the allow rules", i.mint(p.key, &outside), Some(outside_msg.as_str())),
            ("oversized token", i.mint(p.key, &edit(&|c| c["padding"] = json!("x".repeat(20_000)))), Some("more than the 16384 accepted")),
        ];
        for (case, jwt, refused_with) in cases {
            ran += 1;
            // The caller gets the generic refusal; the audit log says why.
            let got = match join(&b, p.method, p.label, jwt).await {
                Ok(r) => Ok(r),
                Err(s) => Err((s.code(), s.message().to_string(), last_join_denial(&mut admin).await)),
            };
            match (refused_with, got) {
                (None, Ok(r)) if r.bot == "ci" => {}
                (Some(want), Err((code, msg, why))) if code == tonic::Code::PermissionDenied && msg == sigil_broker::join::REFUSED && why.contains(want) => {}
                (want, got) => failures.push(format!(
                    "{} / {case}: wanted {}, got {}",
                    p.label,
                    want.map(|w| format!("refusal audited with {w:?}")).unwrap_or("a join".into()),
                    match got {
                        Ok(r) => format!("join as {}", r.bot),
                        Err((code, msg, why)) => format!("{code:?}: {msg} (audited: {why})"),
                    }
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{} of {ran} cases wrong:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(ran, 10 * 11);
}

#[tokio::test]
async fn github_claims_become_join_attributes_that_shape_the_spiffe_ids_a_bot_may_get() {
    let b = Broker::start().await;
    let issuer = Issuer::start().await;
    let mut admin = b.admin().await;
    setup_bot(&mut admin).await;
    let p = platforms().into_iter().find(|p| p.label == "github").unwrap();
    create_token(&mut admin, "gh", "github", platform_config(&p, &issuer), p.allow).await;
    let (kp, csr) = sigil_core::csr::key_and_csr().unwrap();
    let r = b
        .anonymous()
        .await
        .join(pb::JoinRequest { method: "github".into(), token: issuer.mint(Key::Rsa, &(p.claims)(&issuer, now())), token_name: "gh".into(), csr, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let id = sigil_schemas::identity::Identity::new(r.certificate_pem, kp.serialize_pem(), r.ca_pem);
    let mut bot = sigil_schemas::client::connect_with_identity(&b.addr, &id).await.unwrap();
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let ok = bot.issue_x509_svid(pb::IssueX509SvidRequest { csr: csr.clone(), spiffe_id: "spiffe://example.org/gh/octo-org/deploy".into(), ..Default::default() }).await;
    assert_eq!(ok.unwrap().into_inner().spiffe_id, "spiffe://example.org/gh/octo-org/deploy");
    let denied = bot.issue_x509_svid(pb::IssueX509SvidRequest { csr, spiffe_id: "spiffe://example.org/gh/other-org/deploy".into(), ..Default::default() }).await;
    assert_eq!(denied.unwrap_err().code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn issuer_fetches_are_https_bounded_same_origin_and_private_only_when_allowed() {
    let b = Broker::start().await;
    let issuer = Issuer::start().await;
    let mut admin = b.admin().await;
    setup_bot(&mut admin).await;
    let i = &issuer;
    let ca = || ("ca_pem", i.ca_pem.clone());
    let private = || ("allow_private_network", "true".to_string());
    let aud = || ("audience", "sigil".to_string());
    // (label, issuer path, config, outcome: None = joins, Some = refusal text)
    let cases: Vec<(&str, &str, Config, Option<&str>)> = vec![
        ("private-refused", "a", vec![aud(), ca()], Some("loopback/private/link-local")),
        ("untrusted-ca", "b", vec![aud(), private()], Some("cannot connect")),
        ("lying-discovery", "liar", vec![aud(), ca(), private()], Some("is not the configured issuer")),
        ("redirect-elsewhere", "c", vec![aud(), ca(), private(), ("jwks_uri", i.url("redirect-away"))], Some("only same-origin redirects")),
        ("redirect-same-origin", "d", vec![aud(), ca(), private(), ("jwks_uri", i.url("redirect-home"))], None),
        ("huge-jwks", "e", vec![aud(), ca(), private(), ("jwks_uri", i.url("huge"))], Some("more than 262144 bytes")),
        ("plain-http-issuer", "f", vec![aud(), ca(), private(), ("jwks_uri", format!("http://{}/.well-known/jwks", i.host))], Some("not an https:// URL")),
    ];
    let mut failures = Vec::new();
    for (label, path, mut config, refused_with) in cases {
        let iss = i.url(path);
        config.push(("issuer", iss.clone()));
        create_token(&mut admin, label, "oidc", config, &[("sub", "job-*")]).await;
        let claims = with_times(json!({"iss": iss, "aud": "sigil", "sub": "job-1"}), now());
        let got = match join(&b, "oidc", label, i.mint(Key::Rsa, &claims)).await {
            Ok(r) => Ok(r.bot),
            Err(s) => {
                common::assert_refused(&s);
                Err(last_join_denial(&mut admin).await)
            }
        };
        match (refused_with, &got) {
            (None, Ok(_)) => {}
            (Some(want), Err(why)) if why.contains(want) => {}
            _ => failures.push(format!("{label}: wanted {refused_with:?}, got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A misconfigured join token is refused when it is created, naming the setting:
/// a typo cannot quietly weaken a rule, and the administrator (not the joining
/// job) is told.
#[tokio::test]
async fn misconfigured_tokens_are_refused_at_creation_naming_the_setting() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup_bot(&mut admin).await;
    type Rules = &'static [(&'static str, &'static str)];
    let cases: Vec<(&str, &str, Config, Rules, &str)> = vec![
        ("unknown-rule-field", "github", vec![("audience", "sigil".into())], &[("repo", "acme/*")], "allow[0].repo"),
        ("config-typo", "gitlab", vec![("audiance", "sigil".into())], &[("project_path", "acme/*")], "config.audiance"),
        ("no-audience", "terraform_cloud", vec![], &[("organization", "acme")], "config.audience"),
        ("no-issuer", "oidc", vec![("audience", "sigil".into())], &[("sub", "x")], "config.issuer"),
        ("bad-host", "spacelift", vec![("hostname", "https://evil/x".into())], &[("scope", "write")], "config.hostname"),
    ];
    for (label, method, config, allow, field) in cases {
        let s = try_create_token(&mut admin, label, method, config, allow).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{label}: {}", s.message());
        assert!(s.message().contains(field), "{label}: {}", s.message());
    }
}

/// Issue 11.14: github.com, gitlab.com and app.terraform.io sign every
/// customer's tokens with one issuer and the job picks its audience, so a rule
/// that does not pin the repository owner / group / organization admits anyone
/// on the platform. Such tokens are refused at creation (unless
/// `allow_any_tenant: "true"`); with the opt-in, a token from `mallory/anything`
/// joins, which is exactly what the opt-in says.
#[tokio::test]
async fn a_shared_issuer_token_whose_rules_do_not_pin_the_tenant_is_refused_at_creation() {
    let b = Broker::start().await;
    let issuer = Issuer::start().await;
    let mut admin = b.admin().await;
    setup_bot(&mut admin).await;
    let gh = "https://token.actions.githubusercontent.com";
    let jwks = || ("jwks", issuer.jwks.clone());
    let aud = || ("audience", "sigil".to_string());
    type Rules = &'static [(&'static str, &'static str)];
    let refused: Vec<(&str, &str, Config, Rules)> = vec![
        ("gh-ref-only", "github", vec![aud(), jwks()], &[("ref", "refs/heads/main")]),
        ("gh-owner-glob", "github", vec![aud(), jwks()], &[("repository", "octo-*")]),
        ("gh-any-owner", "github", vec![aud(), jwks()], &[("repository", "*/octo-repo")]),
        ("gh-sub-glob", "github", vec![aud(), jwks()], &[("sub", "repo:*:ref:refs/heads/main")]),
        ("gitlab-com", "gitlab", vec![aud(), jwks()], &[("ref_protected", "true")]),
        ("tfc-workspace", "terraform_cloud", vec![aud(), jwks()], &[("workspace", "prod")]),
        ("oidc-as-github", "oidc", vec![aud(), jwks(), ("issuer", gh.into())], &[("ref", "refs/heads/main")]),
    ];
    for (label, method, config, allow) in refused {
        let s = try_create_token(&mut admin, label, method, config, allow).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{label}: {}", s.message());
        assert!(s.message().contains("allow[0]") && s.message().contains("allow_any_tenant"), "{label}: {}", s.message());
    }
    // Pinned rules are accepted; a repository of another owner is refused at join.
    create_token(&mut admin, "gh-pinned", "github", vec![aud(), jwks()], &[("repository", "octo-org/*"), ("ref", "refs/heads/main")]).await;
    let mallory = |i: &Issuer| i.mint(Key::Rsa, &with_times(json!({
        "iss": gh, "aud": "sigil", "sub": "repo:mallory/anything:ref:refs/heads/main",
        "repository": "mallory/anything", "repository_owner": "mallory", "ref": "refs/heads/main"
    }), now()));
    assert!(join(&b, "github", "gh-pinned", mallory(&issuer)).await.is_err());
    // The explicit opt-in accepts any tenant, as documented.
    create_token(&mut admin, "gh-any", "github", vec![aud(), jwks(), ("allow_any_tenant", "true".into())], &[("ref", "refs/heads/main")]).await;
    assert_eq!(join(&b, "github", "gh-any", mallory(&issuer)).await.unwrap().bot, "ci");
}

/// Issue 11.7: an issuer's token carrying claims `token` and `method` must not
/// pose as another join token (or method) in the `join.*` attributes that
/// templates and conditions read.
#[tokio::test]
async fn oidc_claims_named_token_and_method_cannot_overwrite_the_reserved_join_attributes() {
    let b = Broker::start().await;
    let issuer = Issuer::start().await;
    let mut admin = b.admin().await;
    admin
        .create_role(pb::Role {
            name: "per-token".into(),
            allow: Some(pb::RoleAllow { spiffe_ids: vec!["/t/{{join.token}}/{{join.method}}/**".into()], audiences: vec!["x".into()], ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.create_bot(pb::Bot { name: "ci".into(), roles: vec!["per-token".into()], ..Default::default() }).await.unwrap();
    let iss = issuer.url("jenkins/oidc");
    create_token(&mut admin, "jenkins", "oidc", vec![("issuer", iss.clone()), ("audience", "sigil".into()), ("jwks", issuer.jwks.clone())], &[("sub", "job-*")]).await;
    let claims = with_times(json!({"iss": iss, "aud": "sigil", "sub": "job-1", "token": "prod-deployer", "method": "token"}), now());
    let (kp, csr) = sigil_core::csr::key_and_csr().unwrap();
    let r = b
        .anonymous()
        .await
        .join(pb::JoinRequest { method: "oidc".into(), token: issuer.mint(Key::Rsa, &claims), token_name: "jenkins".into(), csr, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let id = sigil_schemas::identity::Identity::new(r.certificate_pem, kp.serialize_pem(), r.ca_pem);
    let mut bot = sigil_schemas::client::connect_with_identity(&b.addr, &id).await.unwrap();
    let issue = |spiffe_id: &str| pb::IssueJwtSvidRequest { spiffe_id: format!("spiffe://example.org{spiffe_id}"), audiences: vec!["x".into()], ..Default::default() };
    let forged = bot.issue_jwt_svid(issue("/t/prod-deployer/token/x")).await;
    assert_eq!(forged.map(|r| r.into_inner().spiffe_id).unwrap_err().code(), tonic::Code::PermissionDenied);
    let own = bot.issue_jwt_svid(issue("/t/jenkins/oidc/x")).await.unwrap().into_inner();
    assert_eq!(own.spiffe_id, "spiffe://example.org/t/jenkins/oidc/x");
}

/// Issue 11.18: `kubectl create token builder --audience sigil --duration 8760h`
/// gives a service-account token bound to no pod and valid for a year: a
/// replayable join secret. Kubernetes joins need a pod-bound token living at
/// most `max_token_lifetime` (default 1 h), unless the join token opts out.
#[tokio::test]
async fn a_year_long_or_pod_less_kubernetes_token_cannot_join() {
    let b = Broker::start().await;
    let issuer = Issuer::start().await;
    let mut admin = b.admin().await;
    setup_bot(&mut admin).await;
    let iss = "https://kubernetes.default.svc.cluster.local";
    let base = || vec![("issuer", iss.to_string()), ("audience", "sigil".to_string()), ("jwks", issuer.jwks.clone())];
    create_token(&mut admin, "k8s", "kubernetes", base(), &[("service_account", "ci:builder")]).await;
    let t = now();
    let pod_bound = k8s_claims(iss, t);
    let mut pod_less = pod_bound.clone();
    pod_less["kubernetes.io"].as_object_mut().unwrap().remove("pod");
    pod_less["kubernetes.io"].as_object_mut().unwrap().remove("node");
    let year = |mut c: Value| {
        c["iat"] = json!(t - 5);
        c["exp"] = json!(t + 365 * 86400);
        c
    };
    let mint = |c: &Value| issuer.mint(Key::Rsa, c);
    assert_eq!(join(&b, "kubernetes", "k8s", mint(&pod_bound)).await.unwrap().bot, "ci");
    for (label, c) in [("pod-less", pod_less.clone()), ("year-long", year(pod_bound.clone())), ("kubectl create token", year(pod_less.clone()))] {
        assert!(join(&b, "kubernetes", "k8s", mint(&c)).await.is_err(), "{label} token joined");
    }
    // The opt-outs are explicit and validated at creation.
    let mut lax = base();
    lax.extend([("allow_unbound_tokens", "true".to_string()), ("max_token_lifetime", (366 * 86400).to_string())]);
    create_token(&mut admin, "k8s-lax", "kubernetes", lax, &[("service_account", "ci:builder")]).await;
    assert_eq!(join(&b, "kubernetes", "k8s-lax", mint(&year(pod_less))).await.unwrap().bot, "ci");
    let mut bad = base();
    bad.push(("max_token_lifetime", "1h".to_string()));
    let s = try_create_token(&mut admin, "k8s-bad", "kubernetes", bad, &[("service_account", "ci:builder")]).await.unwrap_err();
    assert!(s.message().contains("config.max_token_lifetime"), "{}", s.message());
}
