//! OpenSSH Key Revocation Lists (`PROTOCOL.krl`), the file sshd reads with
//! `RevokedKeys` and `ssh-keygen -Q` checks keys against. Sigil writes only
//! the part it needs: per CA key, the serials of revoked certificates.
//!
//! Mistakes this module exists to prevent:
//! - a KRL sshd refuses to load (sshd then refuses every key: fail closed,
//!   but every login breaks): serials are sorted and unique, serial 0 is never
//!   written (OpenSSH cannot revoke it by serial), the CA key is its plain
//!   public key blob (an empty blob would revoke the serial under every CA);
//! - unbounded output: callers bound the entries (the broker refuses
//!   revocations beyond its limit), and this encoder writes 8 bytes a serial.

use super::wire::Writer;
use super::PublicKey;
use std::collections::{BTreeMap, BTreeSet};

/// `"SSHKRL\n\0"`.
const MAGIC: u64 = 0x5353_484b_524c_0a00;
const FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const CERT_SERIAL_LIST: u8 = 0x20;

/// What a KRL revokes: certificate serials per CA key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Krl {
    /// Increases each time the list changes (`krl_version`).
    pub version: u64,
    /// Unix seconds it was generated.
    pub generated: u64,
    /// Free text shown by `ssh-keygen -Q -l`.
    pub comment: String,
    /// Revoked serials, by the blob of the CA key that signed them.
    serials: BTreeMap<Vec<u8>, BTreeSet<u64>>,
}

impl Krl {
    /// An empty list.
    pub fn new(version: u64, generated: u64, comment: impl Into<String>) -> Self {
        Self { version, generated, comment: comment.into(), serials: BTreeMap::new() }
    }

    /// Lists the CA key `ca` even with no serial revoked (harmless; shows
    /// which keys the list covers).
    pub fn add_ca(&mut self, ca: &PublicKey) {
        self.serials.entry(ca.blob().to_vec()).or_default();
    }

    /// Revokes the certificate with `serial` signed by `ca`. Serial 0 cannot
    /// be revoked by serial (OpenSSH refuses it): returns `false`.
    pub fn revoke(&mut self, ca: &PublicKey, serial: u64) -> bool {
        if serial == 0 {
            return false;
        }
        self.serials.entry(ca.blob().to_vec()).or_default().insert(serial);
        true
    }

    /// Revoked serials in all.
    pub fn len(&self) -> usize {
        self.serials.values().map(BTreeSet::len).sum()
    }

    /// Whether `other` covers the same CA keys and serials (version,
    /// date and comment aside).
    pub fn same_entries(&self, other: &Krl) -> bool {
        self.serials == other.serials
    }

    /// Nothing revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The binary KRL.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(MAGIC).u32(FORMAT_VERSION).u64(self.version).u64(self.generated).u64(0).string(b"").string(self.comment.as_bytes());
        for (ca, serials) in &self.serials {
            let mut list = Writer::new();
            for s in serials {
                list.u64(*s);
            }
            let mut section = Writer::new();
            section.string(ca).string(b"");
            if !serials.is_empty() {
                section.raw(&[CERT_SERIAL_LIST]).string(list.as_bytes());
            }
            w.raw(&[SECTION_CERTIFICATES]).string(section.as_bytes());
        }
        w.into_bytes()
    }
}

/// SHA-256 of an encoded KRL: the broker and the agent compare it so that a
/// poll transfers the list only when it changed.
pub fn digest(encoded: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, encoded);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `encoded` starts as a KRL of the format this module writes (magic
/// and format version). A file sshd cannot load makes it refuse every key, so
/// nothing else is handed to `RevokedKeys`.
pub fn has_krl_header(encoded: &[u8]) -> bool {
    encoded.len() >= 44 && encoded[..8] == MAGIC.to_be_bytes() && encoded[8..12] == FORMAT_VERSION.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::cert::{self, CaSignature, CertKind, CertSpec};
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use std::process::Command;

    fn keygen(args: &[&str]) -> (bool, String) {
        let out = Command::new("ssh-keygen")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ssh-keygen is needed for these tests (apt-get install openssh-client): {e}"));
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    #[test]
    fn an_encoded_list_has_the_header_and_its_digest_changes_with_the_entries() {
        let empty = Krl::new(1, 2, "c").encode();
        assert!(has_krl_header(&empty));
        assert!(!has_krl_header(b"SSHKRL\n\0"), "too short for a header");
        assert!(!has_krl_header(&[b"<html>".as_slice(), &empty[6..]].concat()));
        let mut other_format = empty.clone();
        other_format[11] = 2;
        assert!(!has_krl_header(&other_format));
        assert_eq!(digest(&empty), digest(&Krl::new(1, 2, "c").encode()));
        assert_ne!(digest(&empty), digest(&Krl::new(2, 2, "c").encode()));
    }

    struct Ca(Ed25519KeyPair, PublicKey);

    fn ca() -> Ca {
        let k = Ed25519KeyPair::generate().unwrap();
        let p = PublicKey::ed25519(k.public_key().as_ref()).unwrap();
        Ca(k, p)
    }

    fn cert_file(dir: &std::path::Path, ca: &Ca, serial: u64, name: &str) -> String {
        let subject = ca_key_only();
        let spec = CertSpec {
            kind: CertKind::User,
            key: subject,
            serial,
            key_id: "sigil:t:i".into(),
            principals: vec!["deploy".into()],
            valid_after: 1_700_000_000,
            valid_before: 4_000_000_000,
            critical_options: Default::default(),
            extensions: Default::default(),
            nonce: [1; 32],
        };
        let sign = |m: &[u8]| Ok(ca.0.sign(m).as_ref().to_vec());
        let line = cert::sign(&spec, &CaSignature { ca: &ca.1, sign: &sign }).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, format!("{line}\n")).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn ca_key_only() -> PublicKey {
        let k = Ed25519KeyPair::generate().unwrap();
        PublicKey::ed25519(k.public_key().as_ref()).unwrap()
    }

    #[test]
    fn ssh_keygen_finds_the_revoked_serial_under_its_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (ca(), ca());
        let mut krl = Krl::new(7, 1_800_000_000, "sigil ssh-user");
        krl.revoke(&a.1, 0xfedc_ba98_7654_3210);
        krl.revoke(&a.1, 5);
        krl.revoke(&a.1, 5);
        krl.add_ca(&b.1);
        assert!(!krl.revoke(&a.1, 0));
        assert_eq!(krl.len(), 2);
        let path = dir.path().join("revoked_keys.krl");
        std::fs::write(&path, krl.encode()).unwrap();
        let krl_path = path.to_str().unwrap();

        let revoked = cert_file(dir.path(), &a, 0xfedc_ba98_7654_3210, "r-cert.pub");
        let (ok, out) = keygen(&["-Q", "-f", krl_path, &revoked]);
        assert!(!ok && out.contains("REVOKED"), "{out}");
        // Same serial under another CA, another serial under the same CA: not revoked.
        for (c, serial, name) in [(&b, 0xfedc_ba98_7654_3210, "b-cert.pub"), (&a, 6, "o-cert.pub")] {
            let other = cert_file(dir.path(), c, serial, name);
            let (ok, out) = keygen(&["-Q", "-f", krl_path, &other]);
            assert!(ok && out.contains(": ok") && !out.contains("REVOKED"), "{out}");
        }
        // The listing shows both serials under the CA key, and the header.
        let (ok, out) = keygen(&["-Q", "-l", "-f", krl_path]);
        assert!(ok, "{out}");
        assert!(out.contains("# KRL version 7"), "{out}");
        assert!(out.contains("# Comment: sigil ssh-user"), "{out}");
        assert!(out.contains("serial: 5\n") && out.contains(&format!("serial: {}\n", 0xfedc_ba98_7654_3210u64)), "{out}");
    }

    #[test]
    fn an_empty_list_loads_and_revokes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = ca();
        let mut krl = Krl::new(1, 1_800_000_000, "");
        krl.add_ca(&a.1);
        assert!(krl.is_empty());
        let path = dir.path().join("empty.krl");
        std::fs::write(&path, krl.encode()).unwrap();
        let c = cert_file(dir.path(), &a, 9, "c-cert.pub");
        let (ok, out) = keygen(&["-Q", "-f", path.to_str().unwrap(), &c]);
        assert!(ok && out.contains(": ok"), "{out}");
    }
}
