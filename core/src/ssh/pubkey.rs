//! OpenSSH public keys: the `TYPE BASE64 [COMMENT]` line (authorized_keys
//! form), the key blob, and the SHA-256 fingerprint `ssh-keygen -l` prints.
//!
//! Accepted: `ssh-ed25519` (RFC 8709), `ecdsa-sha2-nistp256/384/521`
//! (RFC 5656), `ssh-rsa` (RFC 4253) with a 2048 to 16384-bit modulus.
//! DSA, security-key (`sk-*`) and certificate lines are refused.

use super::wire::{Reader, Writer};
use super::{SshError, MAX_LINE};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use std::fmt;

/// A key type Sigil certifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `ssh-ed25519`.
    Ed25519,
    /// `ecdsa-sha2-nistp256`.
    EcdsaP256,
    /// `ecdsa-sha2-nistp384`.
    EcdsaP384,
    /// `ecdsa-sha2-nistp521`.
    EcdsaP521,
    /// `ssh-rsa` (the key format; signatures are `rsa-sha2-*`).
    Rsa,
}

impl KeyType {
    /// Every accepted type.
    pub const ALL: [KeyType; 5] = [KeyType::Ed25519, KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::EcdsaP521, KeyType::Rsa];

    /// The key's type name in lines and blobs.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ssh-ed25519",
            KeyType::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyType::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyType::EcdsaP521 => "ecdsa-sha2-nistp521",
            KeyType::Rsa => "ssh-rsa",
        }
    }

    /// The type name of a certificate for a key of this type.
    pub fn cert_name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ssh-ed25519-cert-v01@openssh.com",
            KeyType::EcdsaP256 => "ecdsa-sha2-nistp256-cert-v01@openssh.com",
            KeyType::EcdsaP384 => "ecdsa-sha2-nistp384-cert-v01@openssh.com",
            KeyType::EcdsaP521 => "ecdsa-sha2-nistp521-cert-v01@openssh.com",
            KeyType::Rsa => "ssh-rsa-cert-v01@openssh.com",
        }
    }

    /// From a type name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// RFC 5656 curve name and point length (uncompressed), for ECDSA.
    fn curve(self) -> Option<(&'static str, usize)> {
        match self {
            KeyType::EcdsaP256 => Some(("nistp256", 65)),
            KeyType::EcdsaP384 => Some(("nistp384", 97)),
            KeyType::EcdsaP521 => Some(("nistp521", 133)),
            _ => None,
        }
    }
}

/// A validated public key: its type and wire blob.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_type: KeyType,
    blob: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.key_type.name(), self.fingerprint())
    }
}

impl PublicKey {
    /// Parses one `TYPE BASE64 [COMMENT]` line (the comment is dropped).
    pub fn parse_line(line: &str) -> Result<Self, SshError> {
        if line.len() > MAX_LINE {
            return Err(SshError::TooLong(line.len()));
        }
        let mut parts = line.trim().split_ascii_whitespace();
        let ty = parts.next().ok_or(SshError::BadLine("empty"))?;
        let b64 = parts.next().ok_or(SshError::BadLine("no key after the type"))?;
        let key_type = KeyType::parse(ty).ok_or_else(|| SshError::UnsupportedType(ty.chars().take(64).collect()))?;
        let blob = STANDARD.decode(b64).map_err(|_| SshError::BadLine("the key is not base64"))?;
        Self::from_blob(key_type, blob)
    }

    /// Checks a key blob of type `key_type` field by field.
    pub fn from_blob(key_type: KeyType, blob: Vec<u8>) -> Result<Self, SshError> {
        let name = key_type.name();
        let bad = |why| SshError::Malformed(name, why);
        let mut r = Reader::new(&blob);
        if r.string().ok_or(bad("truncated"))? != name.as_bytes() {
            return Err(bad("the blob names another key type than the line"));
        }
        match key_type {
            KeyType::Ed25519 => {
                if r.string().ok_or(bad("truncated"))?.len() != 32 {
                    return Err(bad("an Ed25519 key is 32 bytes"));
                }
            }
            KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => {
                let (curve, len) = key_type.curve().ok_or(bad("no curve"))?;
                if r.string().ok_or(bad("truncated"))? != curve.as_bytes() {
                    return Err(bad("the curve name does not match the key type"));
                }
                let q = r.string().ok_or(bad("truncated"))?;
                if q.len() != len || q[0] != 4 {
                    return Err(bad("the point must be uncompressed and of the curve's size"));
                }
            }
            KeyType::Rsa => {
                let e = r.positive_mpint().ok_or(bad("bad exponent"))?;
                let n = r.positive_mpint().ok_or(bad("bad modulus"))?;
                if e.len() > 8 || e.last().is_none_or(|b| b & 1 == 0) || e == [1] {
                    return Err(bad("the exponent must be odd, above 1 and at most 64 bits"));
                }
                let bits = n.len() * 8 - n[0].leading_zeros() as usize;
                if !(2048..=16384).contains(&bits) {
                    return Err(SshError::RsaSize(bits));
                }
            }
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Self { key_type, blob })
    }

    /// An Ed25519 key from its 32 public bytes.
    pub fn ed25519(public: &[u8]) -> Result<Self, SshError> {
        let mut w = Writer::new();
        w.string(KeyType::Ed25519.name()).string(public);
        Self::from_blob(KeyType::Ed25519, w.into_bytes())
    }

    /// An ECDSA key from its uncompressed point (the curve follows from its length).
    pub fn ecdsa(point: &[u8]) -> Result<Self, SshError> {
        let t = [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::EcdsaP521]
            .into_iter()
            .find(|t| t.curve().is_some_and(|(_, l)| l == point.len()))
            .ok_or(SshError::Malformed("ecdsa", "unknown point size"))?;
        let (curve, _) = t.curve().ok_or(SshError::Malformed("ecdsa", "no curve"))?;
        let mut w = Writer::new();
        w.string(t.name()).string(curve).string(point);
        Self::from_blob(t, w.into_bytes())
    }

    /// An RSA key from its modulus and public exponent (big-endian).
    pub fn rsa(modulus: &[u8], exponent: &[u8]) -> Result<Self, SshError> {
        let mut w = Writer::new();
        w.string(KeyType::Rsa.name()).mpint(exponent).mpint(modulus);
        Self::from_blob(KeyType::Rsa, w.into_bytes())
    }

    /// The type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The wire blob (`string type` then the key's fields).
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The blob's fields after the type name: what a certificate carries
    /// after its nonce.
    pub fn fields(&self) -> &[u8] {
        // The blob was checked to start with string(type name).
        &self.blob[4 + self.key_type.name().len()..]
    }

    /// The authorized_keys line (`TYPE BASE64`, plus ` COMMENT` if any).
    pub fn to_line(&self, comment: &str) -> String {
        let mut s = format!("{} {}", self.key_type.name(), STANDARD.encode(&self.blob));
        if !comment.is_empty() {
            s.push(' ');
            s.push_str(comment);
        }
        s
    }

    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.blob);
        format!("SHA256:{}", STANDARD_NO_PAD.encode(d.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated by ssh-keygen (OpenSSH 9), public halves only.
    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHWDcvWSZGbuq14nizQ6iaol4y27UVUU2g2zQApr193n user@host";

    #[test]
    fn an_ed25519_line_round_trips() {
        let k = PublicKey::parse_line(ED).unwrap();
        assert_eq!(k.key_type(), KeyType::Ed25519);
        assert_eq!(k.to_line("user@host"), ED);
    }

    #[test]
    fn malformed_and_unsupported_lines_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("ssh-ed25519", "no key"),
            ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not accepted"),
            ("ssh-ed25519-cert-v01@openssh.com AAAA", "not accepted"),
            ("sk-ssh-ed25519@openssh.com AAAA", "not accepted"),
            ("ssh-ed25519 !!!", "not base64"),
            // An Ed25519 blob under an ECDSA type name.
            ("ecdsa-sha2-nistp256 AAAAC3NzaC1lZDI1NTE5AAAAIHWDcvWSZGbuq14nizQ6iaol4y27UVUU2g2zQApr193n", "another key type"),
            // Truncated Ed25519 key (31 bytes).
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAH3WDcvWSZGbuq14nizQ6iaol4y27UVUU2g2zQApr190=", "32 bytes"),
        ];
        for (line, want) in cases {
            let e = PublicKey::parse_line(line).unwrap_err().to_string();
            assert!(e.contains(want), "{line:?}: {e}");
        }
        let long = format!("ssh-ed25519 {}", "A".repeat(MAX_LINE));
        assert!(matches!(PublicKey::parse_line(&long), Err(SshError::TooLong(_))));
    }

    #[test]
    fn trailing_bytes_in_a_blob_are_refused() {
        let k = PublicKey::parse_line(ED).unwrap();
        let mut blob = k.blob().to_vec();
        blob.push(0);
        assert!(PublicKey::from_blob(KeyType::Ed25519, blob).unwrap_err().to_string().contains("trailing"));
    }

    #[test]
    fn small_rsa_keys_are_refused() {
        let n = [0xc5u8; 128]; // 1024 bits
        assert_eq!(PublicKey::rsa(&n, &[1, 0, 1]), Err(SshError::RsaSize(1024)));
        let n = [0xc5u8; 256];
        assert!(PublicKey::rsa(&n, &[1, 0, 1]).is_ok());
        assert!(PublicKey::rsa(&n, &[2]).is_err(), "even exponent");
    }
}
