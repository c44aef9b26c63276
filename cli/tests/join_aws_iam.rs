#![allow(clippy::unwrap_used)]
//! AWS IAM join (`iam`) against moto's STS (a third-party AWS implementation,
//! `moto[server]`), started on loopback with request signing enforced: moto
//! recomputes every SigV4 signature with botocore, so a join only works when our
//! signer and the broker's rebuilt request are both right. boto3 creates the IAM
//! user and role and independently reads the caller identity we compare with.

mod common;

use common::{assert_refused, last_join_denial, now, Broker};
use sigil_core::csr::key_and_csr;
use sigil_agent::join::client::aws_iam::{self, AwsCredentials, StsTarget};
use sigil_agent::join::client::JoinParams;
use sigil_core::join_wire::sts;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tonic::transport::Channel;

const ACCOUNT: &str = "123456789012";

fn venv_bin(name: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (installs moto[server] and boto3 from acceptance-tests/requirements.txt into .venv)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// moto's server on loopback; killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    /// Starts moto with authentication on after `setup_calls` unauthenticated requests.
    fn start(setup_calls: u32) -> Self {
        let port = free_port();
        let child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", setup_calls.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server (pip install 'moto[server]')");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto_server did not listen on {port}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Moto { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What boto3 created in moto and what it reads back as the caller.
#[derive(serde::Deserialize)]
struct AwsFixture {
    user_key: String,
    user_secret: String,
    user_arn: String,
    user_id: String,
    role_key: String,
    role_secret: String,
    role_token: String,
    role_caller_arn: String,
}

/// Uses boto3 (4 unauthenticated setup calls, then signed calls) to create user
/// `ci-runner` with a key and role `deployer`, assume the role, and read both
/// caller identities through boto3's own signer.
fn aws_fixture(moto: &Moto) -> AwsFixture {
    let script = r#"
import boto3, json, sys
url = sys.argv[1]
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIASETUP0000000000", aws_secret_access_key="setup")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="ci-runner")
k = iam.create_access_key(UserName="ci-runner")["AccessKey"]
iam.put_user_policy(UserName="ci-runner", PolicyName="all", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/ci-runner"}, "Action": "sts:AssumeRole"}]}
iam.create_role(RoleName="deployer", AssumeRolePolicyDocument=json.dumps(trust))
ukw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"])
sts = boto3.client("sts", **ukw)
me = sts.get_caller_identity()
c = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/deployer", RoleSessionName="deploy-1")["Credentials"]
rsts = boto3.client("sts", endpoint_url=url, region_name="us-east-1", aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
them = rsts.get_caller_identity()
print(json.dumps(dict(user_key=k["AccessKeyId"], user_secret=k["SecretAccessKey"], user_arn=me["Arn"], user_id=me["UserId"],
    role_key=c["AccessKeyId"], role_secret=c["SecretAccessKey"], role_token=c["SessionToken"], role_caller_arn=them["Arn"])))
"#;
    let out = Command::new(venv_bin("python")).args(["-c", script, &moto.url]).output().unwrap();
    assert!(out.status.success(), "boto3 setup failed (pip install boto3): {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Role `aws` may get `/aws/<account>/<user id>` (join claims in a template); bot `ci` has it.
async fn setup_bot(admin: &mut SigilClient<Channel>) {
    admin
        .create_role(pb::Role {
            name: "aws".into(),
            allow: Some(pb::RoleAllow { spiffe_ids: vec!["/aws/{{join.aws_account}}/{{join.aws_user_id}}".into()], audiences: vec!["x".into()], ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.create_bot(pb::Bot { name: "ci".into(), roles: vec!["aws".into()], ..Default::default() }).await.unwrap();
}

/// moto with an IAM user and role, a dev broker with the `aws` role and bot, and a
/// join token `token` for method `iam` with one allow rule pointing at moto's STS.
async fn world(token: &str, rule: &[(&str, &str)]) -> (Moto, AwsFixture, Broker) {
    let moto = Moto::start(4);
    let fx = aws_fixture(&moto);
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup_bot(&mut admin).await;
    create_token(&mut admin, token, rule, &moto.url).await;
    (moto, fx, b)
}

async fn create_token(admin: &mut SigilClient<Channel>, name: &str, rule: &[(&str, &str)], sts_endpoints: &str) {
    let rule = pb::AllowRule { claims: rule.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    admin
        .create_join_token(pb::JoinToken {
            name: name.into(),
            bot: "ci".into(),
            method: "iam".into(),
            expires_at: now() + 600,
            max_uses: 100,
            allow: vec![rule],
            config: [("sts_endpoints".to_string(), sts_endpoints.to_string())].into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn params(token: &str) -> (JoinParams, rcgen::KeyPair) {
    let (kp, csr) = key_and_csr().unwrap();
    (JoinParams { token_name: token.into(), csr, ttl_seconds: 0 }, kp)
}

fn target(moto: &Moto) -> StsTarget {
    StsTarget { url: format!("{}/", moto.url), region: "us-east-1".into() }
}

/// A listener that counts the connections it accepts and remembers their peers.
struct Tripwire {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    peers: tokio::sync::mpsc::UnboundedReceiver<std::net::SocketAddr>,
}

async fn tripwire() -> Tripwire {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, peers) = tokio::sync::mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((_s, peer)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(peer);
        }
    });
    Tripwire { addr, accepted, peers }
}

impl Tripwire {
    /// Connects once ourselves and waits until that connection is accepted:
    /// connections queue in order, so any earlier one has been counted by then.
    async fn connections_before_probe(mut self) -> usize {
        let probe = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mine = probe.local_addr().unwrap();
        while let Some(peer) = self.peers.recv().await {
            if peer == mine {
                break;
            }
        }
        self.accepted.load(Ordering::SeqCst) - 1
    }
}

async fn join_err(b: &Broker, token: &str, payload: Vec<u8>, challenge_id: String) -> tonic::Status {
    let (p, _kp) = params(token);
    b.anonymous()
        .await
        .join(pb::JoinRequest { method: "iam".into(), token_name: token.into(), csr: p.csr, payload, challenge_id, ..Default::default() })
        .await
        .unwrap_err()
}

async fn challenge(b: &Broker, token: &str) -> (String, String) {
    let r = b.anonymous().await.begin_join(pb::BeginJoinRequest { method: "iam".into(), token_name: token.into(), payload: vec![] }).await.unwrap().into_inner();
    (r.challenge_id, String::from_utf8(r.payload).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_iam_user_joins_through_moto_sts_and_its_claims_reach_templates() {
    let (moto, fx, b) = world("aws", &[("aws_account", ACCOUNT), ("aws_arn", "arn:aws:iam::123456789012:user/ci-*")]).await;

    let (p, kp) = params("aws");
    let creds = AwsCredentials::new(fx.user_key.clone(), fx.user_secret.clone(), None);
    let id = aws_iam::join(&mut b.anonymous().await, &b.addr, &p, &creds, &target(&moto)).await.unwrap();
    assert_eq!(id.bot, "ci");

    // The bot may obtain exactly the SPIFFE ID built from the claims boto3 also sees.
    let identity = sigil_schemas::identity::Identity::new(id.certificate_pem, kp.serialize_pem(), id.ca_pem);
    let mut bot = sigil_schemas::client::connect_with_identity(&b.addr, &identity).await.unwrap();
    let want = format!("spiffe://example.org/aws/{ACCOUNT}/{}", fx.user_id);
    let svid = bot.issue_jwt_svid(pb::IssueJwtSvidRequest { spiffe_id: want.clone(), audiences: vec!["x".into()], ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(svid.spiffe_id, want);
    assert!(fx.user_arn.ends_with(":user/ci-runner"), "{}", fx.user_arn);
    let other = bot
        .issue_jwt_svid(pb::IssueJwtSvidRequest { spiffe_id: format!("spiffe://example.org/aws/999999999999/{}", fx.user_id), audiences: vec!["x".into()], ..Default::default() })
        .await;
    assert!(other.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_role_session_joins_by_role_arn() {
    let (moto, fx, b) = world("role", &[("aws_role_arn", "arn:aws:iam::123456789012:role/deployer")]).await;
    let (p, _kp) = params("role");
    let creds = AwsCredentials::new(fx.role_key.clone(), fx.role_secret.clone(), Some(fx.role_token.clone()));
    let id = aws_iam::join(&mut b.anonymous().await, &b.addr, &p, &creds, &target(&moto)).await.unwrap();
    assert_eq!(id.bot, "ci");
    assert!(fx.role_caller_arn.contains(":assumed-role/deployer/deploy-1"), "{}", fx.role_caller_arn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_outside_the_allow_rules_is_refused_naming_the_claim() {
    let (moto, fx, b) = world("aws", &[("aws_arn", "arn:aws:iam::123456789012:role/prod-*")]).await;
    let (p, _kp) = params("aws");
    let creds = AwsCredentials::new(fx.user_key, fx.user_secret, None);
    let err = aws_iam::join(&mut b.anonymous().await, &b.addr, &p, &creds, &target(&moto)).await.unwrap_err();
    assert!(err.to_string().contains(sigil_broker::join::REFUSED), "{err}");
    let msg = last_join_denial(&mut b.admin().await).await;
    assert!(msg.contains("aws_arn") && msg.contains("user/ci-runner"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_signed_with_a_wrong_secret_is_refused_by_sts() {
    let (moto, fx, b) = world("aws", &[("aws_account", ACCOUNT)]).await;
    let (p, _kp) = params("aws");
    let creds = AwsCredentials::new(fx.user_key, "not-the-secret".into(), None);
    let err = aws_iam::join(&mut b.anonymous().await, &b.addr, &p, &creds, &target(&moto)).await.unwrap_err();
    assert!(err.to_string().contains(sigil_broker::join::REFUSED), "{err}");
    let why = last_join_denial(&mut b.admin().await).await;
    assert!(why.contains("STS answered HTTP 403"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_aimed_at_a_non_allow_listed_host_is_refused_without_any_connection() {
    let (_moto, fx, b) = world("aws", &[("aws_account", ACCOUNT)]).await;
    let wire = tripwire().await;
    let creds = AwsCredentials::new(fx.user_key, fx.user_secret, None);
    for url in [format!("http://{}/", wire.addr), "https://sts.amazonaws.com.attacker.test/".into()] {
        let (id, ch) = challenge(&b, "aws").await;
        let payload = aws_iam::signed_request(&creds, &StsTarget { url, region: "us-east-1".into() }, &ch, "127.0.0.1", now()).unwrap();
        let err = join_err(&b, "aws", payload, id).await;
        assert_refused(&err);
        let why = last_join_denial(&mut b.admin().await).await;
        assert!(why.contains("is not allowed"), "{why}");
    }
    assert_eq!(wire.connections_before_probe().await, 0, "the broker connected to a non-allow-listed host");
}

/// Vault CVE-2020-16250/16251: a request whose `Host` header or action points
/// at another AWS API (whose response reflects attacker text) must never be sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_cve_2020_16250_host_header_and_action_swaps_are_refused_before_sending() {
    let (moto, fx, b) = world("aws", &[("aws_account", ACCOUNT)]).await;
    let other_service = tripwire().await;
    let creds = AwsCredentials::new(fx.user_key, fx.user_secret, None);
    let host = other_service.addr.to_string();
    type Swap = Box<dyn Fn(&mut serde_json::Value)>;
    let swaps: Vec<(&str, Swap)> = vec![
        ("Host header", Box::new(move |v| set_header(v, "host", &host))),
        ("GetCallerIdentity only", Box::new(|v| v["body"] = "Action=GetCallerIdentity&Version=2011-06-15&Action=ListQueues".into())),
        ("GetCallerIdentity only", Box::new(|v| v["body"] = "Action=ListQueues&Version=2012-11-05".into())),
        ("no query", Box::new(|v| v["url"] = (v["url"].as_str().unwrap().to_string() + "?Action=ListQueues").into())),
        ("must be POST", Box::new(|v| v["method"] = "GET".into())),
        ("not allowed", Box::new(|v| v["headers"].as_array_mut().unwrap().push(serde_json::json!(["x-amz-target", "AmazonSQS.ListQueues"])))),
    ];
    for (why, swap) in swaps {
        let (id, ch) = challenge(&b, "aws").await;
        let mut v: serde_json::Value = serde_json::from_slice(&aws_iam::signed_request(&creds, &target(&moto), &ch, "127.0.0.1", now()).unwrap()).unwrap();
        swap(&mut v);
        let err = join_err(&b, "aws", serde_json::to_vec(&v).unwrap(), id).await;
        assert_refused(&err);
        let audited = last_join_denial(&mut b.admin().await).await;
        assert!(audited.contains(why), "{why}: {audited}");
    }
    assert_eq!(other_service.connections_before_probe().await, 0);
}

fn set_header(v: &mut serde_json::Value, name: &str, value: &str) {
    for h in v["headers"].as_array_mut().unwrap() {
        if h[0] == name {
            h[1] = value.into();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_or_cross_challenge_signed_requests_are_refused() {
    let (moto, fx, b) = world("aws", &[("aws_account", ACCOUNT)]).await;
    let creds = AwsCredentials::new(fx.user_key, fx.user_secret, None);

    let (id, ch) = challenge(&b, "aws").await;
    let payload = aws_iam::signed_request(&creds, &target(&moto), &ch, "127.0.0.1", now()).unwrap();
    let (p, _kp) = params("aws");
    let ok = b
        .anonymous()
        .await
        .join(pb::JoinRequest { method: "iam".into(), token_name: "aws".into(), csr: p.csr, payload: payload.clone(), challenge_id: id.clone(), ..Default::default() })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    // The same signed request again: its challenge is spent.
    let err = join_err(&b, "aws", payload.clone(), id).await;
    assert_refused(&err);
    let why = last_join_denial(&mut b.admin().await).await;
    assert!(why.contains("challenge"), "{why}");
    // Answering a fresh challenge with the old signed request: wrong challenge header.
    let (id2, _) = challenge(&b, "aws").await;
    let err = join_err(&b, "aws", payload, id2).await;
    assert_refused(&err);
    let why = last_join_denial(&mut b.admin().await).await;
    assert!(why.contains("x-sigil-challenge"), "{why}");
}

/// Issue 11.19: a broker the workload joins (here dialed as 127.0.0.2) relays
/// the target broker's challenge; the workload signs it for the broker it
/// dialed; the relay replays the signed request at the target. The target
/// refuses: the signed `x-sigil-server-name` is not one of its names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_iam_request_relayed_by_another_broker_is_refused() {
    let (moto, fx, b) = world("aws", &[("aws_account", ACCOUNT)]).await;
    let creds = AwsCredentials::new(fx.user_key, fx.user_secret, None);
    let (id, ch) = challenge(&b, "aws").await;
    let relayed = aws_iam::signed_request(&creds, &target(&moto), &ch, "127.0.0.2", now()).unwrap();
    let err = join_err(&b, "aws", relayed, id).await;
    assert_refused(&err);
    let why = last_join_denial(&mut b.admin().await).await;
    assert!(why.contains("x-sigil-server-name"), "{why}");
    // The same workload signing for the broker it really dialed joins.
    let (id, ch) = challenge(&b, "aws").await;
    let mine = aws_iam::signed_request(&creds, &target(&moto), &ch, &sts::server_name(&b.addr).unwrap(), now()).unwrap();
    let (p, _kp) = params("aws");
    let ok = b.anonymous().await.join(pb::JoinRequest { method: "iam".into(), token_name: "aws".into(), csr: p.csr, payload: mine, challenge_id: id, ..Default::default() }).await;
    assert!(ok.is_ok(), "{ok:?}");
}
