#![allow(clippy::unwrap_used)]
//! X.509 revocation against the real broker, in process: `RevokeSvids` by
//! serial and by bot instance, the CRLs served over HTTPS on the public
//! listener, the CRL distribution point of SVIDs, and revoked bot identities
//! refused at authentication. openssl and nginx checks against the served
//! CRL: acceptance-tests/broker/test_revocation.py.

mod common;

use common::{https_get, now, Broker};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;
use tonic::Code;
use x509_parser::prelude::*;

type Client = SigilClient<Channel>;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Role and bot `name` allowed `/w/**` plus `rules`, and a token for `uses` joins.
async fn bot(admin: &mut Client, name: &str, rules: Vec<pb::Rule>, uses: i64) -> String {
    let allow = pb::RoleAllow { spiffe_ids: strings(&["/w/**"]), rules, ..Default::default() };
    admin.create_role(pb::Role { name: name.into(), allow: Some(allow), ..Default::default() }).await.unwrap();
    admin.create_bot(pb::Bot { name: name.into(), roles: strings(&[name]), ..Default::default() }).await.unwrap();
    let t = pb::JoinToken { name: format!("{name}-t"), bot: name.into(), expires_at: now() + 600, max_uses: uses, ..Default::default() };
    admin.create_join_token(t).await.unwrap().into_inner().secret
}

/// Issues an X.509-SVID for `/w/<path>`: (leaf DER, serial hex).
async fn svid(c: &mut Client, path: &str) -> (Vec<u8>, String) {
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let r = c
        .issue_x509_svid(pb::IssueX509SvidRequest { csr, spiffe_id: format!("spiffe://example.org/w/{path}"), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let der = sigil_core::pem::certificate_ders(&r.certificate_pem, "test").unwrap().remove(0);
    let serial = hex::encode(parse_x509_certificate(&der).unwrap().1.raw_serial());
    (der, serial)
}

/// The CRL index: (purpose, key id, url) per served CRL.
async fn crl_index(b: &Broker) -> Vec<(String, String, String)> {
    let (status, _, body) = https_get(b, "/crl/index.json").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["crls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["purpose"].as_str().unwrap().into(), c["key_id"].as_str().unwrap().into(), c["url"].as_str().unwrap().into()))
        .collect()
}

async fn key_id(b: &Broker, purpose: &str) -> String {
    crl_index(b).await.into_iter().find(|(p, _, _)| p == purpose).unwrap().1
}

/// The serials on the CRL of `key`, after checking it is a v2 CRL signed by
/// `issuer_der` with a CRL number, an AKI matching the issuer's SKI and a
/// nextUpdate `validity` after thisUpdate (give or take the backdate).
async fn crl_serials(b: &Broker, key: &str, issuer_der: &[u8]) -> Vec<String> {
    let (status, ctype, der) = https_get(b, &format!("/crl/{key}.crl")).await;
    assert_eq!((status, ctype.as_str()), (200, "application/pkix-crl"));
    let (rest, crl) = CertificateRevocationList::from_der(&der).unwrap();
    assert!(rest.is_empty());
    let (_, issuer) = parse_x509_certificate(issuer_der).unwrap();
    crl.verify_signature(issuer.public_key()).expect("signed by the CA key");
    assert_eq!(crl.version(), Some(X509Version::V2));
    assert_eq!(crl.issuer(), issuer.subject());
    assert!(crl.crl_number().is_some(), "CRL number");
    let next = crl.next_update().unwrap().timestamp();
    assert!(next > now() + 1800 && next <= now() + 3600 + 5, "nextUpdate {next}");
    let ski = issuer.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    });
    let aki = crl.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    });
    assert_eq!(aki, ski, "the CRL's AKI names the CA's key");
    crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect()
}

fn bundle_der(b: &Broker) -> Vec<u8> {
    sigil_core::pem::certificate_ders(&std::fs::read_to_string(b.path("bundle.pem")).unwrap(), "test").unwrap().remove(0)
}

fn internal_ca_der(b: &Broker) -> Vec<u8> {
    sigil_core::pem::certificate_ders(&std::fs::read_to_string(b.path("tls-ca.pem")).unwrap(), "test").unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_svid_is_on_its_ca_keys_crl_and_another_is_not() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "web", vec![], 1).await;
    let mut web = b.join_as(&secret).await.unwrap();
    let (_, one) = svid(&mut web, "one").await;
    let (_, two) = svid(&mut web, "two").await;
    let key = key_id(&b, "x509-svid").await;
    assert!(crl_serials(&b, &key, &bundle_der(&b)).await.is_empty(), "nothing revoked yet");
    // As openssl prints it: upper case, colons.
    let pasted = one.to_uppercase().as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":");
    let r = admin
        .revoke_svids(pb::RevokeSvidsRequest { serials: vec![pasted], reason: "keyCompromise".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.serials, vec![one.clone()]);
    let listed = crl_serials(&b, &key, &bundle_der(&b)).await;
    assert_eq!(listed, vec![one.clone()], "the revoked serial only");
    assert!(!listed.contains(&two));
    // Revoking again is no error and names it again.
    let again = admin.revoke_svids(pb::RevokeSvidsRequest { serials: vec![one.clone()], ..Default::default() }).await.unwrap();
    assert_eq!(again.into_inner().serials, vec![one.clone()]);
    // Served from the cache: the same signed CRL (same number) until something changes.
    let first = https_get(&b, &format!("/crl/{key}.crl")).await.2;
    let (_, other) = svid(&mut web, "three").await;
    assert_ne!(other, one);
    assert_eq!(https_get(&b, &format!("/crl/{key}.crl")).await.2, first, "not re-signed for an unrelated change");
    // The PEM variant is the same CRL.
    let (status, _, pem) = https_get(&b, &format!("/crl/{key}.pem")).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8(pem).unwrap().starts_with("-----BEGIN X509 CRL-----"));
    // Other paths are 404, never an error page with internals.
    for p in ["/crl/nope.crl", "/crl/..%2f..%2fetc.crl", &format!("/crl/{}.crl", "a".repeat(500)), "/crl/x.der"] {
        assert_eq!(https_get(&b, p).await.0, 404, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_unknown_or_malformed_serial_is_refused_with_a_clear_error() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let e = admin.revoke_svids(pb::RevokeSvidsRequest { serials: strings(&["0123abcd"]), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("0123abcd") && e.message().contains("issued by this broker"), "{}", e.message());
    let e = admin.revoke_svids(pb::RevokeSvidsRequest { serials: strings(&["zz"]), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = admin.revoke_svids(pb::RevokeSvidsRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = admin.revoke_svids(pb::RevokeSvidsRequest { serials: vec!["01".into(); 1001], ..Default::default() }).await.unwrap_err();
    assert!(e.message().contains("at most 1000"), "{}", e.message());
    let e = admin.revoke_svids(pb::RevokeSvidsRequest { serials: strings(&["01"]), reason: "certificateHold".into(), ..Default::default() }).await.unwrap_err();
    assert!(e.message().contains("reason"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_without_the_revocation_verb_cannot_revoke() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "web", vec![], 1).await;
    let mut web = b.join_as(&secret).await.unwrap();
    let (_, serial) = svid(&mut web, "a").await;
    let e = web.revoke_svids(pb::RevokeSvidsRequest { serials: vec![serial.clone()], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let key = key_id(&b, "x509-svid").await;
    assert!(crl_serials(&b, &key, &bundle_der(&b)).await.is_empty());
    // With the verb it can.
    let rule = pb::Rule { resources: strings(&["revocation"]), verbs: strings(&["create"]), names: vec![] };
    let secret = bot(&mut admin, "ops", vec![rule], 1).await;
    let mut ops = b.join_as(&secret).await.unwrap();
    ops.revoke_svids(pb::RevokeSvidsRequest { serials: vec![serial.clone()], ..Default::default() }).await.unwrap();
    assert_eq!(crl_serials(&b, &key, &bundle_der(&b)).await, vec![serial]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_bot_identity_is_refused_and_revoking_an_instance_covers_its_svids_and_identity() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "web", vec![], 2).await;
    let mut web = b.join_as(&secret).await.unwrap();
    let mut other = b.join_as(&secret).await.unwrap();
    let (_, s1) = svid(&mut web, "one").await;
    let (_, s2) = svid(&mut web, "two").await;
    let (_, s3) = svid(&mut other, "three").await;
    web.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let instances = admin
        .list_bot_instances(pb::ListBotInstancesRequest { bot: "web".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .items;
    // The instance of `web`: the one whose audit events carry s1.
    let audit = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    let ev = audit.iter().find(|e| e.kind == "svid.x509" && e.detail_json.contains(&s1)).unwrap();
    let detail: serde_json::Value = serde_json::from_str(&ev.detail_json).unwrap();
    let instance = detail["instance"].as_str().unwrap().to_string();
    assert!(instances.iter().any(|i| i.id == instance));
    let r = admin
        .revoke_svids(pb::RevokeSvidsRequest { bot_instance: instance.clone(), reason: "keyCompromise".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.serials.len(), 3, "two SVIDs and the bot identity: {:?}", r.serials);
    assert!(r.serials.contains(&s1) && r.serials.contains(&s2) && !r.serials.contains(&s3));
    let x509 = crl_serials(&b, &key_id(&b, "x509-svid").await, &bundle_der(&b)).await;
    assert_eq!(x509.len(), 2);
    let identity_serials = crl_serials(&b, &key_id(&b, "internal").await, &internal_ca_der(&b)).await;
    assert_eq!(identity_serials.len(), 1, "the instance's bot identity");
    // The revoked identity is refused at once; the other instance is not.
    let e = web.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("revoked"), "{}", e.message());
    let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
    let e = web.renew_identity(pb::RenewIdentityRequest { csr, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "a revoked identity cannot renew itself: {e:?}");
    other.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let e = admin.revoke_svids(pb::RevokeSvidsRequest { bot_instance: "no-such-instance".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_name_their_crl_only_when_distribution_points_are_enabled() {
    let cdp = |der: &[u8]| -> Vec<String> {
        let (_, c) = parse_x509_certificate(der).unwrap();
        c.extensions()
            .iter()
            .filter_map(|e| match e.parsed_extension() {
                ParsedExtension::CRLDistributionPoints(p) => Some(p),
                _ => None,
            })
            .flat_map(|p| p.points.iter())
            .filter_map(|p| match &p.distribution_point {
                Some(DistributionPointName::FullName(names)) => Some(names.clone()),
                _ => None,
            })
            .flatten()
            .filter_map(|g| match g {
                GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect()
    };
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "web", vec![], 1).await;
    let (der, _) = svid(&mut b.join_as(&secret).await.unwrap(), "a").await;
    assert!(cdp(&der).is_empty(), "off by default");
    let b = Broker::start_configured(tempfile::tempdir().unwrap(), |c| c.revocation.crl_distribution_points = true).await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "web", vec![], 1).await;
    let (der, _) = svid(&mut b.join_as(&secret).await.unwrap(), "a").await;
    let key = key_id(&b, "x509-svid").await;
    assert_eq!(cdp(&der), vec![format!("https://{}/crl/{key}.crl", b.addr)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_replica_is_on_the_other_replicas_crl_and_refused_there() {
    let (a, b, _) = common::replicas_on_postgres(|_| {}).await;
    let mut admin_a = a.admin().await;
    let secret = bot(&mut admin_a, "web", vec![], 2).await;
    let mut web = a.join_as(&secret).await.unwrap();
    let (_, s1) = svid(&mut web, "one").await;
    let key = key_id(&b, "x509-svid").await;
    assert_eq!(key, key_id(&a, "x509-svid").await, "one CA for both replicas");
    // B serves an empty CRL first (cached), then learns of A's revocation.
    assert!(crl_serials(&b, &key, &bundle_der(&b)).await.is_empty());
    // The bot's identity, used through B, is cached there as a caller.
    let mut web_b = {
        let (kp, csr) = sigil_core::csr::key_and_csr().unwrap();
        let r = b
            .anonymous()
            .await
            .join(pb::JoinRequest { method: "token".into(), token: secret.clone(), csr, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let id = sigil_schemas::identity::Identity::new(r.certificate_pem.clone(), kp.serialize_pem(), r.ca_pem);
        let der = sigil_core::pem::certificate_ders(&r.certificate_pem, "test").unwrap().remove(0);
        let serial = hex::encode(parse_x509_certificate(&der).unwrap().1.raw_serial());
        (sigil_schemas::client::connect_with_identity(&b.addr, &id).await.unwrap(), serial)
    };
    web_b.0.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let start = std::time::Instant::now();
    admin_a.revoke_svids(pb::RevokeSvidsRequest { serials: vec![s1.clone(), web_b.1.clone()], ..Default::default() }).await.unwrap();
    // Documented bound: one change poll (500 ms) plus a request.
    loop {
        if crl_serials(&b, &key, &bundle_der(&b)).await == vec![s1.clone()] {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "B's CRL still lacks the revocation");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    loop {
        match web_b.0.who_am_i(pb::WhoAmIRequest {}).await {
            Err(e) if e.code() == Code::Unauthenticated => break,
            _ => assert!(start.elapsed() < std::time::Duration::from_secs(2), "B still accepts the revoked identity"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!("revocation seen by the other replica after {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_of_the_previous_ca_key_is_revoked_onto_that_keys_crl_after_a_rotation() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "web", vec![], 1).await;
    let mut web = b.join_as(&secret).await.unwrap();
    let (_, old_serial) = svid(&mut web, "old").await;
    let old_key = key_id(&b, "x509-svid").await;
    let old_ca = bundle_der(&b);
    for phase in ["prepare", "activate"] {
        let r = pb::RotateCaRequest { purpose: "x509-svid".into(), phase: phase.into(), force: false };
        admin.rotate_ca(r).await.unwrap();
    }
    // The previous key (still published) keeps its CRL; the new active key has its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let x509_keys = loop {
        let keys: Vec<String> = crl_index(&b).await.into_iter().filter(|(p, _, _)| p == "x509-svid").map(|(_, k, _)| k).collect();
        if keys.len() == 2 || std::time::Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(x509_keys.len(), 2, "previous and active: {x509_keys:?}");
    assert!(x509_keys.contains(&old_key));
    let (_, new_serial) = svid(&mut web, "new").await;
    let r = admin.revoke_svids(pb::RevokeSvidsRequest { serials: vec![old_serial.clone(), new_serial.clone()], ..Default::default() }).await.unwrap();
    assert_eq!(r.into_inner().serials.len(), 2);
    assert_eq!(crl_serials(&b, &old_key, &old_ca).await, vec![old_serial], "the old SVID on its own key's CRL");
    let new_key = x509_keys.iter().find(|k| **k != old_key).unwrap();
    let tb = admin.get_trust_bundle(pb::GetTrustBundleRequest::default()).await.unwrap().into_inner();
    let bundle = sigil_core::pem::certificate_ders(&tb.x509_authorities_pem, "test").unwrap();
    let new_ca = bundle.iter().find(|d| **d != old_ca).expect("the new CA in the bundle").clone();
    assert_eq!(crl_serials(&b, new_key, &new_ca).await, vec![new_serial]);
}
