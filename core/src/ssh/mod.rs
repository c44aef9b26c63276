//! OpenSSH wire formats the broker and the agent need, written from the
//! specifications (RFC 4251 section 5 data types, RFC 4253 section 6.6
//! `ssh-rsa`, RFC 5656 section 3.1 ECDSA, RFC 8709 Ed25519, RFC 8332
//! `rsa-sha2-*` signatures, OpenSSH `PROTOCOL.certkeys` and `PROTOCOL.key`).
//! No I/O, no clock, no randomness: callers pass the serial, the nonce and a
//! signing function.
//!
//! Mistakes this module exists to prevent:
//! - certifying a key that is not what its line says (the blob's own type
//!   name must equal the line's, every field is read to the end, nothing may
//!   follow; RSA moduli under 2048 bits are refused);
//! - unbounded input (a line is at most [`MAX_LINE`] bytes, a certificate
//!   carries at most [`MAX_PRINCIPALS`] principals);
//! - a certificate sshd reads differently from what was decided (critical
//!   options and extensions are encoded sorted and unique, as
//!   `PROTOCOL.certkeys` requires; principals are checked for control
//!   characters and commas);
//! - SHA-1 RSA signatures (an RSA CA signs `rsa-sha2-256`, never `ssh-rsa`).

pub mod cert;
pub mod krl;
pub mod private_key;
pub mod pubkey;
pub mod wire;

pub use cert::{CaSignature, CertKind, CertSpec};
pub use pubkey::{KeyType, PublicKey};

/// Longest public key line accepted (16 KiB).
pub const MAX_LINE: usize = 16 * 1024;
/// Most principals in one certificate.
pub const MAX_PRINCIPALS: usize = 256;
/// Longest principal, key id, critical option or extension value.
pub const MAX_FIELD: usize = 1024;

/// What an SSH key, line or certificate request failed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The public key line is not `TYPE BASE64 [COMMENT]`.
    #[error("not an OpenSSH public key line (want \"TYPE BASE64 [comment]\"): {0}")]
    BadLine(&'static str),
    /// The line is longer than [`MAX_LINE`].
    #[error("public key line is {0} bytes; at most {MAX_LINE}")]
    TooLong(usize),
    /// A key type Sigil does not certify.
    #[error("key type {0:?} is not accepted: use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (>= 2048 bits)")]
    UnsupportedType(String),
    /// The key blob does not decode as its type says.
    #[error("malformed {0} key: {1}")]
    Malformed(&'static str, &'static str),
    /// An RSA key too small or too large.
    #[error("RSA key of {0} bits: use 2048 to 16384 bits")]
    RsaSize(usize),
    /// A certificate field is unusable.
    #[error("{field}: {reason}")]
    Field {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The CA signature could not be made.
    #[error("CA signature failed: {0}")]
    Sign(String),
}

impl SshError {
    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Field { field, reason: reason.into() }
    }
}

#[cfg(test)]
mod keygen_tests;
