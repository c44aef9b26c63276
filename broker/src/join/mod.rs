//! Join methods: each verifies a join credential and yields the bot to join as and
//! the join attributes (usable in templates as `join.KEY`). One file per method.

pub mod token;

use crate::domain::Attributes;

/// The outcome of a verified join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Bot to join as.
    pub bot: String,
    /// Join token (provision rules) name.
    pub token_name: String,
    /// Attributes: always `join.method`, `join.token`, plus method-specific claims.
    pub attributes: Attributes,
}
