#![allow(clippy::unwrap_used)]
//! Bot instances against the real broker, in process, over mTLS: every join
//! makes an instance, an agent's heartbeat lands on its own instance only, is
//! bounded and rate limited, and reading instances needs the `bot_instance`
//! verbs. Expiry with the real agent: acceptance-tests/agent/test_bot_instances.py.

mod common;

use common::{now, Broker};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;
use tonic::Code;

type Client = SigilClient<Channel>;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Creates role and bot `name` (the role holding `rules`) and a token for `uses` joins.
async fn bot(admin: &mut Client, name: &str, rules: Vec<pb::Rule>, uses: i64) -> String {
    let allow = pb::RoleAllow { rules, ..Default::default() };
    admin.create_role(pb::Role { name: name.into(), allow: Some(allow), ..Default::default() }).await.unwrap();
    admin.create_bot(pb::Bot { name: name.into(), roles: strings(&[name]), ..Default::default() }).await.unwrap();
    let t = pb::JoinToken { name: format!("{name}-t"), bot: name.into(), expires_at: now() + 600, max_uses: uses, ..Default::default() };
    admin.create_join_token(t).await.unwrap().into_inner().secret
}

fn hb(host: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        host_name: host.into(),
        os: "linux/x86_64".into(),
        agent_version: "9.9.9".into(),
        outputs: strings(&["x509-svid:/run/svid"]),
        last_renewal: now(),
    }
}

async fn instances(c: &mut Client, bot: &str) -> Result<Vec<pb::BotInstance>, tonic::Status> {
    c.list_bot_instances(pb::ListBotInstancesRequest { bot: bot.into(), ..Default::default() }).await.map(|r| r.into_inner().items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_join_of_a_bot_makes_an_instance_with_its_join_method_and_attributes() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "web", vec![], 2).await;
    let _one = b.join_as(&secret).await.unwrap();
    let _two = b.join_as(&secret).await.unwrap();
    let items = instances(&mut admin, "web").await.unwrap();
    assert_eq!(items.len(), 2, "two joins, two instances: {items:?}");
    assert_ne!(items[0].id, items[1].id);
    for i in &items {
        assert_eq!(i.bot, "web");
        assert_eq!(i.join_attributes.get("join.method").map(String::as_str), Some("token"), "{i:?}");
        assert_eq!(i.generation, 1);
        assert!(i.first_seen > 0 && i.last_seen >= i.first_seen && i.expires_at > i.last_seen);
        assert!(i.heartbeat.is_none());
    }
    let got = admin.get_bot_instance(pb::GetBotInstanceRequest { id: items[0].id.clone() }).await.unwrap().into_inner();
    assert_eq!(got, items[0]);
    let missing = admin.get_bot_instance(pb::GetBotInstanceRequest { id: "nope".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_cannot_heartbeat_for_another_bots_instance() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let a_secret = bot(&mut admin, "a", vec![], 1).await;
    let m_secret = bot(&mut admin, "mallory", vec![], 1).await;
    let _a = b.join_as(&a_secret).await.unwrap();
    let mut mallory = b.join_as(&m_secret).await.unwrap();
    // The request names no instance: the broker takes it from the caller's
    // certificate, so Mallory's report can only land on Mallory's instance.
    mallory.heartbeat(hb("evil-host")).await.unwrap();
    let a = &instances(&mut admin, "a").await.unwrap()[0];
    assert!(a.heartbeat.is_none(), "bot a's instance must be untouched: {a:?}");
    let m = &instances(&mut admin, "mallory").await.unwrap()[0];
    assert_eq!(m.heartbeat.as_ref().unwrap().host_name, "evil-host");
    // Without a bot identity there is no heartbeat at all.
    let anon = b.anonymous().await.heartbeat(hb("x")).await.unwrap_err();
    assert_eq!(anon.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_heartbeat_fields_are_refused_and_nothing_is_stored() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "w", vec![], 1).await;
    let mut w = b.join_as(&secret).await.unwrap();
    let cases = [
        pb::HeartbeatRequest { host_name: "h".repeat(254), ..hb("x") },
        pb::HeartbeatRequest { os: "o".repeat(129), ..hb("x") },
        pb::HeartbeatRequest { agent_version: "v".repeat(65), ..hb("x") },
        pb::HeartbeatRequest { outputs: vec!["o".into(); 65], ..hb("x") },
        pb::HeartbeatRequest { outputs: vec!["o".repeat(513)], ..hb("x") },
        pb::HeartbeatRequest { host_name: "ok\n\u{1b}[31mforged log line".into(), ..hb("x") },
    ];
    for c in cases {
        let e = w.heartbeat(c).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    }
    // Beyond the decoder's request limit (64 KiB): refused before any parsing.
    let huge = pb::HeartbeatRequest { outputs: vec!["o".repeat(1000); 100], ..hb("x") };
    assert!(w.heartbeat(huge).await.is_err());
    assert!(instances(&mut admin, "w").await.unwrap()[0].heartbeat.is_none());
    // At the bounds: accepted.
    let max = pb::HeartbeatRequest { host_name: "h".repeat(253), outputs: vec!["o".repeat(512); 64], ..hb("x") };
    w.heartbeat(max).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_flood_from_one_instance_is_rate_limited() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let secret = bot(&mut admin, "w", vec![], 2).await;
    let mut one = b.join_as(&secret).await.unwrap();
    let mut two = b.join_as(&secret).await.unwrap();
    one.heartbeat(hb("first")).await.unwrap();
    for _ in 0..20 {
        let e = one.heartbeat(hb("flood")).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    }
    // The limit is per instance: another instance of the same bot reports.
    two.heartbeat(hb("second")).await.unwrap();
    let mut hosts: Vec<String> = instances(&mut admin, "w").await.unwrap().into_iter().map(|i| i.heartbeat.unwrap().host_name).collect();
    hosts.sort();
    assert_eq!(hosts, ["first", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_bot_instances_without_the_bot_instance_verbs_is_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let plain_secret = bot(&mut admin, "plain", vec![], 1).await;
    let rule = pb::Rule { resources: strings(&["bot_instance"]), verbs: strings(&["list", "read"]), names: strings(&["web-*"]) };
    let scoped_secret = bot(&mut admin, "scoped", vec![rule], 1).await;
    let web_secret = bot(&mut admin, "web-1", vec![], 1).await;
    let mut plain = b.join_as(&plain_secret).await.unwrap();
    let mut scoped = b.join_as(&scoped_secret).await.unwrap();
    let _web = b.join_as(&web_secret).await.unwrap();
    let web_id = instances(&mut admin, "web-1").await.unwrap()[0].id.clone();
    let plain_id = instances(&mut admin, "plain").await.unwrap()[0].id.clone();

    for r in [instances(&mut plain, "").await.map(|_| ()), instances(&mut plain, "plain").await.map(|_| ())] {
        assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    }
    let e = plain.get_bot_instance(pb::GetBotInstanceRequest { id: web_id.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Without any read grant, an unknown id is refused too (existence is not told).
    let e = plain.get_bot_instance(pb::GetBotInstanceRequest { id: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A name-scoped rule reads its bots' instances, nothing else.
    assert_eq!(instances(&mut scoped, "web-1").await.unwrap().len(), 1);
    assert_eq!(instances(&mut scoped, "").await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(instances(&mut scoped, "plain").await.unwrap_err().code(), Code::PermissionDenied);
    scoped.get_bot_instance(pb::GetBotInstanceRequest { id: web_id }).await.unwrap();
    let e = scoped.get_bot_instance(pb::GetBotInstanceRequest { id: plain_id }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let audit = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    assert!(audit.iter().any(|e| e.kind == "bot_instance.list" && e.outcome == "denied" && e.actor == "plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_batch_or_interval_out_of_bounds_stops_the_start() {
    // An unbounded batch would hold SQLite's one connection for seconds; a zero
    // interval would spin. Both are refused before the broker serves.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    for (batch, interval) in [(0, 300), (10_001, 300), (1000, 0), (1000, 86_401)] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = sigil_broker::config::ServerConfig::dev(dir.path().to_path_buf(), "127.0.0.1:0".into(), None, "example.org".into());
        cfg.bot_instances.sweep_batch = batch;
        cfg.bot_instances.sweep_interval_seconds = interval;
        let err = sigil_broker::bootstrap::prepare(&cfg, true).await.err().expect("refused").to_string();
        assert!(err.contains("sweep_batch 1..=10000"), "{batch}/{interval}: {err}");
    }
}
