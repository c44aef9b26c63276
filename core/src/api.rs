//! Limits of the broker API that both ends must agree on.

/// Largest number of SVID requests in one batch, X.509 and JWT together.
pub const MAX_BATCH: usize = 64;
