//! Single-use accounting of join tokens: whether one more join may count
//! against a token, decided over its stored record.
//!
//! Mistakes this module exists to prevent:
//! - a join counted against an expired token, or past `max_uses`;
//! - the secret of a token of another method (a `bound_keypair` registration
//!   secret) redeemed as a plain `token` secret;
//! - a limit checked in one place and counted in another with other rules.
//!
//! The decision is made here; the store then counts the use with one
//! conditional update that holds only while the token still has the limits
//! decided on and fewer than `max_uses` uses ([`TokenRecord`] is the
//! expectation). So concurrent joins over any number of replicas never count
//! more than `max_uses`, and none of them retries because another one counted
//! first (a compare-and-set on the exact count would make N concurrent joins
//! of one multi-use token retry up to N times).

use super::join_method::Method;

/// A join token's redeemable state, as stored beside its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    /// Token name.
    pub name: String,
    /// Bot it joins as.
    pub bot: String,
    /// Method.
    pub method: String,
    /// Uses so far.
    pub uses: i64,
    /// Uses allowed.
    pub max_uses: i64,
    /// Expiry (Unix seconds): usable while `now < expires_at`.
    pub expires_at: i64,
}

/// A token's state with the stored hash of its secret: what a decision about
/// a use reads, and what the store compares before counting the use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The redeemable state.
    pub state: TokenState,
    /// Hex SHA-256 of the secret, or a marker that matches no secret
    /// ([`no_secret_hash`], [`spent_secret_hash`]).
    pub secret_hash: String,
}

/// Why a use cannot be counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenUseError {
    /// The token expired (`expires_at <= now`).
    #[error("token expired")]
    Expired,
    /// All `max_uses` uses are counted.
    #[error("token already used")]
    UsedUp,
    /// The secret is of a token whose method is not `token`.
    #[error("the secret is of join token {name:?}, whose method is {method:?}, not \"token\"")]
    WrongMethod {
        /// Token name.
        name: String,
        /// The token's method.
        method: String,
    },
}

/// Whether one more join may count against the token at `now`. Expiry is
/// reported before the limit (an expired, used-up token is "expired").
pub fn spend(state: &TokenState, now: i64) -> Result<(), TokenUseError> {
    if state.expires_at <= now {
        return Err(TokenUseError::Expired);
    }
    if state.uses >= state.max_uses {
        return Err(TokenUseError::UsedUp);
    }
    Ok(())
}

/// Whether the token found by its secret may be redeemed as a `token`-method
/// join at `now`: only `token` secrets redeem; then as [`spend`].
pub fn redeem(state: &TokenState, now: i64) -> Result<(), TokenUseError> {
    if state.method != Method::Token.name() {
        return Err(TokenUseError::WrongMethod { name: state.name.clone(), method: state.method.clone() });
    }
    spend(state, now)
}

/// The stored "hash" of a token without a secret: never the hex SHA-256 of
/// any secret, unique per token (the column is unique).
pub fn no_secret_hash(name: &str) -> String {
    format!("none:{name}")
}

/// The stored "hash" of a one-time secret once spent (a bound-keypair
/// registration secret after it bound a key): matches no secret.
pub fn spent_secret_hash(name: &str) -> String {
    format!("spent:{name}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn token(method: &str, uses: i64, max_uses: i64, expires_at: i64) -> TokenState {
        TokenState { name: "t".into(), bot: "b".into(), method: method.into(), uses, max_uses, expires_at }
    }

    #[test]
    fn a_single_use_token_has_no_use_left_after_one_redemption() {
        assert_eq!(redeem(&token("token", 0, 1, 100), 50), Ok(()));
        assert_eq!(redeem(&token("token", 1, 1, 100), 50), Err(TokenUseError::UsedUp));
    }

    #[test]
    fn uses_expiry_and_limits_decide_whether_a_join_counts() {
        // (uses, max_uses, expires_at, now, verdict)
        let cases = [
            (0, 3, 100, 99, Ok(())),
            (2, 3, 100, 99, Ok(())),
            (3, 3, 100, 99, Err(TokenUseError::UsedUp)),
            (4, 3, 100, 99, Err(TokenUseError::UsedUp)),
            (0, 3, 100, 100, Err(TokenUseError::Expired)),
            (0, 3, 100, 101, Err(TokenUseError::Expired)),
            (3, 3, 100, 100, Err(TokenUseError::Expired)),
            (0, 0, 100, 1, Err(TokenUseError::UsedUp)),
        ];
        for (uses, max, exp, now, want) in cases {
            assert_eq!(spend(&token("github", uses, max, exp), now), want, "uses {uses}/{max}, expires {exp}, now {now}");
        }
    }

    #[test]
    fn a_registration_secret_of_another_method_is_not_redeemed_as_a_token() {
        for method in ["bound_keypair", "github", "kubernetes"] {
            assert_eq!(
                redeem(&token(method, 0, 5, 100), 1),
                Err(TokenUseError::WrongMethod { name: "t".into(), method: method.into() })
            );
        }
        // The method is checked first: an expired keypair token still says "wrong method".
        assert!(matches!(redeem(&token("bound_keypair", 9, 1, 0), 1), Err(TokenUseError::WrongMethod { .. })));
    }

    #[test]
    fn the_markers_of_no_or_a_spent_secret_are_never_a_sha256() {
        for m in [no_secret_hash("t"), spent_secret_hash("t")] {
            assert!(!(m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit())), "{m}");
        }
        assert_ne!(no_secret_hash("a"), no_secret_hash("b"));
    }
}
