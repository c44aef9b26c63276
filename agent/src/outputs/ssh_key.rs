//! The key pair of an SSH certificate, generated here (the private key never
//! leaves the machine) and encoded as an unencrypted OpenSSH private key file
//! (`sigil_core::ssh::private_key`), which `ssh -i` and sshd `HostKey` read.
//!
//! RSA: aws-lc-rs exposes the private key only as PKCS#8, so its CRT parts are
//! read from that DER (PKCS#1 `RSAPrivateKey`, RFC 8017 A.1.2) by the small
//! reader below; anything but the expected shape is an error.

use crate::config_ssh::SshKeyType;
use aws_lc_rs::encoding::{AsBigEndian, AsDer};
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use sigil_core::ssh::private_key::{self, PrivateParts};
use sigil_core::ssh::PublicKey;
use zeroize::Zeroizing;

/// A generated key: its public key and the private key file.
pub struct SshKey {
    /// The public key (certified by the broker).
    pub public: PublicKey,
    /// `-----BEGIN OPENSSH PRIVATE KEY-----` file, unencrypted.
    pub private_pem: Zeroizing<String>,
}

impl std::fmt::Debug for SshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshKey({:?}, <private key redacted>)", self.public)
    }
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshKeyError {
    /// The crypto library failed to generate or export the key.
    #[error("cannot generate the {0} key")]
    Generate(&'static str),
    /// The exported RSA key is not the PKCS#8 / PKCS#1 shape expected.
    #[error("unexpected RSA private key encoding: {0}")]
    RsaDer(&'static str),
    /// The OpenSSH encoding refused the key.
    #[error(transparent)]
    Ssh(#[from] sigil_core::ssh::SshError),
}

/// RSA modulus size of generated keys.
const RSA_BITS: aws_lc_rs::rsa::KeySize = aws_lc_rs::rsa::KeySize::Rsa3072;

/// Generates a key of type `t`; `comment` goes into the private key file.
pub fn generate(t: SshKeyType, comment: &str) -> Result<SshKey, SshKeyError> {
    let check = random_u32()?;
    match t {
        SshKeyType::Ed25519 => {
            let kp = Ed25519KeyPair::generate().map_err(|_| SshKeyError::Generate("ed25519"))?;
            let seed = kp.seed().and_then(|s| s.as_be_bytes()).map_err(|_| SshKeyError::Generate("ed25519"))?;
            let public = PublicKey::ed25519(kp.public_key().as_ref())?;
            let private_pem = private_key::encode(&public, &PrivateParts::Ed25519 { seed: seed.as_ref() }, comment, check)?;
            Ok(SshKey { public, private_pem })
        }
        SshKeyType::Ecdsa => {
            let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| SshKeyError::Generate("ecdsa"))?;
            let d = kp.private_key().as_be_bytes().map_err(|_| SshKeyError::Generate("ecdsa"))?;
            let public = PublicKey::ecdsa(kp.public_key().as_ref())?;
            let private_pem = private_key::encode(&public, &PrivateParts::Ecdsa { d: d.as_ref() }, comment, check)?;
            Ok(SshKey { public, private_pem })
        }
        SshKeyType::Rsa => {
            let kp = RsaKeyPair::generate(RSA_BITS).map_err(|_| SshKeyError::Generate("rsa"))?;
            let der = kp.as_der().map_err(|_| SshKeyError::Generate("rsa"))?;
            let der = Zeroizing::new(der.as_ref().to_vec());
            let parts = rsa_parts(&der)?;
            let public = PublicKey::rsa(parts.n, parts.e)?;
            let private = PrivateParts::Rsa { d: parts.d, iqmp: parts.qinv, p: parts.p, q: parts.q };
            let private_pem = private_key::encode(&public, &private, comment, check)?;
            Ok(SshKey { public, private_pem })
        }
    }
}

fn random_u32() -> Result<u32, SshKeyError> {
    let mut b = [0u8; 4];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| SshKeyError::Generate("random check value"))?;
    Ok(u32::from_be_bytes(b))
}

/// The integers of a PKCS#1 RSAPrivateKey (big-endian, as DER holds them).
struct RsaParts<'a> {
    n: &'a [u8],
    e: &'a [u8],
    d: &'a [u8],
    p: &'a [u8],
    q: &'a [u8],
    qinv: &'a [u8],
}

/// One DER TLV: (tag, content, rest). Definite lengths only.
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), SshKeyError> {
    let bad = || SshKeyError::RsaDer("truncated or indefinite length");
    let (&tag, rest) = b.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        (rest[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize), &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn expect<'a>(b: &'a [u8], want: u8, what: &'static str) -> Result<(&'a [u8], &'a [u8]), SshKeyError> {
    match tlv(b)? {
        (tag, content, rest) if tag == want => Ok((content, rest)),
        _ => Err(SshKeyError::RsaDer(what)),
    }
}

/// An INTEGER's magnitude without the sign-padding zero.
fn integer(b: &[u8]) -> Result<(&[u8], &[u8]), SshKeyError> {
    let (v, rest) = expect(b, 0x02, "expected an INTEGER")?;
    let v = match v {
        [0, tail @ ..] if !tail.is_empty() => tail,
        _ => v,
    };
    Ok((v, rest))
}

/// PKCS#8 PrivateKeyInfo { version, algorithm, OCTET STRING RSAPrivateKey }.
fn rsa_parts(pkcs8: &[u8]) -> Result<RsaParts<'_>, SshKeyError> {
    let (info, _) = expect(pkcs8, 0x30, "PrivateKeyInfo is not a SEQUENCE")?;
    let (_, rest) = integer(info)?;
    let (_, rest) = expect(rest, 0x30, "no AlgorithmIdentifier")?;
    let (key, _) = expect(rest, 0x04, "no privateKey OCTET STRING")?;
    let (seq, _) = expect(key, 0x30, "RSAPrivateKey is not a SEQUENCE")?;
    let (version, rest) = integer(seq)?;
    if version != [0] {
        return Err(SshKeyError::RsaDer("RSAPrivateKey version is not 0 (two-prime)"));
    }
    let (n, rest) = integer(rest)?;
    let (e, rest) = integer(rest)?;
    let (d, rest) = integer(rest)?;
    let (p, rest) = integer(rest)?;
    let (q, rest) = integer(rest)?;
    let (_dp, rest) = integer(rest)?;
    let (_dq, rest) = integer(rest)?;
    let (qinv, _) = integer(rest)?;
    Ok(RsaParts { n, e, d, p, q, qinv })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `ssh-keygen -y` derives the public key from the private key file: it
    /// reads the file and the private parts are consistent with the public key.
    fn keygen_public(pem: &str) -> String {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("id");
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let out = Command::new("ssh-keygen")
            .args(["-y", "-f"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("ssh-keygen is needed (apt-get install openssh-client): {e}"));
        assert!(out.status.success(), "ssh-keygen -y: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn every_key_type_is_read_back_by_ssh_keygen() {
        for (t, name) in [(SshKeyType::Ed25519, "ssh-ed25519"), (SshKeyType::Ecdsa, "ecdsa-sha2-nistp256"), (SshKeyType::Rsa, "ssh-rsa")] {
            let k = generate(t, "sigil-test").unwrap();
            let derived = keygen_public(&k.private_pem);
            assert_eq!(derived.split_whitespace().take(2).collect::<Vec<_>>(), k.public.to_line("").split_whitespace().collect::<Vec<_>>(), "{name}");
            assert!(derived.starts_with(name), "{derived}");
        }
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let k = generate(SshKeyType::Ed25519, "c").unwrap();
        assert!(!format!("{k:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn truncated_or_foreign_der_is_refused() {
        assert!(rsa_parts(&[]).is_err());
        assert!(rsa_parts(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(rsa_parts(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    }
}
