//! The `token` join method: a secret, single- or multi-use, with expiry. The
//! secret is looked up by hash and one use consumed atomically in the store.

use super::{base_attributes, JoinError, JoinInput, Verified};
use sigil_core::domain::TokenSecret;
use crate::store::Store;

/// The method name.
pub const METHOD: &str = sigil_core::domain::Method::Token.name();

/// Redeems a token secret. Only the secret of a `token`-method token redeems;
/// a secret of another method's token is refused (and audited) like an
/// unknown one.
pub async fn verify(store: &dyn Store, input: &JoinInput, now: i64) -> Result<Verified, JoinError> {
    if input.token.is_empty() {
        return Err(JoinError::invalid("token", "the token secret is required for join method \"token\""));
    }
    if input.token.len() > 512 {
        return Err(JoinError::invalid("token", "too long to be a join token"));
    }
    let state = store.consume_token(&TokenSecret::new(input.token.clone()).hash(), now).await.map_err(|e| JoinError::from(e).refused())?;
    Ok(Verified { bot: state.bot, attributes: base_attributes(METHOD, &state.name), token_name: state.name, binding: None })
}
