//! AWS IAM join (`iam`): the agent proves an IAM identity by handing the broker
//! a SigV4-signed `sts:GetCallerIdentity` request that the broker sends to STS.
//!
//! Flow: `BeginJoin` returns a challenge; the agent signs a request carrying it
//! in the signed `x-sigil-challenge` header (so a captured request cannot be
//! replayed) and the name of the broker it dialed in the signed
//! `x-sigil-server-name` header (so a broker the agent joins cannot relay
//! another broker's challenge and use the signature there); `Join` sends the
//! signed request. The
//! broker checks and rebuilds it (`sts.rs`), sends it only to an allow-listed
//! endpoint (`sts_http.rs`), reads the caller identity and matches the token's
//! allow rules on `aws_account`, `aws_arn`, `aws_role_arn`, `aws_role`, `aws_user_id`.
//!
//! Token config: `sts_endpoints` (comma-separated extra endpoint URLs, e.g. a
//! local STS in tests). AWS's own STS hosts over HTTPS are always allowed.

use super::challenge::{Issued, Pending, TTL_SECS};
use super::sts::{self, AllowedEndpoints, StsError};
use super::{nonce, sts_http, JoinEnv, JoinError, JoinInput};
use sigil_core::domain::join_token::match_rules;
use sigil_core::domain::{Attributes, JoinToken};

/// Method name.
pub const METHOD: &str = sigil_core::domain::Method::Iam.name();

impl From<StsError> for JoinError {
    fn from(e: StsError) -> Self {
        match e {
            StsError::Payload(_) => JoinError::invalid("payload", e.to_string()),
            _ => JoinError::Rejected(e.to_string()),
        }
    }
}

impl From<sts_http::StsHttpError> for JoinError {
    fn from(e: sts_http::StsHttpError) -> Self {
        JoinError::Rejected(e.to_string())
    }
}

/// `BeginJoin`: issues the challenge to put in the signed request.
pub async fn begin(env: &JoinEnv<'_>, token: &JoinToken) -> Result<Issued, JoinError> {
    AllowedEndpoints::from_config(&token.config)?;
    let challenge = nonce::random_b64(32)?;
    let id = nonce::random_b64(18)?;
    let expires_at = env.now + TTL_SECS;
    let pending = Pending { method: METHOD.into(), token_name: token.name.to_string(), state: challenge.clone().into_bytes(), expires_at };
    env.store_challenge(&id, pending).await?;
    Ok(Issued { id, payload: challenge.into_bytes(), expires_at })
}

/// `Join`: checks the signed request, asks STS, matches the caller against the rules.
pub async fn verify(token: &JoinToken, input: &JoinInput, env: &JoinEnv<'_>) -> Result<Attributes, JoinError> {
    let pending = env.take_challenge(&input.challenge_id, METHOD, token.name.as_str()).await?;
    let challenge = String::from_utf8(pending.state).map_err(|_| JoinError::Internal("challenge state".into()))?;
    let allowed = AllowedEndpoints::from_config(&token.config)?;
    let request = sts::check_request(&input.payload, &allowed, &challenge, env.server_names, env.now)?;
    let response = sts_http::send(&request).await?;
    let caller = sts::parse_response(response.status, &response.body)?;
    let claims = caller.claims();
    match_rules(&token.allow, &claims).map_err(|why| JoinError::Rejected(format!("AWS caller {}: {why}", caller.arn)))?;
    Ok(claims)
}
