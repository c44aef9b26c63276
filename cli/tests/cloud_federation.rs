#![allow(clippy::unwrap_used)]
//! Cloud federation against an in-process broker: the verify rules read the live
//! discovery + JWKS through the cloud HTTP client, and Roles Anywhere signing works
//! with a broker-issued X.509-SVID whose chain the trust-anchor rules accept.

mod common;

use common::{now, Broker};
use sigil_core::csr::key_and_csr;
use sigil_agent::cloud::http::HttpClient;
use sigil_agent::cloud::roles_anywhere::{sign_create_session, SessionParams};
use sigil_agent::cloud::sigv4_x509::{CertificateChain, SigningKey, X509Credential};
use sigil_agent::cloud::verify::{check_oidc, check_roles_anywhere, failures, gather_issuer, Cloud, Expectations, Level};
use sigil_schemas::sigil::v1 as pb;

async fn jwt(b: &Broker, audience: &str) -> String {
    b.admin()
        .await
        .issue_jwt_svid(pb::IssueJwtSvidRequest {
            spiffe_id: "spiffe://example.org/ci/deploy".into(),
            audiences: vec![audience.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

fn level(f: &[sigil_agent::cloud::verify::Finding], rule: &str) -> Level {
    f.iter().find(|x| x.rule == rule).unwrap_or_else(|| panic!("no {rule}: {f:?}")).level
}

#[tokio::test]
async fn live_issuer_passes_gcp_and_azure_rules_and_fails_only_the_aws_port_rule() {
    let b = Broker::start().await;
    let ca = std::fs::read_to_string(b.path("tls-ca.pem")).unwrap();
    let client = HttpClient::new(Some(&ca)).unwrap();
    let issuer = format!("https://{}", b.addr);
    let ev = gather_issuer(&client, &issuer, true).await;
    assert!(ev.discovery.is_ok() && ev.jwks.is_ok(), "{ev:?}");

    let gcp_aud = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/s";
    let token = jwt(&b, gcp_aud).await;
    let f = check_oidc(Cloud::Gcp, &ev, Some(&token), &Expectations { audience: Some(gcp_aud.into()), now: now() });
    assert_eq!(failures(&f), 0, "{f:?}");
    assert_eq!(level(&f, "token.signature"), Level::Pass);

    let token = jwt(&b, "api://AzureADTokenExchange").await;
    let f = check_oidc(Cloud::Azure, &ev, Some(&token), &Expectations { audience: None, now: now() });
    assert_eq!(failures(&f), 0, "{f:?}");

    let token = jwt(&b, "sts.amazonaws.com").await;
    let f = check_oidc(Cloud::Aws, &ev, Some(&token), &Expectations { audience: None, now: now() });
    let failed: Vec<&str> = f.iter().filter(|x| x.level == Level::Fail).map(|x| x.rule).collect();
    assert_eq!(failed, vec!["aws.issuer-no-port"]);
    b.stop().await;
}

#[tokio::test]
async fn token_checked_after_expiry_fails_the_exp_rule() {
    let b = Broker::start().await;
    let ca = std::fs::read_to_string(b.path("tls-ca.pem")).unwrap();
    let ev = gather_issuer(&HttpClient::new(Some(&ca)).unwrap(), &format!("https://{}", b.addr), true).await;
    let token = jwt(&b, "sts.amazonaws.com").await;
    // The clock is injected: ten minutes later the 5-minute token is expired.
    let f = check_oidc(Cloud::Aws, &ev, Some(&token), &Expectations { audience: None, now: now() + 600 });
    assert_eq!(level(&f, "token.exp"), Level::Fail);
    b.stop().await;
}

#[tokio::test]
async fn broker_x509_svid_signs_create_session_and_meets_trust_anchor_rules() {
    let b = Broker::start().await;
    let (kp, csr) = key_and_csr().unwrap();
    let s = b
        .admin()
        .await
        .issue_x509_svid(pb::IssueX509SvidRequest { csr, spiffe_id: "spiffe://example.org/ra".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let chain = CertificateChain::from_pem(&s.certificate_pem, None).unwrap();
    let cred = X509Credential::new(chain, SigningKey::from_pem(&kp.serialize_pem()).unwrap()).unwrap();
    let params = SessionParams {
        endpoint: None,
        region: "us-east-1".into(),
        trust_anchor_arn: "arn:aws:rolesanywhere:us-east-1:1:trust-anchor/t".into(),
        profile_arn: "arn:aws:rolesanywhere:us-east-1:1:profile/p".into(),
        role_arn: "arn:aws:iam::1:role/r".into(),
        duration_seconds: 3600,
        role_session_name: None,
    };
    let (target, signed) = sign_create_session(&cred, &params, &params.body(), "20240102T030405Z").unwrap();
    assert_eq!(target.authority, "rolesanywhere.us-east-1.amazonaws.com");
    assert!(signed.string_to_sign.starts_with("AWS4-X509-ECDSA-SHA256\n"));

    let leaf = sigil_core::pem::certificate_ders(&s.certificate_pem, "svid").unwrap();
    let bundle = sigil_core::pem::certificate_ders(&s.bundle_pem, "bundle").unwrap();
    let f = check_roles_anywhere(&leaf[0], &bundle, now());
    assert_eq!(failures(&f), 0, "{f:?}");
    // Three CAs in one trust anchor is one too many.
    let mut three = bundle.clone();
    three.push(bundle[0].clone());
    three.push(bundle[0].clone());
    assert_eq!(level(&check_roles_anywhere(&leaf[0], &three, now()), "ra.trust-anchor-size"), Level::Fail);
    b.stop().await;
}
