//! OpenSSH certificates (`PROTOCOL.certkeys`): user and host certificates
//! built from a [`CertSpec`] and signed by a CA key through a callback, so the
//! key may live in memory or in an HSM.
//!
//! Layout (after the certificate type name and a 32-byte nonce come the
//! certified key's own fields, then):
//! ```text
//! uint64 serial, uint32 type (1 user, 2 host), string key id,
//! string valid principals, uint64 valid after, uint64 valid before,
//! string critical options, string extensions, string reserved,
//! string signature key, string signature
//! ```
//! Critical options and extensions are (name, string data) pairs, sorted by
//! name, each name at most once; a flag extension's data is empty, an
//! option's data is its value as a string.

use super::pubkey::{KeyType, PublicKey};
use super::wire::Writer;
use super::{SshError, MAX_FIELD, MAX_PRINCIPALS};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::collections::{BTreeMap, BTreeSet};

/// User or host certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// `SSH_CERT_TYPE_USER` (1): principals are login names.
    User,
    /// `SSH_CERT_TYPE_HOST` (2): principals are host names.
    Host,
}

impl CertKind {
    fn code(self) -> u32 {
        match self {
            CertKind::User => 1,
            CertKind::Host => 2,
        }
    }
}

/// The extensions OpenSSH's `ssh-keygen` grants a user certificate by default.
pub const DEFAULT_EXTENSIONS: [&str; 5] =
    ["permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc"];

/// Every extension OpenSSH knows (`PROTOCOL.certkeys`).
pub const KNOWN_EXTENSIONS: [&str; 7] = [
    "no-touch-required",
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
    "no-presence-required",
];

/// Every critical option OpenSSH knows (`PROTOCOL.certkeys`).
pub const KNOWN_CRITICAL_OPTIONS: [&str; 3] = ["force-command", "source-address", "verify-required"];

/// What a certificate says.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// User or host.
    pub kind: CertKind,
    /// The certified key.
    pub key: PublicKey,
    /// Serial (random, chosen by the caller).
    pub serial: u64,
    /// Key id (logged by sshd).
    pub key_id: String,
    /// Login names or host names; never empty (an empty list would be valid
    /// for every principal).
    pub principals: Vec<String>,
    /// Seconds since the epoch.
    pub valid_after: u64,
    /// Seconds since the epoch.
    pub valid_before: u64,
    /// Critical options (name -> value); user certificates only.
    pub critical_options: BTreeMap<String, String>,
    /// Extensions (flags); user certificates only.
    pub extensions: BTreeSet<String>,
    /// Random nonce (chosen by the caller).
    pub nonce: [u8; 32],
}

/// How the CA signs: its public key and the function that makes a raw
/// signature over the data: 64 bytes for Ed25519, `r || s` for ECDSA P-256
/// with SHA-256, a PKCS#1 v1.5 SHA-256 signature for RSA.
pub struct CaSignature<'a> {
    /// The CA's public key (`ssh-ed25519`, `ecdsa-sha2-nistp256` or `ssh-rsa`).
    pub ca: &'a PublicKey,
    /// Signs.
    pub sign: &'a dyn Fn(&[u8]) -> Result<Vec<u8>, String>,
}

impl std::fmt::Debug for CaSignature<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaSignature({:?})", self.ca)
    }
}

/// Whether `s` can be a principal: 1 to [`MAX_FIELD`] bytes, no control
/// characters, whitespace or commas (sshd reads principal lists split at
/// commas and whitespace).
pub fn check_principal(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_FIELD {
        return Err(format!("must be 1 to {MAX_FIELD} bytes"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() || c.is_whitespace() || *c == ',') {
        return Err(format!("{s:?} holds {c:?}: no control characters, spaces or commas"));
    }
    Ok(())
}

fn check_spec(c: &CertSpec) -> Result<(), SshError> {
    if c.principals.is_empty() {
        return Err(SshError::field("principals", "at least one (a certificate without principals is valid for every user or host)"));
    }
    if c.principals.len() > MAX_PRINCIPALS {
        return Err(SshError::field("principals", format!("at most {MAX_PRINCIPALS}")));
    }
    for p in &c.principals {
        check_principal(p).map_err(|e| SshError::field("principals", e))?;
    }
    if c.key_id.len() > MAX_FIELD || c.key_id.chars().any(char::is_control) {
        return Err(SshError::field("key_id", format!("at most {MAX_FIELD} bytes, no control characters")));
    }
    if c.valid_before <= c.valid_after {
        return Err(SshError::field("valid_before", "must be after valid_after"));
    }
    if c.kind == CertKind::Host && !(c.critical_options.is_empty() && c.extensions.is_empty()) {
        return Err(SshError::field("extensions", "host certificates carry no critical options or extensions"));
    }
    for (k, v) in &c.critical_options {
        if !KNOWN_CRITICAL_OPTIONS.contains(&k.as_str()) {
            return Err(SshError::field("critical_options", format!("unknown option {k:?} (known: {})", KNOWN_CRITICAL_OPTIONS.join(", "))));
        }
        if v.len() > MAX_FIELD || v.chars().any(char::is_control) {
            return Err(SshError::field("critical_options", format!("{k}: at most {MAX_FIELD} bytes, no control characters")));
        }
    }
    for e in &c.extensions {
        if !KNOWN_EXTENSIONS.contains(&e.as_str()) {
            return Err(SshError::field("extensions", format!("unknown extension {e:?} (known: {})", KNOWN_EXTENSIONS.join(", "))));
        }
    }
    Ok(())
}

/// The signature algorithm a CA key signs certificates with.
pub fn signature_alg(ca: KeyType) -> Result<&'static str, SshError> {
    match ca {
        KeyType::Ed25519 => Ok("ssh-ed25519"),
        KeyType::EcdsaP256 => Ok("ecdsa-sha2-nistp256"),
        // RFC 8332: SHA-256, never SHA-1 `ssh-rsa`.
        KeyType::Rsa => Ok("rsa-sha2-256"),
        other => Err(SshError::UnsupportedType(format!("{} as a CA key", other.name()))),
    }
}

/// The signature blob of `raw` (what [`CaSignature::sign`] returned).
fn signature_blob(ca: KeyType, raw: &[u8]) -> Result<Vec<u8>, SshError> {
    let alg = signature_alg(ca)?;
    let mut w = Writer::new();
    w.string(alg);
    match ca {
        KeyType::EcdsaP256 => {
            if raw.len() != 64 {
                return Err(SshError::Sign(format!("ECDSA P-256 signature of {} bytes, want 64 (r || s)", raw.len())));
            }
            let mut rs = Writer::new();
            rs.mpint(&raw[..32]).mpint(&raw[32..]);
            w.string(rs.into_bytes());
        }
        KeyType::Ed25519 if raw.len() != 64 => return Err(SshError::Sign(format!("Ed25519 signature of {} bytes, want 64", raw.len()))),
        _ => {
            w.string(raw);
        }
    }
    Ok(w.into_bytes())
}

fn pairs(items: impl IntoIterator<Item = (String, Option<String>)>) -> Vec<u8> {
    let mut w = Writer::new();
    // Callers pass BTree collections: sorted by name, unique.
    for (name, value) in items {
        w.string(name);
        match value {
            Some(v) => {
                let mut inner = Writer::new();
                inner.string(v);
                w.string(inner.into_bytes());
            }
            None => {
                w.string([]);
            }
        }
    }
    w.into_bytes()
}

/// Builds and signs the certificate; returns its line (`TYPE-cert-v01@openssh.com BASE64`).
pub fn sign(spec: &CertSpec, ca: &CaSignature<'_>) -> Result<String, SshError> {
    check_spec(spec)?;
    let ty = spec.key.key_type();
    let mut w = Writer::new();
    w.string(ty.cert_name()).string(spec.nonce).raw(spec.key.fields());
    w.u64(spec.serial).u32(spec.kind.code()).string(&spec.key_id);
    let mut principals = Writer::new();
    for p in &spec.principals {
        principals.string(p);
    }
    w.string(principals.into_bytes()).u64(spec.valid_after).u64(spec.valid_before);
    // An option without a value (verify-required) is a flag: empty data.
    w.string(pairs(spec.critical_options.iter().map(|(k, v)| (k.clone(), (!v.is_empty()).then(|| v.clone())))));
    w.string(pairs(spec.extensions.iter().map(|e| (e.clone(), None))));
    w.string([]).string(ca.ca.blob());
    let raw = (ca.sign)(w.as_bytes()).map_err(SshError::Sign)?;
    let sig = signature_blob(ca.ca.key_type(), &raw)?;
    w.string(sig);
    Ok(format!("{} {}", ty.cert_name(), STANDARD.encode(w.into_bytes())))
}
