//! AWS Signature Version 4, the parts every signer shares: the canonical request,
//! the credential scope, the string to sign, the `X-Amz-Date` format and the
//! HMAC key derivation. Two signers build on it: the `iam` join's
//! `sts:GetCallerIdentity` (HMAC with an access key, `agent/src/join/client/aws_iam.rs`) and
//! IAM Roles Anywhere's `CreateSession` (a certificate's private key signs the
//! same string to sign, `agent/src/cloud/sigv4_x509.rs`).
//!
//! Mistakes this module exists to prevent (each would give a signature AWS
//! refuses, or one that covers less than the caller thinks):
//! - two canonicalisations drifting apart (one collapsing header whitespace, the
//!   other only trimming): there is one [`canonical_request`];
//! - an unsigned header slipping through: `SignedHeaders` is built from exactly the
//!   headers that are canonicalised, never passed in separately;
//! - a date that is not `YYYYMMDDTHHMMSSZ` (or not a calendar date) reaching the
//!   scope: [`parse_amz_date`] is the one reader, [`format_amz_date`] the one writer.
//!
//! Pure code: no clock, no I/O. Vectors from the AWS documentation are in the tests.

mod canonical;
mod date;
mod key;

pub use canonical::{canonical_request, Canonical};
pub use date::{format_amz_date, parse_amz_date};
pub use key::{hmac_signature_hex, hmac_signing_key};

use aws_lc_rs::digest::{digest, SHA256};

/// The HMAC algorithm name (access key signing).
pub const HMAC_ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a value cannot be used in a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// The timestamp is not `YYYYMMDDTHHMMSSZ` (or a Unix time out of range).
    #[error("invalid X-Amz-Date {0:?}: expected YYYYMMDDTHHMMSSZ")]
    Date(String),
}

/// `DAY/REGION/SERVICE/aws4_request`, from a checked `X-Amz-Date`.
pub fn credential_scope(amz_date: &str, region: &str, service: &str) -> Result<String, SigV4Error> {
    let day = day_of(amz_date)?;
    Ok(format!("{day}/{region}/{service}/aws4_request"))
}

/// The `YYYYMMDD` part of a checked `X-Amz-Date`.
pub fn day_of(amz_date: &str) -> Result<&str, SigV4Error> {
    parse_amz_date(amz_date).ok_or_else(|| SigV4Error::Date(amz_date.to_string()))?;
    Ok(&amz_date[..8])
}

/// `ALGORITHM \n X-Amz-Date \n SCOPE \n hex(SHA-256(canonical request))`.
pub fn string_to_sign(algorithm: &str, amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!("{algorithm}\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// The `Authorization` header value.
pub fn authorization(algorithm: &str, credential: &str, scope: &str, signed_headers: &str, signature_hex: &str) -> String {
    format!("{algorithm} Credential={credential}/{scope}, SignedHeaders={signed_headers}, Signature={signature_hex}")
}

/// Lowercase hex SHA-256 (the payload hash and the canonical request hash).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest(&SHA256, data).as_ref())
}

#[cfg(test)]
mod tests;
