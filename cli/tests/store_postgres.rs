//! The broker on PostgreSQL (`store: postgres://...`), end to end: a real
//! PostgreSQL 15 on loopback (sigil_broker::store::pg_harness), the real
//! broker in process, real gRPC clients.
#![allow(clippy::unwrap_used)]

mod common;

use common::{now, Broker};
use sigil_broker::config::{PostgresUrlOrName, StoreSetting};
use sigil_broker::store::pg_harness;
use sigil_core::csr::key_and_csr;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

async fn on_postgres(url: &str, dir: tempfile::TempDir) -> Broker {
    Broker::start_on(dir, StoreSetting::Url(PostgresUrlOrName(url.to_string()))).await
}

async fn setup_ci_bot(admin: &mut SigilClient<Channel>, max_uses: i64) -> String {
    admin
        .create_role(pb::Role {
            name: "ci".into(),
            allow: Some(pb::RoleAllow { spiffe_ids: vec!["/ci/{{bot.name}}/**".into()], ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.create_bot(pb::Bot { name: "ci".into(), roles: vec!["ci".into()], ..Default::default() }).await.unwrap();
    admin
        .create_join_token(pb::JoinToken { name: "t1".into(), bot: "ci".into(), expires_at: now() + 600, max_uses, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_postgres_joins_issues_and_keeps_everything_across_a_restart() {
    let url = pg_harness::shared().fresh_database().await;
    let b = on_postgres(&url, tempfile::tempdir().unwrap()).await;
    assert!(!b.path("sigil.db").exists(), "no SQLite database when the store is PostgreSQL");
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 3).await;
    let mut bot = b.join_as(&secret).await.unwrap();
    let (_, csr) = key_and_csr().unwrap();
    let svid = bot
        .issue_x509_svid(pb::IssueX509SvidRequest { csr, spiffe_id: "spiffe://example.org/ci/ci/deploy".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!svid.certificate_pem.is_empty());
    let bundle1 = admin.get_trust_bundle(pb::GetTrustBundleRequest {}).await.unwrap().into_inner();
    let audit1 = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    assert!(audit1.iter().any(|e| e.kind == "svid.x509" && e.outcome == "ok"), "{audit1:?}");
    drop((admin, bot));
    let dir = b.stop().await;

    let b2 = on_postgres(&url, dir).await;
    let mut admin = b2.admin().await;
    let bundle2 = admin.get_trust_bundle(pb::GetTrustBundleRequest {}).await.unwrap().into_inner();
    assert_eq!(bundle1.x509_authorities_pem, bundle2.x509_authorities_pem, "the CA keys came back from PostgreSQL");
    assert_eq!(bundle1.jwks_json, bundle2.jwks_json);
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "t1".into() }).await.unwrap().into_inner().uses, 1);
    let audit2 = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    assert_eq!(&audit2[..audit1.len()], &audit1[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_token_redeemed_by_50_concurrent_joins_on_postgres_succeeds_once() {
    let url = pg_harness::shared().fresh_database().await;
    let b = std::sync::Arc::new(on_postgres(&url, tempfile::tempdir().unwrap()).await);
    let mut admin = b.admin().await;
    let secret = setup_ci_bot(&mut admin, 1).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (b, s) = (b.clone(), secret.clone());
            tokio::spawn(async move { b.join_as(&s).await.map(|_| ()) })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "t1".into() }).await.unwrap().into_inner().uses, 1);
}
