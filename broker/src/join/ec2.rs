//! EC2 join (`ec2`): the instance identity document signed by AWS (PKCS#7,
//! RSA-2048, one certificate per region; shipped, or `config.signing_certificates`).
//! The instance id is bound to one bot instance.
//!
//! CONTRACT STUB (issue 17): the verifier is being built; every join is refused.

use super::{JoinEnv, JoinError, JoinInput};
use sigil_core::domain::{Attributes, JoinToken};

/// What the join token must say, whatever the credential.
pub fn check_token(_t: &JoinToken) -> Result<(), JoinError> {
    Ok(())
}

/// Verifies an identity document against the join token.
pub async fn verify(_t: &JoinToken, _input: &JoinInput, _env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    Err(JoinError::Rejected("the ec2 join method is not built yet".into()))
}
