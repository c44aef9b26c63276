#![allow(clippy::unwrap_used)]
//! Azure join (`azure`): the agent client reads the attested document (with the
//! broker's nonce) and a managed identity token from an IMDS endpoint. Azure's
//! IMDS cannot run here, so a Python stand-in serves the documented endpoints
//! (`Metadata: true` required): it signs attested documents as PKCS#7 with the
//! `cryptography` library (certificate chain root -> intermediate ->
//! `metadata.azure.com`, like Azure's) and mints Entra-style access tokens with
//! PyJWT. The broker trusts the stand-in's root through `attested_ca` and its
//! token key through a static `jwks`.

mod common;

use base64::Engine;
use common::{last_join_denial, now, Broker};
use tonic::Code;
use sigil_core::csr::key_and_csr;
use sigil_agent::join::client::azure::{self, Imds};
use sigil_agent::join::client::JoinParams;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use tonic::transport::Channel;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SUBSCRIPTION: &str = "8d4b5c6e-1f2a-4b3c-9d8e-7f6a5b4c3d2e";

const IMDS: &str = r#"
import json, sys, time, datetime, http.server, urllib.parse, base64
import jwt
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
port, opts = int(sys.argv[1]), json.loads(sys.argv[2])
now = datetime.datetime.now(datetime.timezone.utc)
def key(): return rsa.generate_private_key(public_exponent=65537, key_size=2048)
def cert(cn, k, issuer_cn, issuer_key, ca, san=None):
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)])).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san: b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())
root_k, int_k, leaf_k = key(), key(), key()
root = cert("Test Azure Root", root_k, "Test Azure Root", root_k, True)
inter = cert("Test Azure TLS Issuing CA", int_k, "Test Azure Root", root_k, True)
name = opts.get("signer_name", "metadata.azure.com")
if opts.get("rogue_ca"):
    rogue_k = key()
    leaf = cert(name, leaf_k, "Test Azure TLS Issuing CA", rogue_k, False, san=name)
else:
    leaf = cert(name, leaf_k, "Test Azure TLS Issuing CA", int_k, False, san=name)
tok_k = key()
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(tok_k.public_key())); jwk.update(kid="t1", alg="RS256", use="sig")
pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()
print(json.dumps({"jwks": json.dumps({"keys": [jwk]}), "ca_pem": pem(inter) + pem(root)}), flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        u = urllib.parse.urlparse(self.path); q = urllib.parse.parse_qs(u.query)
        if self.headers.get("Metadata") != "true":
            self.send_response(400); self.end_headers(); return
        if u.path == "/metadata/attested/document":
            doc = {"licenseType": "", "nonce": opts.get("nonce", q["nonce"][0]), "plan": {"name": "", "product": "", "publisher": ""},
                   "sku": "22_04-lts-gen2", "subscriptionId": SUB, "timeStamp": {"createdOn": "11/25/26 20:00:00 -0000", "expiresOn": "11/26/26 02:00:00 -0000"},
                   "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6"}
            der = (pkcs7.PKCS7SignatureBuilder().set_data(json.dumps(doc).encode()).add_signer(leaf, leaf_k, hashes.SHA256())
                   .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))
            self.reply({"encoding": "pkcs7", "signature": base64.b64encode(der).decode()})
        elif u.path == "/metadata/identity/oauth2/token":
            t = int(time.time()); sub = opts.get("token_subscription", SUB)
            claims = {"aud": q["resource"][0], "iss": "https://sts.windows.net/%s/" % TENANT, "iat": t, "nbf": t, "exp": t + 3600,
                      "tid": TENANT, "oid": "0f0e0d0c-0b0a-4909-8807-060504030201", "sub": "0f0e0d0c-0b0a-4909-8807-060504030201",
                      "xms_mirid": "/subscriptions/%s/resourcegroups/web-prod/providers/Microsoft.Compute/virtualMachines/web-1" % sub}
            tok = jwt.encode(claims, tok_k, algorithm="RS256", headers={"kid": "t1"})
            self.reply({"access_token": tok, "expires_in": "3599", "resource": q["resource"][0], "token_type": "Bearer"})
        else:
            self.send_response(404); self.end_headers()
TENANT, SUB = sys.argv[3], sys.argv[4]
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// The IMDS stand-in on loopback; killed on drop.
struct FakeImds {
    child: Child,
    base: String,
    jwks: String,
    ca_pem: String,
}

impl FakeImds {
    fn start(opts: serde_json::Value) -> Self {
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        assert!(python.exists(), "{} missing: run scripts/setup.sh (PyJWT[crypto], cryptography from acceptance-tests/requirements.txt)", python.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(python)
            .args(["-c", IMDS, &port.to_string(), &opts.to_string(), TENANT, SUBSCRIPTION])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("IMDS stand-in did not start");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "IMDS stand-in did not listen");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        FakeImds {
            child,
            base: format!("http://127.0.0.1:{port}"),
            jwks: v["jwks"].as_str().unwrap().to_string(),
            ca_pem: v["ca_pem"].as_str().unwrap().to_string(),
        }
    }

    fn imds(&self) -> Imds {
        Imds { base: self.base.clone(), ..Default::default() }
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The attested VM id of the stand-in's documents.
const VM_ID: &str = "02aab8a4-74ef-476e-8182-f6d2ba4166a6";

/// Role `azvm` (IDs by attested VM id, and by resource group), bot `web`, and
/// join token `az` whose rule names only attested fields.
async fn setup(admin: &mut SigilClient<Channel>, imds: &FakeImds, ca_pem: &str) {
    admin
        .create_role(pb::Role {
            name: "azvm".into(),
            allow: Some(pb::RoleAllow {
                spiffe_ids: vec!["/azure/{{join.subscription}}/{{join.vm_id}}".into(), "/rg/{{join.resource_group}}/**".into()],
                audiences: vec!["x".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.create_bot(pb::Bot { name: "web".into(), roles: vec!["azvm".into()], ..Default::default() }).await.unwrap();
    create_token(admin, imds, ca_pem, "az", &[("subscription", SUBSCRIPTION), ("vm_id", "02aab8a4-*")], &[]).await.unwrap();
}

async fn create_token(
    admin: &mut SigilClient<Channel>,
    imds: &FakeImds,
    ca_pem: &str,
    name: &str,
    rule: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Result<(), tonic::Status> {
    let mut config: std::collections::HashMap<String, String> =
        [("tenant_id", TENANT), ("attested_ca", ca_pem), ("jwks", imds.jwks.as_str())].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    config.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    admin
        .create_join_token(pb::JoinToken {
            name: name.into(),
            bot: "web".into(),
            method: "azure".into(),
            expires_at: now() + 600,
            max_uses: 100,
            allow: vec![pb::AllowRule { claims: rule.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }],
            config,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn bot_client(b: &Broker, id: pb::IdentityResponse, kp: &rcgen::KeyPair) -> SigilClient<Channel> {
    let identity = sigil_schemas::identity::Identity::new(id.certificate_pem, kp.serialize_pem(), id.ca_pem);
    sigil_schemas::client::connect_with_identity(&b.addr, &identity).await.unwrap()
}

fn jwt_svid(path: &str) -> pb::IssueJwtSvidRequest {
    pb::IssueJwtSvidRequest { spiffe_id: format!("spiffe://example.org{path}"), audiences: vec!["x".into()], ..Default::default() }
}

fn params() -> (JoinParams, rcgen::KeyPair) {
    let (kp, csr) = key_and_csr().unwrap();
    (JoinParams { token_name: "az".into(), csr, ttl_seconds: 0 }, kp)
}

/// Joins through the stand-in started with `opts`; the broker trusts the stand-in's CA.
async fn try_join(opts: serde_json::Value) -> (Broker, FakeImds, Result<(pb::IdentityResponse, rcgen::KeyPair), String>) {
    let imds = FakeImds::start(opts);
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &imds, &imds.ca_pem.clone()).await;
    let (p, kp) = params();
    let r = azure::join(&mut b.anonymous().await, &p, &imds.imds()).await.map(|id| (id, kp)).map_err(|e| e.to_string());
    // The caller gets the generic refusal; the reason is in the audit log.
    let r = match r {
        Ok(x) => Ok(x),
        Err(e) => {
            assert!(e.contains(sigil_broker::join::REFUSED), "{e}");
            Err(last_join_denial(&mut admin).await)
        }
    };
    (b, imds, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_with_signed_attested_document_joins_and_its_attested_vm_id_reaches_templates() {
    let (b, _imds, r) = try_join(serde_json::json!({})).await;
    let (id, kp) = r.unwrap();
    assert_eq!(id.bot, "web");
    let mut bot = bot_client(&b, id, &kp).await;
    let want = format!("/azure/{SUBSCRIPTION}/{VM_ID}");
    let svid = bot.issue_jwt_svid(jwt_svid(&want)).await.unwrap();
    assert_eq!(svid.into_inner().spiffe_id, format!("spiffe://example.org{want}"));
}

/// Suspected in issue 11, confirmed: `resource_group`, `vm_name` and
/// `managed_identity` come from the bearer managed identity token, which names
/// no attested VM (a user-assigned identity of `web-prod` attached to any VM,
/// or a token taken from `web-1`, sits beside any attested document of the same
/// subscription). Here the attested VM presents a token naming
/// `web-prod/web-1`: a rule on `resource_group` is refused at creation, and the
/// attribute does not reach templates, unless the token opts in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_borrowed_managed_identity_token_cannot_lend_its_resource_group_to_another_vm() {
    let imds = FakeImds::start(serde_json::json!({}));
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &imds, &imds.ca_pem.clone()).await;
    let ca = imds.ca_pem.clone();
    for field in ["resource_group", "vm_name", "managed_identity"] {
        let e = create_token(&mut admin, &imds, &ca, "az-rg", &[("subscription", SUBSCRIPTION), (field, "*web*")], &[]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {}", e.message());
        assert!(e.message().contains(&format!("allow[0].{field}")) && e.message().contains("allow_unattested_fields"), "{}", e.message());
    }
    // Joined on attested fields, the VM does not get the token's resource group.
    let (p, kp) = params();
    let id = azure::join(&mut b.anonymous().await, &p, &imds.imds()).await.unwrap();
    let mut bot = bot_client(&b, id, &kp).await;
    assert_eq!(bot.issue_jwt_svid(jwt_svid("/rg/web-prod/app")).await.unwrap_err().code(), Code::PermissionDenied);
    // The explicit opt-in trusts the token's resource id, as documented.
    create_token(&mut admin, &imds, &ca, "az-rg", &[("subscription", SUBSCRIPTION), ("resource_group", "web-*")], &[("allow_unattested_fields", "true")]).await.unwrap();
    let (kp2, csr) = key_and_csr().unwrap();
    let p2 = JoinParams { token_name: "az-rg".into(), csr, ttl_seconds: 0 };
    let id = azure::join(&mut b.anonymous().await, &p2, &imds.imds()).await.unwrap();
    let mut bot = bot_client(&b, id, &kp2).await;
    assert!(bot.issue_jwt_svid(jwt_svid("/rg/web-prod/app")).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_document_signed_outside_the_trusted_chain_is_refused() {
    let (_b, _i, r) = try_join(serde_json::json!({"rogue_ca": true})).await;
    let e = r.unwrap_err();
    assert!(e.contains("does not chain to a CA"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_document_signed_by_another_name_is_refused() {
    let (_b, _i, r) = try_join(serde_json::json!({"signer_name": "metadata.attacker.example"})).await;
    let e = r.unwrap_err();
    assert!(e.contains("not an allowed signer name"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_from_another_subscription_is_refused() {
    let (_b, _i, r) = try_join(serde_json::json!({"token_subscription": "00000000-0000-0000-0000-000000000000"})).await;
    let e = r.unwrap_err();
    assert!(e.contains("not the attested document's"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_attested_document_with_an_old_nonce_is_refused() {
    let (_b, _i, r) = try_join(serde_json::json!({"nonce": "1234567890"})).await;
    let e = r.unwrap_err();
    assert!(e.contains("nonce"), "{e}");
}

/// Identity only from signed content: changing the VM id inside the signed
/// bytes breaks the signature (SPIRE azure_imds fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_attested_content_is_refused() {
    let imds = FakeImds::start(serde_json::json!({}));
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    setup(&mut admin, &imds, &imds.ca_pem.clone()).await;
    let mut anon = b.anonymous().await;
    let ch = anon.begin_join(pb::BeginJoinRequest { method: "azure".into(), token_name: "az".into(), payload: vec![] }).await.unwrap().into_inner();
    let nonce = String::from_utf8(ch.payload).unwrap();
    assert_eq!(nonce.len(), 10);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut der = b64.decode(imds.imds().attested_document(&nonce).await.unwrap()).unwrap();
    let at = der.windows(8).position(|w| w == b"02aab8a4").unwrap();
    der[at] = b'f';
    let token = imds.imds().access_token().await.unwrap();
    let (p, _) = params();
    let req = azure::join_request(&p, ch.challenge_id, token, b64.encode(&der)).unwrap();
    let err = anon.join(req).await.unwrap_err();
    common::assert_refused(&err);
    let why = last_join_denial(&mut admin).await;
    assert!(why.contains("signature does not verify"), "{why}");
}
