//! Certificates and private keys checked by the real `ssh-keygen`
//! (openssh-client): it parses each certificate and verifies its CA
//! signature, and loads each private key.

use super::cert::{self, CaSignature, CertKind, CertSpec};
use super::private_key::{self, PrivateParts};
use super::PublicKey;
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use std::process::Command;

fn keygen(args: &[&str]) -> String {
    let out = Command::new("ssh-keygen")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen is needed for these tests (apt-get install openssh-client): {e}"));
    assert!(out.status.success(), "ssh-keygen {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA key in memory: its SSH public key and a raw signer.
struct Ca {
    public: PublicKey,
    sign: Box<dyn Fn(&[u8]) -> Result<Vec<u8>, String>>,
}

fn cas() -> Vec<(&'static str, Ca)> {
    let ed = Ed25519KeyPair::generate().unwrap();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let ed_pub = PublicKey::ed25519(ed.public_key().as_ref()).unwrap();
    let ec_pub = PublicKey::ecdsa(ec.public_key().as_ref()).unwrap();
    let rp = rsa.public_key();
    let rsa_pub = PublicKey::rsa(rp.modulus().big_endian_without_leading_zero(), rp.exponent().big_endian_without_leading_zero()).unwrap();
    vec![
        ("ssh-ed25519", Ca { public: ed_pub, sign: Box::new(move |m| Ok(ed.sign(m).as_ref().to_vec())) }),
        (
            "ecdsa-sha2-nistp256",
            Ca { public: ec_pub, sign: Box::new(move |m| ec.sign(&SystemRandom::new(), m).map(|s| s.as_ref().to_vec()).map_err(|e| e.to_string())) },
        ),
        (
            "rsa-sha2-256",
            Ca {
                public: rsa_pub,
                sign: Box::new(move |m| {
                    let mut sig = vec![0; rsa.public_modulus_len()];
                    rsa.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig).map_err(|e| e.to_string())?;
                    Ok(sig)
                }),
            },
        ),
    ]
}

fn user_key(dir: &std::path::Path, ty: &str, bits: &str) -> PublicKey {
    let path = dir.join(format!("id_{ty}_{bits}"));
    keygen(&["-q", "-t", ty, "-b", bits, "-N", "", "-C", "test", "-f", path.to_str().unwrap()]);
    PublicKey::parse_line(&std::fs::read_to_string(path.with_extension("pub")).unwrap_or_else(|_| std::fs::read_to_string(format!("{}.pub", path.display())).unwrap())).unwrap()
}

fn spec(kind: CertKind, key: PublicKey) -> CertSpec {
    let user = kind == CertKind::User;
    CertSpec {
        kind,
        key,
        serial: 0x1234_5678_9abc_def0,
        key_id: "sigil:ci:inst-1".into(),
        principals: if user { vec!["deploy".into(), "root".into()] } else { vec!["web1.example.org".into()] },
        valid_after: 1_700_000_000,
        valid_before: 1_700_003_600,
        critical_options: if user { [("source-address".to_string(), "10.0.0.0/8".to_string())].into_iter().collect() } else { Default::default() },
        extensions: if user { ["permit-pty".to_string(), "permit-agent-forwarding".to_string()].into_iter().collect() } else { Default::default() },
        nonce: [7; 32],
    }
}

#[test]
fn ssh_keygen_reads_and_verifies_every_ca_and_key_type_combination() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<PublicKey> =
        [("ed25519", "256"), ("ecdsa", "256"), ("ecdsa", "384"), ("ecdsa", "521"), ("rsa", "2048")].iter().map(|(t, b)| user_key(dir.path(), t, b)).collect();
    for (sig_alg, ca) in cas() {
        for (i, key) in keys.iter().enumerate() {
            for kind in [CertKind::User, CertKind::Host] {
                let s = spec(kind, key.clone());
                let line = cert::sign(&s, &CaSignature { ca: &ca.public, sign: &*ca.sign }).unwrap();
                assert!(line.starts_with(key.key_type().cert_name()), "{line}");
                let path = dir.path().join(format!("c{i}-cert.pub"));
                std::fs::write(&path, format!("{line}\n")).unwrap();
                let shown = keygen(&["-L", "-f", path.to_str().unwrap()]);
                let want_kind = if kind == CertKind::User { "user certificate" } else { "host certificate" };
                assert!(shown.contains(&format!("Type: {} {want_kind}", key.key_type().cert_name())), "{shown}");
                assert!(shown.contains(&format!("{} (using {sig_alg})", ca.public.fingerprint())), "{sig_alg}: {shown}");
                assert!(shown.contains("Key ID: \"sigil:ci:inst-1\""), "{shown}");
                assert!(shown.contains("Serial: 1311768467463790320"), "{shown}");
                assert!(shown.contains(&format!("Public key: {}", key.fingerprint().split(':').next().unwrap_or_default())) || shown.contains(&key.fingerprint()), "{shown}");
                if kind == CertKind::User {
                    assert!(shown.contains("                deploy\n                root\n"), "{shown}");
                    assert!(shown.contains("source-address 10.0.0.0/8"), "{shown}");
                    assert!(shown.contains("permit-agent-forwarding\n                permit-pty"), "{shown}");
                    assert!(!shown.contains("permit-X11-forwarding"), "{shown}");
                } else {
                    assert!(shown.contains("web1.example.org"), "{shown}");
                }
            }
        }
    }
}

#[test]
fn the_ca_line_is_what_ssh_keygen_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    for (_, ca) in cas() {
        let path = dir.path().join("ca.pub");
        std::fs::write(&path, format!("{}\n", ca.public.to_line("sigil ssh-user CA"))).unwrap();
        let shown = keygen(&["-l", "-f", path.to_str().unwrap()]);
        assert!(shown.contains(&ca.public.fingerprint()), "{shown}");
    }
}

#[test]
fn a_certificate_without_principals_is_refused() {
    let (_, ca) = cas().remove(0);
    let mut s = spec(CertKind::User, ca.public.clone());
    s.principals.clear();
    let e = cert::sign(&s, &CaSignature { ca: &ca.public, sign: &*ca.sign }).unwrap_err();
    assert!(e.to_string().contains("valid for every"), "{e}");
    s.principals = vec!["a,b".into()];
    assert!(cert::sign(&s, &CaSignature { ca: &ca.public, sign: &*ca.sign }).is_err());
}

#[test]
fn ssh_keygen_loads_the_private_keys_written() {
    let dir = tempfile::tempdir().unwrap();
    let ed = Ed25519KeyPair::generate().unwrap();
    let ed_pub = PublicKey::ed25519(ed.public_key().as_ref()).unwrap();
    let seed = ed.seed().unwrap().as_be_bytes().unwrap();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let ec_pub = PublicKey::ecdsa(ec.public_key().as_ref()).unwrap();
    let d = ec.private_key().as_be_bytes().unwrap();
    for (name, public, parts) in
        [("ed", &ed_pub, PrivateParts::Ed25519 { seed: seed.as_ref() }), ("ec", &ec_pub, PrivateParts::Ecdsa { d: d.as_ref() })]
    {
        let pem = private_key::encode(public, &parts, "sigil", 0x0102_0304).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, pem.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        // -y derives the public key from the private file.
        let shown = keygen(&["-y", "-f", path.to_str().unwrap()]);
        assert_eq!(shown.split_whitespace().take(2).collect::<Vec<_>>(), public.to_line("").split(' ').collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn a_flag_critical_option_is_encoded_as_ssh_keygen_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ca) = cas().remove(0);
    let mut s = spec(CertKind::User, ca.public.clone());
    s.critical_options.insert("verify-required".into(), String::new());
    s.critical_options.insert("force-command".into(), "/usr/bin/uptime -p".into());
    let line = cert::sign(&s, &CaSignature { ca: &ca.public, sign: &*ca.sign }).unwrap();
    let path = dir.path().join("f-cert.pub");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let shown = keygen(&["-L", "-f", path.to_str().unwrap()]);
    // Sorted by name: force-command, source-address, verify-required (a flag: no value).
    assert!(shown.contains("force-command /usr/bin/uptime -p\n                source-address 10.0.0.0/8\n                verify-required\n"), "{shown}");
}
