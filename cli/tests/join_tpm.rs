#![allow(clippy::unwrap_used)]
// The TPM client links the system tpm2-tss: without the `tpm` feature (a
// machine without libtss2-dev, see scripts/dev.sh) there is nothing to test.
#![cfg(feature = "tpm")]
//! TPM join (`tpm`) against software TPMs: each test manufactures swtpm
//! instances with `swtpm_setup --create-ek-cert` (EK certificate signed by a
//! local CA made by `swtpm_localca`), runs them on loopback, and joins through
//! tpm2-tss (`tss-esapi`, swtpm TCTI). The TPM itself performs
//! `ActivateCredential` on the credential the broker made in software, and
//! OpenSSL independently computes the EK public key hash used in allow rules.

mod common;

use common::{assert_refused, last_join_denial, now, Broker};
use sigil_core::csr::key_and_csr;
use sigil_agent::join::client::tpm::{self, TpmDevice};
use sigil_agent::join::client::JoinParams;
use sigil_broker::join::tpm::ChallengePayload;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tonic::transport::Channel;

fn tool(name: &str) -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|d| d.join(name)).find(|p| p.exists());
    found.unwrap_or_else(|| panic!("{name} not found: run scripts/setup.sh (apt-get install swtpm swtpm-tools libtss2-dev openssl)"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two consecutive free ports: the swtpm TCTI expects the control channel on port + 1.
fn port_pair() -> (u16, u16) {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return (p, p + 1);
        }
    }
}

/// A local EK-certificate CA (swtpm_localca state + config files).
struct LocalCa {
    dir: tempfile::TempDir,
}

impl LocalCa {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("ca")).unwrap();
        let ca = d.join("ca");
        std::fs::write(
            d.join("localca.conf"),
            format!(
                "statedir = {0}\nsigningkey = {0}/signkey.pem\nissuercert = {0}/issuercert.pem\ncertserial = {0}/certserial\n",
                ca.display()
            ),
        )
        .unwrap();
        std::fs::write(d.join("localca.options"), "--platform-manufacturer Sigil\n--platform-version 2.1\n--platform-model test\n").unwrap();
        std::fs::write(
            d.join("setup.conf"),
            format!(
                "create_certs_tool = {}\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                tool("swtpm_localca").display(),
                d.join("localca.conf").display(),
                d.join("localca.options").display()
            ),
        )
        .unwrap();
        LocalCa { dir }
    }

    /// The CA that signs EK certificates (swtpm_localca's intermediate) and its root.
    fn ek_ca_pem(&self) -> String {
        let ca = self.dir.path().join("ca");
        std::fs::read_to_string(ca.join("issuercert.pem")).unwrap() + &std::fs::read_to_string(ca.join("swtpm-localca-rootca-cert.pem")).unwrap()
    }
}

/// A manufactured swtpm on loopback; killed on drop.
struct SwTpm {
    child: Child,
    _state: tempfile::TempDir,
    port: u16,
}

impl SwTpm {
    fn start(ca: &LocalCa) -> Self {
        // The replica tests below start this process's PostgreSQL cluster, whose
        // processes (postmaster, the harness's watchdog) live as long as the
        // process and inherit every descriptor open when they are spawned. The
        // TPM library's sockets are not close-on-exec: one inherited by them
        // would keep its swtpm (which serves one connection at a time) from
        // ever answering the test that opened it. So the cluster starts before
        // any swtpm, hence before any TPM socket.
        let _ = sigil_broker::store::pg_harness::shared();
        let state = tempfile::tempdir().unwrap();
        let setup = Command::new(tool("swtpm_setup"))
            .args(["--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate"])
            .arg(state.path())
            .arg("--config")
            .arg(ca.dir.path().join("setup.conf"))
            .output()
            .unwrap();
        assert!(setup.status.success(), "swtpm_setup failed: {}{}", String::from_utf8_lossy(&setup.stdout), String::from_utf8_lossy(&setup.stderr));
        // The ports are free when picked, but another test's outgoing
        // connection (the PostgreSQL pool's, say) may take one before swtpm
        // binds it; swtpm then exits. So a swtpm that exits is started again
        // on fresh ports, a bounded number of times.
        let mut attempt = 0;
        let (child, port) = loop {
            attempt += 1;
            let (port, ctrl) = port_pair();
            let log = state.path().join(format!("swtpm-{attempt}.log"));
            let mut child = Command::new(tool("swtpm"))
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", state.path().display()))
                .args(["--server", &format!("type=tcp,port={port},bindaddr=127.0.0.1")])
                .args(["--ctrl", &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1")])
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let said = || std::fs::read_to_string(&log).unwrap_or_default();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let listening = loop {
                if std::net::TcpStream::connect(("127.0.0.1", ctrl)).is_ok() {
                    break true;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                assert!(std::time::Instant::now() < deadline, "swtpm did not listen on {ctrl} within 20 s: {}", said());
                std::thread::sleep(std::time::Duration::from_millis(50));
            };
            if listening {
                break (child, port);
            }
            assert!(attempt < 5, "swtpm exited 5 times before listening: {}", said());
        };
        SwTpm { child, _state: state, port }
    }

    fn device(&self) -> TpmDevice {
        TpmDevice::new(&format!("swtpm:host=127.0.0.1,port={}", self.port))
    }
}

impl Drop for SwTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SHA-256 of the EK certificate's public key in PKIX DER, computed by OpenSSL.
fn openssl_ek_hash(cert_der: &[u8], dir: &Path) -> String {
    let cert = dir.join("ek.der");
    std::fs::write(&cert, cert_der).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl x509 -inform DER -in {} -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r", cert.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn ek_hash_of(t: &SwTpm) -> String {
    let d = t.device();
    let e = blocking(move || d.endorsement().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    openssl_ek_hash(e.ek_certificate.as_deref().expect("swtpm_setup --create-ek-cert wrote an EK certificate"), dir.path())
}

/// Role `tpm` may get `/tpm/<ek hash>`; bot `edge` has it.
async fn setup(admin: &mut SigilClient<Channel>, rule: &[(&str, &str)], ek_ca: Option<String>) {
    admin
        .create_role(pb::Role {
            name: "tpm".into(),
            allow: Some(pb::RoleAllow { spiffe_ids: vec!["/tpm/{{join.ek_public_hash}}".into()], audiences: vec!["x".into()], ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.create_bot(pb::Bot { name: "edge".into(), roles: vec!["tpm".into()], ..Default::default() }).await.unwrap();
    admin
        .create_join_token(pb::JoinToken {
            name: "tpm".into(),
            bot: "edge".into(),
            method: "tpm".into(),
            expires_at: now() + 600,
            max_uses: 100,
            allow: vec![pb::AllowRule { claims: rule.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }],
            config: ek_ca.map(|c| ("ek_ca".to_string(), c)).into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn params() -> (JoinParams, rcgen::KeyPair) {
    let (kp, csr) = key_and_csr().unwrap();
    (JoinParams { token_name: "tpm".into(), csr, ttl_seconds: 0 }, kp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_tpm_joins_by_ek_public_hash_and_the_hash_reaches_templates() {
    let ca = LocalCa::new();
    let a = SwTpm::start(&ca);
    let hash = ek_hash_of(&a).await;
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &[("ek_public_hash", &hash)], None).await;

    let (p, kp) = params();
    let id = tpm::join(&mut b.anonymous().await, &p, &a.device()).await.unwrap();
    assert_eq!(id.bot, "edge");
    let identity = sigil_schemas::identity::Identity::new(id.certificate_pem, kp.serialize_pem(), id.ca_pem);
    let mut bot = sigil_schemas::client::connect_with_identity(&b.addr, &identity).await.unwrap();
    let want = format!("spiffe://example.org/tpm/{hash}");
    let svid = bot.issue_jwt_svid(pb::IssueJwtSvidRequest { spiffe_id: want.clone(), audiences: vec!["x".into()], ..Default::default() }).await.unwrap();
    assert_eq!(svid.into_inner().spiffe_id, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_whose_ek_certificate_chains_to_the_allowed_ca_joins() {
    let ca = LocalCa::new();
    let a = SwTpm::start(&ca);
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &[("ek_cert_verified", "true")], Some(ca.ek_ca_pem())).await;
    let (p, _kp) = params();
    let id = tpm::join(&mut b.anonymous().await, &p, &a.device()).await.unwrap();
    assert_eq!(id.bot, "edge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_tpm_is_refused() {
    let ca = LocalCa::new();
    let (a, other) = (SwTpm::start(&ca), SwTpm::start(&ca));
    let hash = ek_hash_of(&a).await;
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &[("ek_public_hash", &hash)], None).await;
    let (p, _kp) = params();
    let err = tpm::join(&mut b.anonymous().await, &p, &other.device()).await.unwrap_err();
    assert!(err.to_string().contains(sigil_broker::join::REFUSED), "{err}");
    let msg = last_join_denial(&mut admin).await;
    assert!(msg.contains("ek_public_hash") && msg.contains("does not match"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_with_an_ek_certificate_from_another_ca_is_refused() {
    let (trusted, foreign) = (LocalCa::new(), LocalCa::new());
    let _seed_trusted_ca = SwTpm::start(&trusted);
    let stranger = SwTpm::start(&foreign);
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &[("ek_cert_verified", "true")], Some(trusted.ek_ca_pem())).await;
    let (p, _kp) = params();
    let err = tpm::join(&mut b.anonymous().await, &p, &stranger.device()).await.unwrap_err();
    assert!(err.to_string().contains(sigil_broker::join::REFUSED), "{err}");
    let why = last_join_denial(&mut admin).await;
    assert!(why.contains("not signed by a CA in the join token's ek_ca"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_activation_is_refused() {
    let ca = LocalCa::new();
    let a = SwTpm::start(&ca);
    let hash = ek_hash_of(&a).await;
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &[("ek_public_hash", &hash)], None).await;

    let d = a.device();
    let (e, ak) = blocking(move || (d.endorsement().unwrap(), d.create_ak().unwrap())).await;
    let mut anon = b.anonymous().await;
    let ch = anon
        .begin_join(pb::BeginJoinRequest { method: "tpm".into(), token_name: "tpm".into(), payload: tpm::begin_payload(&e, &ak).unwrap() })
        .await
        .unwrap()
        .into_inner();
    let challenge: ChallengePayload = serde_json::from_slice(&ch.payload).unwrap();
    let d = a.device();
    let secret = blocking(move || d.activate(&ak, &challenge).unwrap()).await;
    let join = |secret: Vec<u8>, id: String| {
        let (p, _) = params();
        pb::JoinRequest { method: "tpm".into(), token_name: "tpm".into(), csr: p.csr, payload: secret, challenge_id: id, ..Default::default() }
    };
    anon.join(join(secret.clone(), ch.challenge_id.clone())).await.unwrap();
    let err = anon.join(join(secret, ch.challenge_id)).await.unwrap_err();
    assert_refused(&err);
    assert!(last_join_denial(&mut admin).await.contains("challenge_id"));
}

/// The EK public key and certificate are public: a TPM that presents another
/// TPM's endorsement with its own AK cannot activate the credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_presenting_another_tpms_endorsement_cannot_activate() {
    let ca = LocalCa::new();
    let (a, thief) = (SwTpm::start(&ca), SwTpm::start(&ca));
    let hash = ek_hash_of(&a).await;
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &[("ek_public_hash", &hash)], None).await;

    let (da, dt) = (a.device(), thief.device());
    let (stolen, ak) = blocking(move || (da.endorsement().unwrap(), dt.create_ak().unwrap())).await;
    let mut anon = b.anonymous().await;
    let ch = anon
        .begin_join(pb::BeginJoinRequest { method: "tpm".into(), token_name: "tpm".into(), payload: tpm::begin_payload(&stolen, &ak).unwrap() })
        .await
        .unwrap()
        .into_inner();
    let challenge: ChallengePayload = serde_json::from_slice(&ch.payload).unwrap();
    let dt = thief.device();
    let activated = blocking(move || dt.activate(&ak, &challenge)).await;
    assert!(activated.is_err(), "a TPM without that EK activated the credential");
    let (p, _) = params();
    let guess = vec![0u8; 32];
    let err = anon
        .join(pb::JoinRequest { method: "tpm".into(), token_name: "tpm".into(), csr: p.csr, payload: guess, challenge_id: ch.challenge_id, ..Default::default() })
        .await
        .unwrap_err();
    assert_refused(&err);
    let why = last_join_denial(&mut admin).await;
    assert!(why.contains("credential activation failed"), "{why}");
}

/// Issue 11 #11: a TPM that matches no rule (here a software TPM whose EK
/// certificate comes from another vendor) read the token's rules back from
/// the refusal, e.g. `ek_cert_issuer ... does not match "CN=Secret Vendor*"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_outside_the_rules_cannot_read_the_rules_back_from_the_refusal() {
    let ca = LocalCa::new();
    let a = SwTpm::start(&ca);
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &[("ek_cert_issuer", "CN=Secret Vendor*")], None).await;
    let (p, _kp) = params();
    let err = tpm::join(&mut b.anonymous().await, &p, &a.device()).await.unwrap_err().to_string();
    assert!(err.contains(sigil_broker::join::REFUSED), "{err}");
    assert!(!err.contains("Secret Vendor") && !err.contains("ek_cert_issuer"), "the refusal shows the rule: {err}");
    let why = last_join_denial(&mut admin).await;
    assert!(why.contains("ek_cert_issuer") && why.contains("Secret Vendor"), "the audit keeps the reason: {why}");
}

/// BeginJoin on one replica, the activation and its Join on another: `tpm`
/// joins through a set of replicas behind one address (challenges live in the
/// shared store). And the activation sent to both replicas at once joins once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_join_begun_on_one_replica_completes_on_the_other_and_joins_once() {
    let ca = LocalCa::new();
    let t = SwTpm::start(&ca);
    let hash = ek_hash_of(&t).await;
    let (a, b, _url) = common::replicas_on_postgres(|_| {}).await;
    setup(&mut a.admin().await, &[("ek_public_hash", &hash)], None).await;

    let join_req = |secret: Vec<u8>, id: String| {
        let (p, _) = params();
        pb::JoinRequest { method: "tpm".into(), token_name: "tpm".into(), csr: p.csr, payload: secret, challenge_id: id, ..Default::default() }
    };
    for round in 0..2 {
        let d = t.device();
        let (e, ak) = blocking(move || (d.endorsement().unwrap(), d.create_ak().unwrap())).await;
        let begin = pb::BeginJoinRequest { method: "tpm".into(), token_name: "tpm".into(), payload: tpm::begin_payload(&e, &ak).unwrap() };
        let ch = a.anonymous().await.begin_join(begin).await.unwrap().into_inner();
        let challenge: ChallengePayload = serde_json::from_slice(&ch.payload).unwrap();
        let d = t.device();
        let secret = blocking(move || d.activate(&ak, &challenge).unwrap()).await;
        if round == 0 {
            let id = b.anonymous().await.join(join_req(secret, ch.challenge_id)).await.expect("begun on A, joined on B").into_inner();
            assert_eq!(id.bot, "edge");
        } else {
            // The same answer on both replicas at once: one identity.
            let (mut ca_, mut cb) = (a.anonymous().await, b.anonymous().await);
            let (ra, rb) = tokio::join!(
                ca_.join(join_req(secret.clone(), ch.challenge_id.clone())),
                cb.join(join_req(secret, ch.challenge_id))
            );
            let ok = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
            assert_eq!(ok, 1, "A: {ra:?}, B: {rb:?}");
            let refused = if ra.is_err() { (ra.unwrap_err(), &a) } else { (rb.unwrap_err(), &b) };
            assert_refused(&refused.0);
            assert!(last_join_denial(&mut refused.1.admin().await).await.contains("unknown, used or expired challenge_id"));
        }
    }
    let uses = a.admin().await.get_join_token(pb::GetRequest { name: "tpm".into() }).await.unwrap().into_inner().uses;
    assert_eq!(uses, 2, "one use per challenge");
}

/// The pending challenge as the store holds it: a reader of the database (a
/// backup, a standby) finds only the SHA-256 of the credential's secret, not
/// the secret that answers the challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_tpm_challenge_holds_no_answer() {
    use sigil_broker::store::Store;
    let ca = LocalCa::new();
    let t = SwTpm::start(&ca);
    let hash = ek_hash_of(&t).await;
    let (a, _b, url) = common::replicas_on_postgres(|_| {}).await;
    setup(&mut a.admin().await, &[("ek_public_hash", &hash)], None).await;
    let d = t.device();
    let (e, ak) = blocking(move || (d.endorsement().unwrap(), d.create_ak().unwrap())).await;
    let begin = pb::BeginJoinRequest { method: "tpm".into(), token_name: "tpm".into(), payload: tpm::begin_payload(&e, &ak).unwrap() };
    let ch = a.anonymous().await.begin_join(begin).await.unwrap().into_inner();
    let challenge: ChallengePayload = serde_json::from_slice(&ch.payload).unwrap();
    let d = t.device();
    let secret = blocking(move || d.activate(&ak, &challenge).unwrap()).await;

    let db = sigil_broker::store::postgres::PgStore::connect(&url).await.unwrap();
    let row = db.take_challenge(&ch.challenge_id, now()).await.unwrap().expect("the challenge is in the shared store");
    let state: serde_json::Value = serde_json::from_slice(&row.state).unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &secret);
    assert_eq!(state["secret_sha256"], serde_json::json!(digest.as_ref()), "{state}");
    assert!(!row.state.windows(secret.len()).any(|w| w == secret.as_slice()), "the raw secret is stored");
    let as_json = serde_json::to_string(&secret).unwrap();
    assert!(!String::from_utf8_lossy(&row.state).contains(as_json.trim_matches(['[', ']'])), "the secret is stored: {state}");
}
