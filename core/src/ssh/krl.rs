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

use super::wire::{Reader, Writer};
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

/// Why bytes are not a KRL of the form this module writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an OpenSSH KRL of the form Sigil writes: {0}")]
pub struct KrlError(&'static str);

/// Largest CA key blob accepted in a section (an RSA-16384 key is ~2 KiB).
const MAX_CA_BLOB: usize = 16 * 1024;

impl Krl {
    /// Reads back a KRL of exactly the form [`Krl::encode`] writes: the header
    /// (no flags, empty reserved field), then only certificate sections, each
    /// a CA key with at most one list of ascending, unique, non-zero serials,
    /// and nothing after. A file sshd would read differently, or refuse (and
    /// then refuse every key), is an error.
    pub fn decode(encoded: &[u8]) -> Result<Krl, KrlError> {
        let mut r = Reader::new(encoded);
        let short = KrlError("truncated");
        if r.u64().ok_or(short)? != MAGIC {
            return Err(KrlError("no KRL magic"));
        }
        if r.u32().ok_or(short)? != FORMAT_VERSION {
            return Err(KrlError("another format version"));
        }
        let version = r.u64().ok_or(short)?;
        let generated = r.u64().ok_or(short)?;
        if r.u64().ok_or(short)? != 0 || !r.string().ok_or(short)?.is_empty() {
            return Err(KrlError("flags or reserved field set"));
        }
        let comment = std::str::from_utf8(r.string().ok_or(short)?).map_err(|_| KrlError("comment is not UTF-8"))?;
        let mut krl = Krl::new(version, generated, comment);
        while !r.is_empty() {
            if r.u8().ok_or(short)? != SECTION_CERTIFICATES {
                return Err(KrlError("a section other than certificates"));
            }
            let mut section = Reader::new(r.string().ok_or(short)?);
            let ca = section.string().ok_or(short)?;
            if ca.is_empty() || ca.len() > MAX_CA_BLOB {
                return Err(KrlError("a section without a CA key (it would revoke under every CA) or with an oversized one"));
            }
            if !section.string().ok_or(short)?.is_empty() {
                return Err(KrlError("reserved field set in a section"));
            }
            let mut serials = BTreeSet::new();
            if !section.is_empty() {
                if section.u8().ok_or(short)? != CERT_SERIAL_LIST {
                    return Err(KrlError("a certificate subsection other than a serial list"));
                }
                let mut list = Reader::new(section.string().ok_or(short)?);
                let mut last = 0u64;
                while !list.is_empty() {
                    let serial = list.u64().ok_or(KrlError("a serial list not made of 8-byte serials"))?;
                    if serial <= last {
                        return Err(KrlError("serials not ascending, repeated or 0"));
                    }
                    last = serial;
                    serials.insert(serial);
                }
                if !section.is_empty() {
                    return Err(KrlError("more than one subsection in a section"));
                }
            }
            if krl.serials.insert(ca.to_vec(), serials).is_some() {
                return Err(KrlError("a CA key in two sections"));
            }
        }
        Ok(krl)
    }
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
    fn a_written_list_reads_back_and_anything_else_is_refused() {
        let ca = ca();
        let mut krl = Krl::new(7, 1_800_000_000, "c");
        krl.add_ca(&ca.1);
        for s in [9, 3, 200] {
            krl.revoke(&ca.1, s);
        }
        let bytes = krl.encode();
        assert_eq!(Krl::decode(&bytes), Ok(krl.clone()));
        assert_eq!(Krl::decode(&Krl::new(0, 0, "").encode()), Ok(Krl::new(0, 0, "")));
        assert_eq!(digest(&bytes), digest(&krl.encode()));
        assert_ne!(digest(&bytes), digest(&Krl::new(8, 1_800_000_000, "c").encode()));
        let refused = |b: &[u8], why: &str| assert!(Krl::decode(b).is_err(), "{why}");
        refused(&bytes[..bytes.len() - 1], "truncated");
        refused(&[bytes.as_slice(), &[0]].concat(), "a trailing byte");
        refused(&[b"<html>\n\0".as_slice(), &bytes[8..]].concat(), "no magic");
        let mut other = bytes.clone();
        other[11] = 2;
        refused(&other, "another format version");
        let mut w = Writer::new();
        w.u64(MAGIC).u32(FORMAT_VERSION).u64(1).u64(0).u64(0).string(b"").string(b"");
        let header = w.into_bytes();
        let section = |body: &[u8], kind: u8| {
            let mut w = Writer::new();
            w.raw(&[kind]).string(body);
            [header.as_slice(), w.as_bytes()].concat()
        };
        let body = |ca: &[u8], serials: &[u64]| {
            let mut list = Writer::new();
            for s in serials {
                list.u64(*s);
            }
            let mut w = Writer::new();
            w.string(ca).string(b"").raw(&[CERT_SERIAL_LIST]).string(list.as_bytes());
            w.into_bytes()
        };
        assert!(Krl::decode(&section(&body(ca.1.blob(), &[1, 2]), SECTION_CERTIFICATES)).is_ok());
        refused(&section(&body(b"", &[1]), SECTION_CERTIFICATES), "an empty CA key revokes under every CA");
        refused(&section(&body(ca.1.blob(), &[2, 1]), SECTION_CERTIFICATES), "descending");
        refused(&section(&body(ca.1.blob(), &[0]), SECTION_CERTIFICATES), "serial 0");
        refused(&section(&body(ca.1.blob(), &[1, 1]), SECTION_CERTIFICATES), "repeated");
        refused(&section(&body(ca.1.blob(), &[1]), 2), "an explicit-key section");
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
