#![allow(clippy::unwrap_used)]
//! SSH certificates from the real broker, in process, over mTLS: what a role's
//! `ssh` rules let a bot obtain (principals, host names, extensions, critical
//! options, lifetime), what they refuse (a principal no role grants, an
//! extension beyond the role, a critical option template whose attribute the
//! bot's join lacks, a locked or expired bot), role validation, escalation
//! through role writes, and an ssh-user CA rotation. Every issued certificate
//! is read back with the real `ssh-keygen -L` (openssh-client).

mod common;

use common::{https_get, now, Broker};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::collections::HashMap;
use tonic::transport::Channel;
use tonic::Code;

type Client = SigilClient<Channel>;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ssh_rules(principals: &[&str], host_names: &[&str], extensions: &[&str], options: &[(&str, &str)], max_ttl: i64) -> pb::SshRules {
    pb::SshRules {
        principals: strings(principals),
        host_names: strings(host_names),
        extensions: strings(extensions),
        critical_options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
        max_ttl_seconds: max_ttl,
    }
}

/// Role and bot `name` with `ssh` rules (plus `rules`), joined; returns its client.
async fn bot_with(b: &Broker, admin: &mut Client, name: &str, ssh: pb::SshRules, rules: Vec<pb::Rule>) -> Client {
    let allow = pb::RoleAllow { ssh: Some(ssh), rules, ..Default::default() };
    admin.create_role(pb::Role { name: name.into(), allow: Some(allow), ..Default::default() }).await.unwrap();
    admin.create_bot(pb::Bot { name: name.into(), roles: vec![name.into()], ..Default::default() }).await.unwrap();
    let t = pb::JoinToken { name: format!("{name}-t"), bot: name.into(), expires_at: now() + 600, max_uses: 1, ..Default::default() };
    let secret = admin.create_join_token(t).await.unwrap().into_inner().secret;
    b.join_as(&secret).await.unwrap()
}

/// A fresh key pair made by ssh-keygen; returns its public key line.
fn user_key(dir: &std::path::Path, ty: &str) -> String {
    let path = dir.join(format!("id_{ty}"));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(dir.join(format!("id_{ty}.pub")));
    keygen(&["-q", "-t", ty, "-N", "", "-C", "test", "-f", path.to_str().unwrap()]);
    std::fs::read_to_string(dir.join(format!("id_{ty}.pub"))).unwrap()
}

fn keygen(args: &[&str]) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen is needed (apt-get install openssh-client): {e}"));
    assert!(out.status.success(), "ssh-keygen {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ssh-keygen -L` of a certificate line.
fn shown(dir: &std::path::Path, cert: &str) -> String {
    let path = dir.join("c-cert.pub");
    std::fs::write(&path, format!("{cert}\n")).unwrap();
    keygen(&["-L", "-f", path.to_str().unwrap()])
}

/// `ssh-keygen -l` fingerprint of an authorized_keys line.
fn fingerprint(dir: &std::path::Path, line: &str) -> String {
    let path = dir.join("ca.pub");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    keygen(&["-l", "-f", path.to_str().unwrap()]).split_whitespace().nth(1).unwrap().to_string()
}

fn user_req(key: &str, principals: &[&str]) -> pb::IssueSshCertificateRequest {
    pb::IssueSshCertificateRequest { cert_type: "user".into(), public_key: key.into(), principals: strings(principals), ..Default::default() }
}

async fn last_audit(admin: &mut Client, kind: &str) -> pb::AuditEvent {
    let items = admin.list_audit_events(pb::ListAuditEventsRequest { limit: 1000, after_id: 0 }).await.unwrap().into_inner().items;
    items.into_iter().filter(|e| e.kind == kind).last().unwrap_or_else(|| panic!("no {kind} audit event"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_certificate_carries_what_the_role_allows_and_ssh_keygen_reads_it() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let rules = ssh_rules(
        &["deploy", "{{bot.name}}-*"],
        &[],
        &["permit-pty", "permit-agent-forwarding"],
        &[("force-command", "/usr/bin/uptime"), ("source-address", "10.0.0.0/8,192.0.2.7")],
        600,
    );
    let mut ci = bot_with(&b, &mut admin, "ci", rules, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    for ty in ["ed25519", "ecdsa", "rsa"] {
        let key = user_key(dir.path(), ty);
        let c = ci.issue_ssh_certificate(user_req(&key, &["deploy", "ci-admin"])).await.unwrap().into_inner();
        assert_eq!(c.valid_before - c.valid_after, 600 + 60, "role cap, valid_after backdated 60 s");
        assert!((c.valid_after - (now() - 60)).abs() <= 5);
        assert!(c.key_id.starts_with("sigil:ci:") && c.key_id.len() > "sigil:ci:".len(), "{}", c.key_id);
        let s = shown(dir.path(), &c.certificate);
        assert!(s.contains("user certificate"), "{s}");
        assert!(s.contains(&format!("Key ID: \"{}\"", c.key_id)), "{s}");
        assert!(s.contains(&format!("Serial: {}", c.serial)), "{s}");
        assert!(s.contains("                deploy\n                ci-admin\n"), "{s}");
        assert!(s.contains("force-command /usr/bin/uptime") && s.contains("source-address 10.0.0.0/8,192.0.2.7"), "{s}");
        assert!(s.contains("permit-agent-forwarding\n                permit-pty\n"), "{s}");
        assert!(!s.contains("permit-port-forwarding"), "only the role's extensions: {s}");
        // Signed by the ssh-user CA it publishes (ed25519 by default).
        assert_eq!(c.user_ca_public_keys.len(), 1);
        assert!(c.user_ca_public_keys[0].starts_with("ssh-ed25519 "), "{}", c.user_ca_public_keys[0]);
        let ca_fp = fingerprint(dir.path(), &c.user_ca_public_keys[0]);
        assert!(s.contains(&format!("Signing CA: ED25519 {ca_fp} (using ssh-ed25519)")), "{s}");
    }
    // A shorter requested lifetime and fewer extensions are honoured.
    let key = user_key(dir.path(), "ed25519");
    let mut r = user_req(&key, &["deploy"]);
    r.ttl_seconds = 120;
    r.extensions = strings(&["permit-pty"]);
    let c = ci.issue_ssh_certificate(r).await.unwrap().into_inner();
    assert_eq!(c.valid_before - c.valid_after, 180);
    let s = shown(dir.path(), &c.certificate);
    assert!(s.contains("permit-pty") && !s.contains("permit-agent-forwarding"), "{s}");
    // Audited with serial, key id, principals, CA key and instance.
    let e = last_audit(&mut admin, "ssh.issue").await;
    assert_eq!(e.outcome, "ok");
    let d: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap();
    assert_eq!(d["serial"], c.serial.to_string());
    assert_eq!(d["key_id"], c.key_id);
    assert_eq!(d["principals"], serde_json::json!(["deploy"]));
    assert!(!d["ca_key"].as_str().unwrap().is_empty() && !d["instance"].as_str().unwrap().is_empty(), "{d}");
    // The same keys over GetSshCaPublicKeys; host and user CAs differ.
    let keys = ci.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.unwrap().into_inner();
    assert_eq!(keys.user_ca_public_keys, c.user_ca_public_keys);
    assert_eq!(keys.host_ca_public_keys, c.host_ca_public_keys);
    assert_ne!(keys.user_ca_public_keys, keys.host_ca_public_keys);
    // And over public HTTPS, no identity needed: one authorized_keys line each.
    for (path, lines) in [("/ssh/user_ca.pub", &keys.user_ca_public_keys), ("/ssh/host_ca.pub", &keys.host_ca_public_keys)] {
        let (status, ctype, body) = https_get(&b, path).await;
        assert_eq!((status, ctype.as_str()), (200, "text/plain; charset=utf-8"), "{path}");
        assert_eq!(String::from_utf8(body).unwrap(), lines.iter().map(|l| format!("{l}\n")).collect::<String>(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_outlives_its_ca_key() {
    let b = Broker::start_configured(tempfile::tempdir().unwrap(), |c| {
        c.ca.lifetime_seconds = 300;
        c.ca.rotation.automatic = false;
    })
    .await;
    let mut admin = b.admin().await;
    let mut ci = bot_with(&b, &mut admin, "ci", ssh_rules(&["deploy"], &[], &[], &[], 0), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let c = ci.issue_ssh_certificate(user_req(&user_key(dir.path(), "ed25519"), &["deploy"])).await.unwrap().into_inner();
    let st = admin.get_ca_status(pb::GetCaStatusRequest {}).await.unwrap().into_inner();
    let ca = st.keys.iter().find(|k| k.purpose == "ssh-user" && k.state == "active").unwrap();
    assert_eq!(c.valid_before, ca.not_after, "8 h asked, capped at the CA key's end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_event_of_a_certificate_with_many_principals_keeps_its_serial() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut ci = bot_with(&b, &mut admin, "ci", ssh_rules(&["*"], &[], &[], &[], 0), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<String> = (0..200).map(|i| format!("login-{i:03}-{}", "x".repeat(40))).collect();
    let mut r = user_req(&user_key(dir.path(), "ed25519"), &[]);
    r.principals = many.clone();
    let c = ci.issue_ssh_certificate(r).await.unwrap().into_inner();
    assert!(shown(dir.path(), &c.certificate).contains(&many[199]));
    let e = last_audit(&mut admin, "ssh.issue").await;
    let d: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap();
    assert_eq!(d["serial"], c.serial.to_string(), "{d}");
    let listed = d["principals"].as_array().unwrap().len();
    assert_eq!(listed as u64 + d["principals_omitted"].as_u64().unwrap(), 200, "{d}");
    assert!(listed > 10, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_default_caps_a_role_without_one() {
    let b = Broker::start_configured(tempfile::tempdir().unwrap(), |c| c.ssh.max_ttl_seconds = Some(900)).await;
    let mut admin = b.admin().await;
    let mut ci = bot_with(&b, &mut admin, "ci", ssh_rules(&["deploy"], &[], &[], &[], 0), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut r = user_req(&user_key(dir.path(), "ed25519"), &["deploy"]);
    r.ttl_seconds = 30 * 24 * 3600;
    let c = ci.issue_ssh_certificate(r).await.unwrap().into_inner();
    assert_eq!(c.valid_before - c.valid_after, 900 + 60, "capped by ssh.max_ttl_seconds");
    // Empty role extensions: the OpenSSH defaults.
    let s = shown(dir.path(), &c.certificate);
    for e in ["permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc"] {
        assert!(s.contains(e), "{e}: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_or_extension_no_role_grants_is_refused() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut ci = bot_with(&b, &mut admin, "ci", ssh_rules(&["deploy"], &[], &["permit-pty"], &[], 0), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = user_key(dir.path(), "ed25519");
    let e = ci.issue_ssh_certificate(user_req(&key, &["deploy", "root"])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("\"root\"") && e.message().contains("ssh.principals"), "{}", e.message());
    let e = last_audit(&mut admin, "ssh.issue").await;
    assert_eq!(e.outcome, "denied");
    let mut r = user_req(&key, &["deploy"]);
    r.extensions = strings(&["permit-port-forwarding"]);
    let e = ci.issue_ssh_certificate(r).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("permit-port-forwarding"), "{}", e.message());
    // A user rule grants no host certificate, and a host name pattern no login.
    let mut r = user_req(&key, &["deploy"]);
    r.cert_type = "host".into();
    assert_eq!(ci.issue_ssh_certificate(r).await.unwrap_err().code(), Code::PermissionDenied);
    // Malformed requests name the field.
    for (r, field) in [
        (user_req("ssh-dss AAAAB3NzaC1kc3MAAACBAP", &["deploy"]), "public_key"),
        (user_req(&key, &[]), "principals"),
        (user_req(&key, &["de ploy"]), "principals[0]"),
        (pb::IssueSshCertificateRequest { cert_type: "admin".into(), ..user_req(&key, &["deploy"]) }, "cert_type"),
        (user_req(&format!("ssh-ed25519 {}", "A".repeat(17 * 1024)), &["deploy"]), "public_key"),
    ] {
        let e = ci.issue_ssh_certificate(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {}", e.message());
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_option_template_whose_attribute_is_missing_refuses_issuance() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    // A token join sets join.method and join.token, no join.source_ip.
    let rules = ssh_rules(&["deploy"], &[], &[], &[("source-address", "{{join.source_ip}}/32")], 0);
    let mut ci = bot_with(&b, &mut admin, "ci", rules, vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let e = ci.issue_ssh_certificate(user_req(&user_key(dir.path(), "ed25519"), &["deploy"])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("join.source_ip"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_certificates_carry_only_allowed_host_names() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut web = bot_with(&b, &mut admin, "web", ssh_rules(&[], &["*.{{bot.name}}.example.org"], &[], &[], 0), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = user_key(dir.path(), "ecdsa");
    let host = |names: &[&str]| pb::IssueSshCertificateRequest { cert_type: "host".into(), public_key: key.clone(), principals: strings(names), ..Default::default() };
    let c = web.issue_ssh_certificate(host(&["h1.web.example.org", "h2.web.example.org"])).await.unwrap().into_inner();
    let s = shown(dir.path(), &c.certificate);
    assert!(s.contains("ecdsa-sha2-nistp256-cert-v01@openssh.com host certificate"), "{s}");
    assert!(s.contains("h1.web.example.org") && s.contains("Extensions: (none)"), "{s}");
    let ca_fp = fingerprint(dir.path(), &c.host_ca_public_keys[0]);
    assert!(s.contains(&ca_fp), "signed by the host CA: {s}");
    let e = web.issue_ssh_certificate(host(&["h1.db.example.org"])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut r = host(&["h1.web.example.org"]);
    r.extensions = strings(&["permit-pty"]);
    assert_eq!(web.issue_ssh_certificate(r).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_bot_gets_no_ssh_certificate() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut ci = bot_with(&b, &mut admin, "ci", ssh_rules(&["deploy"], &[], &[], &[], 0), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = user_key(dir.path(), "ed25519");
    ci.issue_ssh_certificate(user_req(&key, &["deploy"])).await.unwrap();
    let target = pb::LockTarget { bot: "ci".into(), ..Default::default() };
    admin.create_lock(pb::Lock { name: "l1".into(), target: Some(target), reason: "incident".into(), ..Default::default() }).await.unwrap();
    let e = ci.issue_ssh_certificate(user_req(&key, &["deploy"])).await.unwrap_err();
    assert_eq!(e.message(), sigil_broker::service::locks::LOCKED, "{e:?}");
    assert!(ci.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_bot_identity_gets_no_ssh_certificate() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let allow = pb::RoleAllow { ssh: Some(ssh_rules(&["deploy"], &[], &[], &[], 0)), ..Default::default() };
    admin.create_role(pb::Role { name: "ci".into(), allow: Some(allow), ..Default::default() }).await.unwrap();
    admin.create_bot(pb::Bot { name: "ci".into(), roles: vec!["ci".into()], max_session_ttl_seconds: 1, ..Default::default() }).await.unwrap();
    let t = pb::JoinToken { name: "t".into(), bot: "ci".into(), expires_at: now() + 600, max_uses: 1, ..Default::default() };
    let secret = admin.create_join_token(t).await.unwrap().into_inner().secret;
    let mut ci = b.join_as(&secret).await.unwrap();
    // Wall-clock expiry of a one-second identity on a real broker: wait past it.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let dir = tempfile::tempdir().unwrap();
    let e = ci.issue_ssh_certificate(user_req(&user_key(dir.path(), "ed25519"), &["deploy"])).await.unwrap_err();
    assert!(matches!(e.code(), Code::Unauthenticated | Code::Unavailable | Code::PermissionDenied), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_validation_names_the_bad_ssh_field() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    for (ssh, field) in [
        (ssh_rules(&["de ploy"], &[], &[], &[], 0), "allow.ssh.principals[0]"),
        (ssh_rules(&["{{bot.name"], &[], &[], &[], 0), "allow.ssh.principals[0]"),
        (ssh_rules(&[], &["a,b"], &[], &[], 0), "allow.ssh.host_names[0]"),
        (ssh_rules(&["x"], &[], &["permit-everything"], &[], 0), "allow.ssh.extensions[0]"),
        (ssh_rules(&["x"], &[], &[], &[("no-such-option", "1")], 0), "allow.ssh.critical_options.no-such-option"),
        (ssh_rules(&["x"], &[], &[], &[("source-address", "everywhere")], 0), "allow.ssh.critical_options.source-address"),
        (ssh_rules(&["x"], &[], &[], &[], -1), "allow.ssh.max_ttl_seconds"),
    ] {
        let allow = pb::RoleAllow { ssh: Some(ssh), ..Default::default() };
        let e = admin.create_role(pb::Role { name: "bad".into(), allow: Some(allow), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {}", e.message());
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_writer_cannot_grant_ssh_principals_it_does_not_hold() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let write_roles = vec![pb::Rule { resources: strings(&["role"]), verbs: strings(&["create", "update", "read"]), names: vec![] }];
    let mut lead = bot_with(&b, &mut admin, "lead", ssh_rules(&["deploy"], &["*.web.example.org"], &["permit-pty"], &[], 0), write_roles).await;
    let role = |name: &str, ssh: pb::SshRules| pb::Role { name: name.into(), allow: Some(pb::RoleAllow { ssh: Some(ssh), ..Default::default() }), ..Default::default() };
    for (name, ssh) in [
        ("root", ssh_rules(&["root"], &[], &["permit-pty"], &[], 0)),
        ("any", ssh_rules(&["*"], &[], &["permit-pty"], &[], 0)),
        ("hosts", ssh_rules(&[], &["*.example.org"], &[], &[], 0)),
        ("wider-ext", ssh_rules(&["deploy"], &[], &["permit-pty", "permit-port-forwarding"], &[], 0)),
    ] {
        let e = lead.create_role(role(name, ssh)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}: {}", e.message());
        assert!(e.message().contains("escalate"), "{name}: {}", e.message());
    }
    // Within its own grants: allowed.
    lead.create_role(role("deployers", ssh_rules(&["deploy"], &["h1.web.example.org"], &["permit-pty"], &[("force-command", "/bin/true")], 60))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_user_ca_rotation_publishes_then_signs_with_the_new_key() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut ci = bot_with(&b, &mut admin, "ci", ssh_rules(&["deploy"], &[], &[], &[], 0), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = user_key(dir.path(), "ed25519");
    let before = ci.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.unwrap().into_inner();
    assert_eq!(before.user_ca_public_keys.len(), 1);
    let old_fp = fingerprint(dir.path(), &before.user_ca_public_keys[0]);
    let rotate = |phase: &str| pb::RotateCaRequest { purpose: "ssh-user".into(), phase: phase.into(), force: true };
    let st = admin.rotate_ca(rotate("prepare")).await.unwrap().into_inner();
    assert_eq!(st.phases.get("ssh-user").map(String::as_str), Some("prepared"));
    assert_eq!(st.phases.get("ssh-host").map(String::as_str), Some("standby"), "the host CA rotates on its own");
    let prepared = ci.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.unwrap().into_inner();
    assert_eq!(prepared.user_ca_public_keys.len(), 2, "prepare publishes the new key beside the active one");
    assert_eq!(prepared.host_ca_public_keys, before.host_ca_public_keys);
    let new_line = prepared.user_ca_public_keys.iter().find(|l| !before.user_ca_public_keys.contains(l)).unwrap();
    let new_fp = fingerprint(dir.path(), new_line);
    let s = shown(dir.path(), &ci.issue_ssh_certificate(user_req(&key, &["deploy"])).await.unwrap().into_inner().certificate);
    assert!(s.contains(&old_fp), "still signed by the active key: {s}");
    admin.rotate_ca(rotate("activate")).await.unwrap();
    let s = shown(dir.path(), &ci.issue_ssh_certificate(user_req(&key, &["deploy"])).await.unwrap().into_inner().certificate);
    assert!(s.contains(&new_fp), "activate signs with the new key: {s}");
    let after = ci.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.unwrap().into_inner();
    assert_eq!(after.user_ca_public_keys.len(), 2, "the previous key stays published");
    admin.rotate_ca(rotate("retire")).await.unwrap();
    let retired = ci.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.unwrap().into_inner();
    assert_eq!(retired.user_ca_public_keys, vec![new_line.clone()]);
    // sigil ca status shows both SSH purposes with ssh-keygen's fingerprint.
    let st = admin.get_ca_status(pb::GetCaStatusRequest {}).await.unwrap().into_inner();
    let k = st.keys.iter().find(|k| k.purpose == "ssh-user" && k.state == "active").unwrap();
    assert_eq!(k.fingerprint, new_fp);
    assert_eq!(k.alg, "ed25519");
    assert!(st.keys.iter().any(|k| k.purpose == "ssh-host" && k.state == "active"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_and_rsa_cas_sign_what_ssh_keygen_verifies() {
    for (alg, key_prefix, sig) in [("ecdsa", "ecdsa-sha2-nistp256 ", "ECDSA"), ("rsa", "ssh-rsa ", "RSA")] {
        let b = Broker::start_configured(tempfile::tempdir().unwrap(), |c| c.ssh.key_alg = Some(alg.into())).await;
        let mut admin = b.admin().await;
        let mut ci = bot_with(&b, &mut admin, "ci", ssh_rules(&["deploy"], &[], &[], &[], 0), vec![]).await;
        let dir = tempfile::tempdir().unwrap();
        let c = ci.issue_ssh_certificate(user_req(&user_key(dir.path(), "ed25519"), &["deploy"])).await.unwrap().into_inner();
        assert!(c.user_ca_public_keys[0].starts_with(key_prefix), "{alg}: {}", c.user_ca_public_keys[0]);
        let s = shown(dir.path(), &c.certificate);
        let fp = fingerprint(dir.path(), &c.user_ca_public_keys[0]);
        let using = if alg == "rsa" { "rsa-sha2-256" } else { "ecdsa-sha2-nistp256" };
        assert!(s.contains(&format!("Signing CA: {sig} {fp} (using {using})")), "{alg}: {s}");
        b.stop().await;
    }
}

/// Two replicas on PostgreSQL; role and bot `ci` (login `deploy`) created on
/// A, joined on B. Returns A, B, A's admin and the bot's client on B.
async fn ci_bot_on_replica_b() -> (Broker, Broker, Client, Client) {
    let (a, b, _url) = common::replicas_on_postgres(|_| {}).await;
    let mut admin_a = a.admin().await;
    let allow = pb::RoleAllow { ssh: Some(ssh_rules(&["deploy"], &[], &[], &[], 0)), ..Default::default() };
    admin_a.create_role(pb::Role { name: "ci".into(), allow: Some(allow), ..Default::default() }).await.unwrap();
    admin_a.create_bot(pb::Bot { name: "ci".into(), roles: vec!["ci".into()], ..Default::default() }).await.unwrap();
    let t = pb::JoinToken { name: "t".into(), bot: "ci".into(), expires_at: now() + 600, max_uses: 1, ..Default::default() };
    let secret = admin_a.create_join_token(t).await.unwrap().into_inner().secret;
    let on_b = b.join_as(&secret).await.unwrap();
    (a, b, admin_a, on_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_publishes_and_signs_with_ssh_keys_rotated_on_another() {
    let (a, _b, mut admin_a, mut on_b) = ci_bot_on_replica_b().await;
    let before = on_b.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.unwrap().into_inner();
    let same = a.admin().await.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.unwrap().into_inner();
    assert_eq!(before, same, "both replicas use the keys the first one stored");
    let rotate = |phase: &str| pb::RotateCaRequest { purpose: "ssh-host".into(), phase: phase.into(), force: true };
    admin_a.rotate_ca(rotate("prepare")).await.unwrap();
    admin_a.rotate_ca(rotate("activate")).await.unwrap();
    let new_line = admin_a.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.unwrap().into_inner().host_ca_public_keys;
    assert_eq!(new_line.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let new_fp = fingerprint(dir.path(), new_line.iter().find(|l| !before.host_ca_public_keys.contains(l)).unwrap());
    // Host certificates need host_names: the role is updated on A too.
    let mut role = admin_a.get_role(pb::GetRequest { name: "ci".into() }).await.unwrap().into_inner();
    role.allow.as_mut().unwrap().ssh.as_mut().unwrap().host_names = strings(&["*.example.org"]);
    admin_a.update_role(role).await.unwrap();
    let key = user_key(dir.path(), "ed25519");
    let req = pb::IssueSshCertificateRequest { cert_type: "host".into(), public_key: key, principals: strings(&["h.example.org"]), ..Default::default() };
    let started = std::time::Instant::now();
    loop {
        let got = on_b.issue_ssh_certificate(req.clone()).await.map(|r| r.into_inner());
        if let Ok(c) = &got {
            if c.host_ca_public_keys.len() == 2 && shown(dir.path(), &c.certificate).contains(&new_fp) {
                break;
            }
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "B never signed with the key activated on A: {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!("replica B signed with the ssh-host key activated on A after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_answers_the_same_krl_bytes_and_its_version_grows_with_each_revocation() {
    let (_a, _b, mut admin_a, mut on_b) = ci_bot_on_replica_b().await;
    let dir = tempfile::tempdir().unwrap();
    let key = user_key(dir.path(), "ed25519");
    let ask = pb::GetSshCaPublicKeysRequest { include_krl: true, known_krl_sha256: Vec::new() };
    let mut version = 0;
    for round in 0..2 {
        let c = on_b.issue_ssh_certificate(user_req(&key, &["deploy"])).await.unwrap().into_inner();
        admin_a.revoke_svids(pb::RevokeSvidsRequest { serials: vec![c.serial.to_string()], ..Default::default() }).await.unwrap();
        let started = std::time::Instant::now();
        let (on_a, on_b_krl) = loop {
            let x = admin_a.get_ssh_ca_public_keys(ask.clone()).await.unwrap().into_inner();
            let y = on_b.get_ssh_ca_public_keys(ask.clone()).await.unwrap().into_inner();
            let listed = |k: &pb::SshCaPublicKeys| !krl_check(dir.path(), &k.revoked_keys_krl, &c.certificate).0;
            if listed(&x) && listed(&y) {
                break (x, y);
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "round {round}: a replica never listed the revocation");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(on_a.revoked_keys_krl, on_b_krl.revoked_keys_krl, "round {round}: the same entries make the same bytes on every replica");
        assert_eq!(on_a.krl_sha256, on_b_krl.krl_sha256);
        let v = sigil_core::ssh::krl::Krl::decode(&on_a.revoked_keys_krl).unwrap().version;
        assert!(v > version, "round {round}: version {v} after {version}");
        version = v;
        let known = pb::GetSshCaPublicKeysRequest { include_krl: true, known_krl_sha256: on_a.krl_sha256.clone() };
        assert!(on_b.get_ssh_ca_public_keys(known).await.unwrap().into_inner().revoked_keys_krl.is_empty(), "A's list is current on B");
    }
}

/// `ssh-keygen -Q -f KRL CERT`: (exit status ok, output).
fn krl_check(dir: &std::path::Path, krl: &[u8], cert: &str) -> (bool, String) {
    let (k, c) = (dir.join("revoked_keys.krl"), dir.join("q-cert.pub"));
    std::fs::write(&k, krl).unwrap();
    std::fs::write(&c, format!("{cert}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-Q", "-f", k.to_str().unwrap(), c.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen is needed (apt-get install openssh-client): {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

async fn served_krl(b: &Broker) -> Vec<u8> {
    let (status, ctype, body) = https_get(b, "/ssh/revoked_keys.krl").await;
    assert_eq!((status, ctype.as_str()), (200, "application/octet-stream"));
    assert!(body.starts_with(b"SSHKRL\n\0"), "{body:?}");
    body
}

#[tokio::test]
async fn the_krl_over_grpc_is_the_served_list_and_is_sent_again_only_when_it_changed() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut ci = bot_with(&b, &mut admin, "ci", ssh_rules(&["deploy"], &["web1.example.org"], &[], &[], 0), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = user_key(dir.path(), "ed25519");
    let one = ci.issue_ssh_certificate(user_req(&key, &["deploy"])).await.unwrap().into_inner();
    let ask = |known: Vec<u8>| pb::GetSshCaPublicKeysRequest { include_krl: true, known_krl_sha256: known };
    let plain = ci.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest::default()).await.unwrap().into_inner();
    assert!(plain.revoked_keys_krl.is_empty() && plain.krl_sha256.is_empty(), "not asked, not sent");
    let first = ci.get_ssh_ca_public_keys(ask(Vec::new())).await.unwrap().into_inner();
    assert_eq!(first.revoked_keys_krl, served_krl(&b).await, "the same list as GET /ssh/revoked_keys.krl");
    assert_eq!(first.krl_sha256, sigil_core::ssh::krl::digest(&first.revoked_keys_krl).to_vec());
    assert_eq!(first.user_ca_public_keys, plain.user_ca_public_keys);
    let unchanged = ci.get_ssh_ca_public_keys(ask(first.krl_sha256.clone())).await.unwrap().into_inner();
    assert!(unchanged.revoked_keys_krl.is_empty(), "a current list is not sent again");
    assert_eq!(unchanged.krl_sha256, first.krl_sha256);
    admin.revoke_svids(pb::RevokeSvidsRequest { serials: vec![one.serial.to_string()], ..Default::default() }).await.unwrap();
    let changed = ci.get_ssh_ca_public_keys(ask(first.krl_sha256.clone())).await.unwrap().into_inner();
    assert_ne!(changed.krl_sha256, first.krl_sha256);
    let (ok, out) = krl_check(dir.path(), &changed.revoked_keys_krl, &one.certificate);
    assert!(!ok && out.contains("REVOKED"), "{out}");
    let e = ci.get_ssh_ca_public_keys(ask(vec![0; 31])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_ssh_certificate_is_on_the_served_krl_and_another_is_not() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    let mut ci = bot_with(&b, &mut admin, "ci", ssh_rules(&["deploy"], &["web1.example.org"], &[], &[], 0), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = user_key(dir.path(), "ed25519");
    let one = ci.issue_ssh_certificate(user_req(&key, &["deploy"])).await.unwrap().into_inner();
    let two = ci.issue_ssh_certificate(user_req(&key, &["deploy"])).await.unwrap().into_inner();
    let host_req = pb::IssueSshCertificateRequest { cert_type: "host".into(), public_key: key.clone(), principals: strings(&["web1.example.org"]), ..Default::default() };
    let host = ci.issue_ssh_certificate(host_req).await.unwrap().into_inner();
    // Nothing revoked yet: an empty list every certificate passes.
    let empty = served_krl(&b).await;
    for c in [&one, &two, &host] {
        let (ok, out) = krl_check(dir.path(), &empty, &c.certificate);
        assert!(ok && out.contains(": ok"), "{out}");
    }
    // Revoked by the serial as `ssh-keygen -L` prints it (decimal).
    let r = admin
        .revoke_svids(pb::RevokeSvidsRequest { serials: vec![one.serial.to_string()], reason: "keyCompromise".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.serials, vec![format!("ssh:{}", one.serial)]);
    let krl = served_krl(&b).await;
    let (ok, out) = krl_check(dir.path(), &krl, &one.certificate);
    assert!(!ok && out.contains("REVOKED"), "{out}");
    for c in [&two, &host] {
        let (ok, out) = krl_check(dir.path(), &krl, &c.certificate);
        assert!(ok && out.contains(": ok"), "{out}");
    }
    // Served from the cache: the same bytes (same KRL version) until the list changes.
    assert_eq!(served_krl(&b).await, krl);
    // Naming it again (also in the `ssh:` form) is no error; an unknown serial is.
    let again = admin.revoke_svids(pb::RevokeSvidsRequest { serials: vec![format!("ssh:{}", one.serial)], ..Default::default() }).await.unwrap();
    assert_eq!(again.into_inner().serials, vec![format!("ssh:{}", one.serial)]);
    assert_eq!(served_krl(&b).await, krl, "nothing new to list");
    let unknown = one.serial.wrapping_add(1).max(1).to_string();
    let e = admin.revoke_svids(pb::RevokeSvidsRequest { serials: vec![unknown.clone()], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains(&unknown) && e.message().contains("SSH"), "{}", e.message());
    let e = admin.revoke_svids(pb::RevokeSvidsRequest { serials: strings(&["ssh:0"]), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Revoking the bot instance covers its SSH user and host certificates too.
    let instance = two.key_id.rsplit(':').next().unwrap().to_string();
    let r = admin.revoke_svids(pb::RevokeSvidsRequest { bot_instance: instance, ..Default::default() }).await.unwrap().into_inner();
    for c in [&one, &two, &host] {
        assert!(r.serials.contains(&format!("ssh:{}", c.serial)), "{:?}", r.serials);
    }
    let krl = served_krl(&b).await;
    for c in [&two, &host] {
        let (ok, out) = krl_check(dir.path(), &krl, &c.certificate);
        assert!(!ok && out.contains("REVOKED"), "{out}");
    }
    // The listing: both CA keys' sections, three serials.
    let path = dir.path().join("revoked_keys.krl");
    std::fs::write(&path, &krl).unwrap();
    let listing = keygen(&["-Q", "-l", "-f", path.to_str().unwrap()]);
    for c in [&one, &two, &host] {
        assert!(listing.contains(&format!("serial: {}\n", c.serial)), "{listing}");
    }
    // SSH revocations never reach an X.509 CRL: the X.509 CRLs list only
    // the instance's bot identity.
    let (status, _, index) = https_get(&b, "/crl/index.json").await;
    assert_eq!(status, 200);
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let mut x509_entries = 0;
    for c in index["crls"].as_array().unwrap() {
        let (status, _, der) = https_get(&b, &format!("/crl/{}.crl", c["key_id"].as_str().unwrap())).await;
        assert_eq!(status, 200);
        let (_, crl) = <x509_parser::revocation_list::CertificateRevocationList as x509_parser::prelude::FromDer<_>>::from_der(&der).unwrap();
        x509_entries += crl.iter_revoked_certificates().count();
    }
    assert_eq!(x509_entries, 1, "the bot identity only");
}
