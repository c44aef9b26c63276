//! The `token` join method: a secret, single- or multi-use, with expiry. The
//! secret is looked up by hash and one use consumed atomically in the store.

use super::Verified;
use crate::domain::TokenSecret;
use crate::store::{Store, StoreError};

/// Redeems a token secret.
pub async fn verify(store: &dyn Store, secret: &TokenSecret, now: i64) -> Result<Verified, StoreError> {
    let state = store.consume_token(&secret.hash(), now).await?;
    let mut attributes = crate::domain::Attributes::new();
    attributes.insert("join.method".into(), "token".into());
    attributes.insert("join.token".into(), state.name.clone());
    Ok(Verified { bot: state.bot, token_name: state.name, attributes })
}
