//! PEM: the one reader of certificates, private keys and public keys for the
//! broker, the agent and the CLI (rustls-pki-types' parser underneath; the
//! provider and the identity file use the same parser directly).
//!
//! Mistakes this module exists to prevent:
//! - five hand-written readers with five rules (stripping `-----` lines and
//!   base64-decoding the rest joins two blocks into one key; a line-based
//!   splitter keeps a block with no END line): one parser, blocks matched by label;
//! - an error that echoes what it failed to parse (a private key): errors name
//!   where the text came from and what was looked for, never its content;
//! - an unbounded read of a file named in a config: files are read up to
//!   [`MAX_PEM_BYTES`], texts from elsewhere are refused above it;
//! - a panic on hostile input: every path returns an error.

use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use std::io::Read;
use std::path::Path;

/// Largest PEM text read or parsed: 1 MiB (the Mozilla root program, ~150
/// certificates, is about 200 KiB of PEM).
pub const MAX_PEM_BYTES: usize = 1024 * 1024;

/// Why PEM text gave no usable block. Never carries the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The text is larger than [`MAX_PEM_BYTES`].
    #[error("{origin} is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge {
        /// Where the text came from (a file name, "the trust bundle").
        origin: String,
    },
    /// A block is malformed (no END line, bad BEGIN line, bad base64).
    #[error("{origin} is not valid PEM ({why}) where a {kind} was expected")]
    Malformed {
        /// Where the text came from.
        origin: String,
        /// What was looked for.
        kind: &'static str,
        /// What is wrong, without the content.
        why: &'static str,
    },
    /// The text has no block of the wanted kind.
    #[error("{origin} holds no {kind} PEM block")]
    Missing {
        /// Where the text came from.
        origin: String,
        /// What was looked for.
        kind: &'static str,
    },
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`]. A larger file is an
/// `io::ErrorKind::FileTooLarge` error, a non-UTF-8 one `InvalidData`; the
/// caller names the file.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(MAX_PEM_BYTES as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > MAX_PEM_BYTES {
        return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    String::from_utf8(buf).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not PEM text (not UTF-8)"))
}

/// Whether `value` is PEM content rather than a file name: it carries the
/// armour no file name does.
pub fn looks_like_pem(value: &[u8]) -> bool {
    value.windows(10).any(|w| w == b"-----BEGIN")
}

/// Every `CERTIFICATE` block, in order (other blocks skipped); possibly none.
pub fn certificates(text: &str, origin: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let mut out = Vec::new();
    for (kind, der) in sections(text, origin, "CERTIFICATE")? {
        if kind == SectionKind::Certificate {
            out.push(CertificateDer::from(der));
        }
    }
    Ok(out)
}

/// The DER of every `CERTIFICATE` block, in order; possibly none.
pub fn certificate_ders(text: &str, origin: &str) -> Result<Vec<Vec<u8>>, PemError> {
    Ok(certificates(text, origin)?.into_iter().map(|c| c.as_ref().to_vec()).collect())
}

/// The first private key block: PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or
/// PKCS#1 `RSA PRIVATE KEY`.
pub fn private_key(text: &str, origin: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    const KIND: &str = "private key";
    for (kind, der) in sections(text, origin, KIND)? {
        match kind {
            SectionKind::PrivateKey => return Ok(PrivatePkcs8KeyDer::from(der).into()),
            SectionKind::EcPrivateKey => return Ok(PrivateSec1KeyDer::from(der).into()),
            SectionKind::RsaPrivateKey => return Ok(PrivatePkcs1KeyDer::from(der).into()),
            _ => {}
        }
    }
    Err(PemError::Missing { origin: origin.into(), kind: KIND })
}

/// The DER (SubjectPublicKeyInfo) of the first `PUBLIC KEY` block.
pub fn public_key(text: &str, origin: &str) -> Result<Vec<u8>, PemError> {
    const KIND: &str = "PUBLIC KEY";
    let found = sections(text, origin, KIND)?.into_iter().find(|(k, _)| *k == SectionKind::PublicKey);
    found.map(|(_, der)| der).ok_or_else(|| PemError::Missing { origin: origin.into(), kind: KIND })
}

/// One `CERTIFICATE` PEM block for `der` (base64 in 64-character lines, as
/// OpenSSL writes it: nginx, curl and Go all read it).
pub fn encode_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Every block whose label the parser knows, in order; the first malformed one is an error.
fn sections(text: &str, origin: &str, kind: &'static str) -> Result<Vec<(SectionKind, Vec<u8>)>, PemError> {
    if text.len() > MAX_PEM_BYTES {
        return Err(PemError::TooLarge { origin: origin.into() });
    }
    <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes())
        .map(|r| r.map_err(|e| PemError::Malformed { origin: origin.into(), kind, why: why(&e) }))
        .collect()
}

/// What is wrong, in words that carry nothing of the text.
fn why(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        pem::Error::SectionTooLarge => "a block is too large",
        _ => "unreadable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", base64::engine::general_purpose::STANDARD.encode(der))
    }

    #[test]
    fn certificates_keep_their_order_and_other_blocks_are_skipped() {
        let text = format!("junk before\n{}{}{}", block("CERTIFICATE", b"one"), block("PRIVATE KEY", b"k"), block("CERTIFICATE", b"two"));
        assert_eq!(certificate_ders(&text, "f").unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(certificate_ders("no pem here", "f").unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn each_private_key_form_is_told_apart() {
        let k = |label| private_key(&block(label, b"der"), "key.pem").unwrap();
        assert!(matches!(k("PRIVATE KEY"), PrivateKeyDer::Pkcs8(_)));
        assert!(matches!(k("EC PRIVATE KEY"), PrivateKeyDer::Sec1(_)));
        assert!(matches!(k("RSA PRIVATE KEY"), PrivateKeyDer::Pkcs1(_)));
        let e = private_key(&block("CERTIFICATE", b"c"), "key.pem").unwrap_err();
        assert_eq!(e.to_string(), "key.pem holds no private key PEM block");
    }

    #[test]
    fn two_blocks_are_never_joined_into_one_key() {
        // The old reader dropped every `-----` line and decoded the rest as one key.
        let text = format!("{}{}", block("PUBLIC KEY", b"first"), block("PUBLIC KEY", b"second"));
        assert_eq!(public_key(&text, "config.public_key").unwrap(), b"first");
    }

    #[test]
    fn malformed_pem_is_an_error_naming_the_origin_and_never_the_content() {
        let secret_b64 = "U0VDUkVUS0VZTUFURVJJQUw="; // "SECRETKEYMATERIAL"
        for (text, why) in [
            (format!("-----BEGIN PRIVATE KEY-----\n{secret_b64}\n"), "no END line"),
            (format!("-----BEGIN PRIVATE KEY-----\n{secret_b64}!!\n-----END PRIVATE KEY-----\n"), "not valid base64"),
            (format!("-----BEGIN PRIVATE KEY----\n{secret_b64}\n-----END PRIVATE KEY-----\n"), "BEGIN line is malformed"),
        ] {
            let e = private_key(&text, "/etc/sigil/key.pem").unwrap_err().to_string();
            assert!(e.starts_with("/etc/sigil/key.pem is not valid PEM") && e.contains(why) && e.contains("private key"), "{e}");
            assert!(!e.contains(secret_b64) && !e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn oversized_text_and_files_are_refused_without_reading_them_whole() {
        let big = format!("{}{}", block("CERTIFICATE", b"c"), " ".repeat(MAX_PEM_BYTES));
        assert_eq!(certificates(&big, "bundle").unwrap_err(), PemError::TooLarge { origin: "bundle".into() });
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.pem");
        std::fs::write(&p, &big).unwrap();
        assert_eq!(read_file(&p).unwrap_err().kind(), std::io::ErrorKind::FileTooLarge);
        // A file that never ends (a device named as a CA file) is cut at the bound.
        assert_eq!(read_file(Path::new("/dev/zero")).unwrap_err().kind(), std::io::ErrorKind::FileTooLarge);
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert_eq!(read_file(&p).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        std::fs::write(&p, block("CERTIFICATE", b"c")).unwrap();
        assert_eq!(certificate_ders(&read_file(&p).unwrap(), "f").unwrap(), vec![b"c".to_vec()]);
    }

    #[test]
    fn an_encoded_certificate_reads_back_with_64_character_lines() {
        let der: Vec<u8> = (0..=255u8).cycle().take(500).collect();
        let text = encode_certificate(&der);
        assert!(text.lines().all(|l| l.len() <= 64), "{text}");
        assert_eq!(certificate_ders(&text, "f").unwrap(), vec![der]);
    }

    #[test]
    fn pem_content_is_told_from_a_file_name() {
        assert!(looks_like_pem(block("CERTIFICATE", b"c").as_bytes()));
        assert!(!looks_like_pem(b"/etc/sigil/identity.pem"));
    }
}
