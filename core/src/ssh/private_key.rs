//! Unencrypted OpenSSH private key files (`openssh-key-v1`, OpenSSH
//! `PROTOCOL.key`): what `ssh -i` and `sshd HostKey` read. Encoding only;
//! the caller generates the key and passes its raw parts, and writes the
//! result with the private file writer (0600).
//!
//! ```text
//! "openssh-key-v1\0" string "none" string "none" string "" uint32 1
//! string public key blob
//! string private section: uint32 check, uint32 check (equal, random),
//!        string type, private fields, string comment, padding 1 2 3 ... to 8
//! ```

use super::pubkey::{KeyType, PublicKey};
use super::wire::Writer;
use super::SshError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

/// The private parts of a key, big-endian integers.
pub enum PrivateParts<'a> {
    /// Ed25519: the 32-byte seed (the public key comes from [`PublicKey`]).
    Ed25519 {
        /// Seed.
        seed: &'a [u8],
    },
    /// ECDSA: the private scalar.
    Ecdsa {
        /// Scalar `d`.
        d: &'a [u8],
    },
    /// RSA: `d`, `iqmp` (q^-1 mod p), `p`, `q` (n and e come from the public key).
    Rsa {
        /// Private exponent.
        d: &'a [u8],
        /// q^-1 mod p.
        iqmp: &'a [u8],
        /// Prime p.
        p: &'a [u8],
        /// Prime q.
        q: &'a [u8],
    },
}

impl std::fmt::Debug for PrivateParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateParts(<redacted>)")
    }
}

/// The PEM file (`-----BEGIN OPENSSH PRIVATE KEY-----`), unencrypted.
/// `check` is a random value (it lets a reader detect a wrong passphrase;
/// unencrypted files still carry it).
pub fn encode(public: &PublicKey, private: &PrivateParts<'_>, comment: &str, check: u32) -> Result<Zeroizing<String>, SshError> {
    let mut sec = Writer::new();
    sec.u32(check).u32(check).string(public.key_type().name());
    let mismatch = || SshError::field("private_key", "the private parts do not match the public key's type");
    match (public.key_type(), private) {
        (KeyType::Ed25519, PrivateParts::Ed25519 { seed }) => {
            let pk = &public.fields()[4..];
            if seed.len() != 32 {
                return Err(SshError::field("private_key", "an Ed25519 seed is 32 bytes"));
            }
            let mut both = Zeroizing::new(seed.to_vec());
            both.extend_from_slice(pk);
            sec.string(pk).string(&*both);
        }
        (KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521, PrivateParts::Ecdsa { d }) => {
            // Curve name and point, as in the public blob.
            sec.raw(public.fields()).mpint(d);
        }
        (KeyType::Rsa, PrivateParts::Rsa { d, iqmp, p, q }) => {
            let mut r = super::wire::Reader::new(public.fields());
            let e = r.positive_mpint().ok_or_else(mismatch)?;
            let n = r.positive_mpint().ok_or_else(mismatch)?;
            sec.mpint(n).mpint(e).mpint(d).mpint(iqmp).mpint(p).mpint(q);
        }
        _ => return Err(mismatch()),
    }
    sec.string(comment);
    let mut pad = 1u8;
    while sec.as_bytes().len() % 8 != 0 {
        sec.raw(&[pad]);
        pad += 1;
    }
    let sec = Zeroizing::new(sec.into_bytes());
    let mut w = Writer::new();
    w.raw(b"openssh-key-v1\0").string("none").string("none").string([]).u32(1).string(public.blob()).string(&*sec);
    let body = Zeroizing::new(STANDARD.encode(w.into_bytes()));
    let mut out = Zeroizing::new(String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
    for chunk in body.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    Ok(out)
}
