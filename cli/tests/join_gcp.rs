#![allow(clippy::unwrap_used)]
//! GCP join (`gcp`): the agent client fetches an instance identity token from a
//! metadata endpoint and joins with it. Google's metadata server cannot run
//! here, so a stand-in written in Python serves the documented endpoint
//! (`/computeMetadata/v1/instance/service-accounts/default/identity`,
//! `Metadata-Flavor: Google` required) and mints tokens with PyJWT (RS256, the
//! claim set Google documents for `format=full`) under its own key, published
//! to the broker as the join token's static `jwks`.

mod common;

use common::{last_join_denial, now, Broker};
use sigil_core::csr::key_and_csr;
use sigil_agent::join::client::{gcp, JoinParams};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use tonic::transport::Channel;

const AUDIENCE: &str = "https://sigil.example.org/join";

const METADATA_SERVER: &str = r#"
import json, sys, time, http.server, urllib.parse
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
port, opts = int(sys.argv[1]), json.loads(sys.argv[2])
published = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(published.public_key()))
jwk.update(kid="k1", alg="RS256", use="sig")
print(json.dumps({"keys": [jwk]}), flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        if self.headers.get("Metadata-Flavor") != "Google" or u.path != "/computeMetadata/v1/instance/service-accounts/default/identity":
            self.send_response(403); self.end_headers(); return
        q = urllib.parse.parse_qs(u.query)
        if q.get("format") != ["full"]:
            self.send_response(400); self.end_headers(); return
        now = int(time.time()) + opts.get("time_offset", 0)
        project = opts.get("project", "acme-prod")
        claims = {"iss": "https://accounts.google.com", "aud": q["audience"][0], "azp": "107517467455664443765",
                  "sub": "107517467455664443765", "email": opts.get("email", "builder@%s.iam.gserviceaccount.com" % project),
                  "email_verified": True, "iat": now, "exp": now + 3600,
                  "google": {"compute_engine": {"instance_creation_timestamp": now - 86400, "instance_id": "5155620227447416093",
                      "instance_name": "build-vm-1", "project_id": project, "project_number": 739419398126, "zone": "us-central1-a"}}}
        key = rogue if opts.get("rogue") else published
        tok = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        body = tok.encode()
        self.send_response(200); self.send_header("Content-Type", "text/html"); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// The metadata stand-in on loopback; killed on drop.
struct Metadata {
    child: Child,
    base: String,
    jwks: String,
}

impl Metadata {
    fn start(opts: serde_json::Value) -> Self {
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        assert!(python.exists(), "{} missing: run scripts/setup.sh (PyJWT[crypto] from acceptance-tests/requirements.txt)", python.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(python)
            .args(["-c", METADATA_SERVER, &port.to_string(), &opts.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut jwks = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut jwks).unwrap();
        assert!(jwks.contains("\"keys\""), "metadata stand-in did not start: {jwks}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "metadata stand-in did not listen");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Metadata { child, base: format!("http://127.0.0.1:{port}"), jwks: jwks.trim().to_string() }
    }
}

impl Drop for Metadata {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn setup(admin: &mut SigilClient<Channel>, jwks: &str, rule: &[(&str, &str)]) {
    admin
        .create_role(pb::Role {
            name: "gce".into(),
            allow: Some(pb::RoleAllow {
                spiffe_ids: vec!["/gcp/{{join.project_id}}/{{join.region}}/{{join.instance_name}}".into()],
                audiences: vec!["x".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.create_bot(pb::Bot { name: "vm".into(), roles: vec!["gce".into()], ..Default::default() }).await.unwrap();
    admin
        .create_join_token(pb::JoinToken {
            name: "gce".into(),
            bot: "vm".into(),
            method: "gcp".into(),
            expires_at: now() + 600,
            max_uses: 100,
            allow: vec![pb::AllowRule { claims: rule.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }],
            config: [("audience".to_string(), AUDIENCE.to_string()), ("jwks".to_string(), jwks.to_string())].into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap();
}

const RULE: &[(&str, &str)] = &[("project_id", "acme-prod"), ("zone", "us-central1-*"), ("service_account", "builder@acme-prod.iam.gserviceaccount.com")];

fn params() -> (JoinParams, rcgen::KeyPair) {
    let (kp, csr) = key_and_csr().unwrap();
    (JoinParams { token_name: "gce".into(), csr, ttl_seconds: 0 }, kp)
}

async fn try_join(opts: serde_json::Value, audience: &str) -> (Broker, Result<(pb::IdentityResponse, rcgen::KeyPair), String>) {
    let md = Metadata::start(opts);
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &md.jwks, RULE).await;
    let (p, kp) = params();
    let r = gcp::join(&mut b.anonymous().await, &p, &md.base, audience).await.map(|id| (id, kp)).map_err(|e| e.to_string());
    // The caller gets the generic refusal; the reason is in the audit log.
    let r = match r {
        Ok(x) => Ok(x),
        Err(e) => {
            assert!(e.contains(sigil_broker::join::REFUSED), "{e}");
            Err(last_join_denial(&mut admin).await)
        }
    };
    (b, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_in_the_allowed_project_joins_and_its_location_reaches_templates() {
    let (b, r) = try_join(serde_json::json!({}), AUDIENCE).await;
    let (id, kp) = r.unwrap();
    assert_eq!(id.bot, "vm");
    let identity = sigil_schemas::identity::Identity::new(id.certificate_pem, kp.serialize_pem(), id.ca_pem);
    let mut bot = sigil_schemas::client::connect_with_identity(&b.addr, &identity).await.unwrap();
    let want = "spiffe://example.org/gcp/acme-prod/us-central1/build-vm-1";
    let svid = bot.issue_jwt_svid(pb::IssueJwtSvidRequest { spiffe_id: want.into(), audiences: vec!["x".into()], ..Default::default() }).await.unwrap();
    assert_eq!(svid.into_inner().spiffe_id, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_in_another_project_is_refused_naming_the_claim() {
    let (_b, r) = try_join(serde_json::json!({"project": "acme-dev"}), AUDIENCE).await;
    let e = r.unwrap_err();
    assert!(e.contains("project_id = \"acme-dev\""), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signed_by_an_unpublished_key_is_refused() {
    let (_b, r) = try_join(serde_json::json!({"rogue": true}), AUDIENCE).await;
    let e = r.unwrap_err();
    assert!(e.contains("signature"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_for_another_audience_is_refused() {
    let (_b, r) = try_join(serde_json::json!({}), "https://other-broker.example.org").await;
    let e = r.unwrap_err();
    assert!(e.contains("audience"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused() {
    let (_b, r) = try_join(serde_json::json!({"time_offset": -7200}), AUDIENCE).await;
    let e = r.unwrap_err();
    assert!(e.contains("expired"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_endpoint_refusing_the_request_is_reported() {
    let md = Metadata::start(serde_json::json!({}));
    let e = gcp::identity_token(&format!("{}/wrong-prefix", md.base), AUDIENCE).await.unwrap_err();
    assert!(e.to_string().contains("HTTP 403"), "{e}");
}

/// Issue 11 #12: with `max_uses: 1`, one GCE instance joined again and again
/// (`uses` stayed 0). Uses now count for every method, atomically: of 10
/// concurrent joins, exactly one gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gce_vm_cannot_join_more_often_than_max_uses_allows() {
    let md = Metadata::start(serde_json::json!({}));
    let b = std::sync::Arc::new(Broker::start().await);
    let mut admin = b.admin().await;
    setup(&mut admin, &md.jwks, RULE).await;
    let t = admin.get_join_token(pb::GetRequest { name: "gce".into() }).await.unwrap().into_inner();
    admin.update_join_token(pb::JoinToken { max_uses: 1, ..t }).await.unwrap();
    let tokens: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(gcp::identity_token(&md.base, AUDIENCE).await.unwrap());
        }
        v
    };
    let mut tasks = Vec::new();
    for jwt in tokens {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let (_, csr) = key_and_csr().unwrap();
            let req = pb::JoinRequest { method: "gcp".into(), token: jwt, token_name: "gce".into(), csr, ..Default::default() };
            b.anonymous().await.join(req).await.map(|_| ())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(s) => common::assert_refused(&s),
        }
    }
    assert_eq!(ok, 1, "max_uses 1, {ok} joins");
    assert_eq!(admin.get_join_token(pb::GetRequest { name: "gce".into() }).await.unwrap().into_inner().uses, 1);
    assert!(last_join_denial(&mut admin).await.contains("already used"));
}
