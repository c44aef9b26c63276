//! The one JWT verifier: every place Sigil trusts a JWS compact token (OIDC
//! joins, the agent's `ValidateJWTSVID`, `sigil federation verify`) runs these
//! rules, and only adds its own claim checks (issuer, audience, SPIFFE ID) on top.
//!
//! Pure: no I/O and no clock (the caller passes `now`); imports nothing of the
//! broker or the agent. The rules come from the mistakes others shipped:
//! - `none` and HMAC are never accepted; the algorithm is pinned by the key
//!   (its type and the JWK's own `alg`), so an RSA public key cannot be used as
//!   an HMAC secret and an ES256 key cannot verify an RS256 header ([`alg`]).
//! - Keys come only from the caller's key set, never from the token (`jwk`,
//!   `jku`, `x5u`, `x5c` are refused); unknown `crit` is refused; `typ`, when
//!   present, must say JWT ([`header`]).
//! - `kid` is only a lookup hint: a token naming no `kid` is verified only when
//!   the key set holds exactly one usable key; with several, it is refused
//!   rather than tried against each key ([`jwks`]).
//! - Tokens and key sets are bounded in size ([`MAX_TOKEN_BYTES`], [`jwks::MAX_KEYS`]).
//! - `exp` is required; `exp`, `nbf` and `iat` are checked with the same
//!   [`LEEWAY_SECS`] of clock skew everywhere ([`time`]).

pub mod alg;
pub mod claims;
pub mod header;
pub mod jwks;
pub mod signature;
pub mod time;

pub use alg::Alg;
pub use claims::{audiences, check_audience, check_issuer};
pub use header::{parse, peek, Parsed, Peeked};
pub use jwks::KeySet;
pub use time::check_times;

/// Largest token accepted, bytes. Real CI tokens and JWT-SVIDs are 1-3 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
pub const LEEWAY_SECS: i64 = 60;

/// Why a token or key set was refused. Messages are safe to return to the
/// caller: they name claims and algorithms, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// Token length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The token is not a JWS in compact form with JSON header and payload.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none` or an HMAC algorithm: never accepted for asymmetric issuers.
    #[error("algorithm {0:?} is not accepted (only asymmetric signatures: RS*, PS*, ES256, ES384, EdDSA)")]
    ForbiddenAlgorithm(String),
    /// An algorithm this verifier does not implement.
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The header carries key material or a key URL, which is never trusted.
    #[error("header parameter {0:?} is not accepted: keys come only from the issuer's JWKS")]
    ForbiddenHeader(&'static str),
    /// The header's `typ` says the token is something else than a JWT.
    #[error("header typ {0:?} is not accepted (only JWT or JOSE)")]
    WrongType(String),
    /// The header marks extensions critical that this verifier does not know.
    #[error("unknown critical header extension(s) {0}")]
    UnknownCritical(String),
    /// The signature part is empty.
    #[error("the token has an empty signature")]
    EmptySignature,
    /// No key in the key set has the token's `kid`.
    #[error("no key with kid {0:?} in the issuer's JWKS")]
    UnknownKid(String),
    /// The token names no `kid` and the key set has several keys.
    #[error("the token has no kid and the issuer's JWKS has {0} keys")]
    AmbiguousKey(usize),
    /// The header algorithm does not fit the key it names.
    #[error("algorithm {alg:?} does not match key {kid:?} ({key})")]
    AlgorithmMismatch {
        /// Header alg.
        alg: String,
        /// Key id.
        kid: String,
        /// Key type and pinned algorithm.
        key: String,
    },
    /// The signature does not verify with the key.
    #[error("signature verification failed")]
    BadSignature,
    /// `iss` differs from the expected issuer.
    #[error("issuer {found:?} is not the expected {expected:?}")]
    WrongIssuer {
        /// Expected issuer.
        expected: String,
        /// Token's `iss`.
        found: String,
    },
    /// `aud` does not contain the expected audience.
    #[error("audience {found:?} does not contain the expected {expected:?}")]
    WrongAudience {
        /// Expected audience.
        expected: String,
        /// Token's `aud` values.
        found: Vec<String>,
    },
    /// A required claim is absent or has the wrong type.
    #[error("claim {0:?} is missing or not of the expected type")]
    MissingClaim(&'static str),
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// exp.
        exp: i64,
        /// now.
        now: i64,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid before {nbf} (now {now})")]
    NotYetValid {
        /// nbf.
        nbf: i64,
        /// now.
        now: i64,
    },
    /// `iat` is in the future (beyond the leeway).
    #[error("token claims to be issued at {iat}, in the future (now {now})")]
    IssuedInFuture {
        /// iat.
        iat: i64,
        /// now.
        now: i64,
    },
    /// The key set document is unusable.
    #[error("invalid JWKS: {0}")]
    BadJwks(String),
}

/// The whole check of a token against a key set at `now`: header rules, key
/// selection, signature, then `exp`/`nbf`/`iat`. Returns the claims; the
/// caller checks what only it knows (issuer, audience, subject).
pub fn verify(token: &str, keys: &KeySet, now: i64) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    let claims = parse(token)?.verify_signature(keys)?;
    check_times(&claims, now)?;
    Ok(claims)
}

#[cfg(test)]
mod tests;
