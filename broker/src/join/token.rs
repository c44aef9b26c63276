//! The `token` join method: a secret, single- or multi-use, with expiry. The
//! secret is looked up by hash and one use consumed atomically in the store.

use super::{base_attributes, JoinError, JoinInput, Verified};
use crate::domain::TokenSecret;
use crate::store::Store;

/// Redeems a token secret.
pub async fn verify(store: &dyn Store, input: &JoinInput, now: i64) -> Result<Verified, JoinError> {
    if input.token.is_empty() {
        return Err(JoinError::invalid("token", "the token secret is required for join method \"token\""));
    }
    if input.token.len() > 512 {
        return Err(JoinError::invalid("token", "too long to be a join token"));
    }
    let state = store.consume_token(&TokenSecret::new(input.token.clone()).hash(), now).await?;
    Ok(Verified { bot: state.bot, attributes: base_attributes("token", &state.name), token_name: state.name })
}
