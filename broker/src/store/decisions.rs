//! The store operations that need a decision, written once for every backend:
//! read the records, let the domain decide
//! (`sigil_core::domain::{token_uses, generation, keypair_sequence}`), ask the
//! backend for the conditional write the decision names, and when that write
//! finds the record changed ([`StoreError::Changed`]: another request, maybe
//! on another replica, wrote first) read and decide again, at most
//! [`MAX_ATTEMPTS`] times.
//!
//! Why the bound is never reached in practice: a write misses only because
//! another write to the same record landed. A token use misses only when the
//! token's limits changed or its last use was taken (the next read refuses);
//! a generation or a key's join sequence misses only when a concurrent
//! request on the same identity advanced or locked it (the next read answers
//! a retry, or sees the copy and locks, or sees the lock and refuses).

use super::{GenerationState, KeypairBinding, Store, StoreError, TokenKey, TokenRecord, TokenRejection, TokenState};
use sigil_core::domain::generation::{self, Presented, Renewal};
use sigil_core::domain::keypair_sequence::{self, Advance, JoinAttempt, KeypairError, Registration};
use sigil_core::domain::token_uses::{self, TokenUseError};
use std::future::Future;

/// Most read-decide-write rounds of one operation before its last
/// [`StoreError::Changed`] is returned.
pub const MAX_ATTEMPTS: usize = 8;

/// Runs `round` until it does not report [`StoreError::Changed`], at most
/// [`MAX_ATTEMPTS`] times.
async fn retry<T, F, Fut>(mut round: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match round().await {
            Err(StoreError::Changed { .. }) if attempt < MAX_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

fn token_refused(e: TokenUseError) -> StoreError {
    StoreError::TokenRejected(match e {
        TokenUseError::Expired => TokenRejection::Expired,
        TokenUseError::UsedUp => TokenRejection::UsedUp,
        TokenUseError::WrongMethod { name, method } => TokenRejection::WrongMethod { name, method },
        // A refusal this version does not know yet: still a refusal.
        _ => TokenRejection::UsedUp,
    })
}

fn keypair_refused(e: KeypairError) -> StoreError {
    match e {
        KeypairError::RegistrationSpent => StoreError::TokenRejected(TokenRejection::RegistrationSpent),
        KeypairError::Token(t) => token_refused(t),
        other => StoreError::IdentityRejected(other.to_string()),
    }
}

/// Counts one use of `rec` if the domain allows it (`decide`), returning the new state.
async fn count_use<S: Store + ?Sized>(s: &S, rec: TokenRecord, decide: fn(&TokenState, i64) -> Result<(), TokenUseError>, now: i64) -> Result<TokenState, StoreError> {
    decide(&rec.state, now).map_err(token_refused)?;
    let uses = s.count_token_use(&rec).await?;
    Ok(TokenState { uses, ..rec.state })
}

/// [`Store::consume_token`]: [`token_uses::redeem`] over the token with this secret.
pub async fn consume_token<S: Store + ?Sized>(s: &S, secret_hash: &str, now: i64) -> Result<TokenState, StoreError> {
    retry(|| async {
        let rec = s.token_record(TokenKey::SecretHash(secret_hash)).await?;
        let rec = rec.ok_or(StoreError::TokenRejected(TokenRejection::Unknown))?;
        count_use(s, rec, token_uses::redeem, now).await
    })
    .await
}

/// [`Store::use_token`]: [`token_uses::spend`] over the named token.
pub async fn use_token<S: Store + ?Sized>(s: &S, name: &str, now: i64) -> Result<TokenState, StoreError> {
    retry(|| async {
        let rec = s.token_record(TokenKey::Name(name)).await?.ok_or(StoreError::TokenRejected(TokenRejection::Unknown))?;
        count_use(s, rec, token_uses::spend, now).await
    })
    .await
}

/// [`Store::advance_generation`]: [`generation::renew`] over the instance's state.
pub async fn advance_generation<S: Store + ?Sized>(s: &S, id: &str, presented: i64, presented_key: &str, new_key: &str) -> Result<i64, StoreError> {
    let presented = Presented { generation: presented, key: presented_key };
    retry(|| async {
        let state: GenerationState =
            s.generation_state(id).await?.ok_or_else(|| StoreError::IdentityRejected(format!("bot instance {id} does not exist")))?;
        match generation::renew(&state, presented, new_key) {
            Renewal::Issue { next, generation } => {
                s.swap_generation(&state, &next).await?;
                Ok(generation)
            }
            Renewal::Lock { next, error } => {
                s.swap_generation(&state, &next).await?;
                Err(StoreError::IdentityRejected(error.to_string()))
            }
            Renewal::Refuse(error) => Err(StoreError::IdentityRejected(error.to_string())),
        }
    })
    .await
}

/// [`Store::bind_keypair`]: [`keypair_sequence::register`] over the binding and the token.
pub async fn bind_keypair<S: Store + ?Sized>(s: &S, token: &str, public_key: &str, secret_hash: Option<&str>, now: i64) -> Result<(), StoreError> {
    retry(|| async {
        let bound = s.keypair_binding(token).await?;
        if bound.is_some() {
            // The domain answers AlreadyBound whatever the token holds: skip reading it.
            return Ok(());
        }
        let Some(rec) = s.token_record(TokenKey::Name(token)).await? else {
            return Err(match secret_hash {
                Some(_) => StoreError::TokenRejected(TokenRejection::RegistrationSpent),
                None => StoreError::NotFound { kind: "join_token", name: token.to_string() },
            });
        };
        match keypair_sequence::register(bound.as_ref(), &rec, public_key, secret_hash, now).map_err(keypair_refused)? {
            Registration::AlreadyBound => Ok(()),
            Registration::Bind { binding, spend_secret } => {
                let spend = spend_secret.as_deref().map(|marker| (rec.secret_hash.as_str(), marker));
                s.insert_keypair_binding(&binding, spend, now).await
            }
        }
    })
    .await
}

/// [`Store::advance_keypair`]: [`keypair_sequence::advance`] over the binding and the token.
pub async fn advance_keypair<S: Store + ?Sized>(s: &S, token: &str, public_key: &str, presented: i64, attempt: &str, now: i64) -> Result<i64, StoreError> {
    let join = JoinAttempt { public_key, sequence: presented, attempt };
    retry(|| async {
        let binding: KeypairBinding =
            s.keypair_binding(token).await?.ok_or_else(|| StoreError::NotFound { kind: "keypair binding", name: token.to_string() })?;
        let rec = s.token_record(TokenKey::Name(token)).await?.ok_or_else(|| StoreError::NotFound { kind: "join_token", name: token.to_string() })?;
        match keypair_sequence::advance(&binding, &rec.state, join, now) {
            Advance::Join { next, sequence } => {
                s.swap_keypair(&binding, &next, Some(&rec), now).await?;
                Ok(sequence)
            }
            Advance::Repeat { sequence } => Ok(sequence),
            Advance::Lock { next, error } => {
                s.swap_keypair(&binding, &next, None, now).await?;
                Err(keypair_refused(error))
            }
            Advance::Refuse(error) => Err(keypair_refused(error)),
        }
    })
    .await
}
