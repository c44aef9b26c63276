//! Join methods: each verifies a join credential against the rules of a join
//! token and yields the bot to join as plus join attributes (usable in
//! templates as `join.KEY`). One file per method; this module dispatches.
//!
//! Adding a method: add it to the registry (`domain::join_method`: its name,
//! [`Spec`](sigil_core::domain::join_method::Spec), settings struct and rule
//! fields), write `join/<method>.rs` with
//! `pub async fn verify(token: &JoinToken, input: &JoinInput, env: &JoinEnv) -> Result<Attributes, JoinError>`
//! (and `begin` for challenge methods), and the compiler points at the match
//! arms below (and at the CLI's client dispatch) that lack it.

pub mod aws_iam;
pub mod azure;
pub mod azure_pkcs7;
pub mod ber;
pub mod challenge;
pub mod azure_devops;
pub mod bitbucket;
pub mod bound_keypair;
pub mod circleci;
pub mod ec2;
pub mod ec2_certs;
pub mod fetch;
pub mod gcp;
pub mod generic_oidc;
pub mod github;
pub mod gitlab;
pub mod kubernetes;
pub mod kubernetes_cluster;
pub mod kubernetes_kubeconfig;
pub mod kubernetes_review;
pub mod oidc;
pub mod spacelift;
pub mod tenant;
pub mod terraform_cloud;
pub mod nonce;
pub use sigil_core::join_wire::{sts, tpm_wire};
pub mod sts_http;
pub mod token;
pub mod tpm;
pub mod tpm_credential;
pub mod tpm_ek_cert;

use sigil_core::domain::{Attributes, JoinToken, Method};
use crate::store::{Kind, Store, StoreError};

/// The outcome of a verified join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Bot to join as.
    pub bot: String,
    /// Join token (provision rules) name.
    pub token_name: String,
    /// Attributes: always `join.method`, `join.token`, plus method-specific claims.
    pub attributes: Attributes,
    /// An outside identity the new bot instance is bound to (`ec2`).
    pub binding: Option<Binding>,
}

/// An outside identity a join proved (the EC2 instance), bound to the bot
/// instance the join creates ([`Store::create_bound_instance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// What is bound (`ec2:ACCOUNT:INSTANCE_ID`).
    pub key: String,
    /// The join token allows a rejoin: move an existing binding.
    pub rebind: bool,
}

/// What the joining agent sent.
#[derive(Clone, Default)]
pub struct JoinInput {
    /// Method name.
    pub method: String,
    /// Secret (token method) or bearer credential (OIDC JWT ...). Secret: never logged.
    pub token: String,
    /// Join token whose rules apply (methods without a secret).
    pub token_name: String,
    /// Method-specific proof.
    pub payload: Vec<u8>,
    /// Challenge id from `BeginJoin`.
    pub challenge_id: String,
    /// The caller's address, for per-peer limits (none for in-process calls).
    pub peer: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for JoinInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinInput")
            .field("method", &self.method)
            .field("token", &"<redacted>")
            .field("token_name", &self.token_name)
            .field("payload_len", &self.payload.len())
            .field("peer", &self.peer)
            .finish()
    }
}

/// A join was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The credential does not satisfy the token's rules; says why.
    #[error("join rejected: {0}")]
    Rejected(String),
    /// The request is malformed.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Store outcome.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Internal failure.
    #[error("internal join error: {0}")]
    Internal(String),
    /// The join was refused. The caller is told only [`REFUSED`], whatever the
    /// reason (unknown, expired or used-up token, another method's token, a
    /// rule or a proof that does not match): a distinct answer would let anyone
    /// list token names and methods, or read a token's rules back claim by
    /// claim. `detail` says why, for the audit log only.
    #[error("{REFUSED}")]
    Refused {
        /// Why (audit only).
        detail: String,
    },
}

/// What every refused `Join` and `BeginJoin` answers.
pub const REFUSED: &str = "join refused: the join token does not accept this credential (the broker's audit log has the reason)";

impl JoinError {
    /// An `Invalid` error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }

    /// Folds every answer that depends on the join token (whether it exists,
    /// its method, expiry, uses, rules, bound key, or how the credential fails
    /// them) into [`JoinError::Refused`]. Internal and backend failures pass.
    pub fn refused(self) -> Self {
        let detail = match self {
            Self::Rejected(m) => m,
            Self::Invalid { .. } => self.to_string(),
            Self::Store(ref s @ (StoreError::TokenRejected(_) | StoreError::NotFound { .. } | StoreError::IdentityRejected(_))) => s.to_string(),
            other => return other,
        };
        Self::Refused { detail }
    }
}

/// Everything a method needs besides the input.
pub struct JoinEnv<'a> {
    /// Store (join tokens, uses).
    pub store: &'a dyn Store,
    /// Pending challenges.
    pub challenges: &'a challenge::Challenges,
    /// Now (Unix seconds).
    pub now: i64,
    /// Names of this broker's serving certificate (binds IAM join requests to it).
    pub server_names: &'a [String],
    /// Who is asking, for per-peer limits (challenges).
    pub peer: sigil_core::peer::PeerKey,
    /// Clusters whose TokenReview API the broker may ask (`kubernetes_clusters`).
    pub kubernetes_clusters: &'a kubernetes_cluster::Clusters,
}

impl JoinEnv<'_> {
    /// Stores challenge `id` issued to this caller (evicting as the flood
    /// policy says: never refused for being full).
    pub async fn store_challenge(&self, id: &str, pending: challenge::Pending) -> Result<(), JoinError> {
        Ok(self.challenges.insert(self.store, id.to_string(), pending, self.peer, self.now).await?)
    }

    /// Takes challenge `id` (single use, whichever replica issued it). Refused
    /// if unknown, used, expired, or issued for another method or join token
    /// (then it is used up all the same).
    pub async fn take_challenge(&self, id: &str, method: &str, token: &str) -> Result<challenge::Pending, JoinError> {
        self.challenges
            .take(self.store, id, self.now)
            .await?
            .filter(|p| p.method == method && p.token_name == token)
            .ok_or_else(|| JoinError::Rejected("unknown, used or expired challenge_id: call BeginJoin again".into()))
    }
}

/// Loads the named join token and checks it is for `method` and not expired.
/// Its errors are details for the audit log (see [`JoinError::refused`]).
pub async fn load_token(env: &JoinEnv<'_>, input: &JoinInput) -> Result<JoinToken, JoinError> {
    let doc = env.store.get(Kind::JoinToken, &input.token_name).await.map_err(|e| match e {
        StoreError::NotFound { .. } => JoinError::Rejected(format!("join token {:?} does not exist", input.token_name)),
        other => other.into(),
    })?;
    let t: JoinToken = serde_json::from_value(doc.spec).map_err(|e| JoinError::Internal(e.to_string()))?;
    if t.method != input.method {
        return Err(JoinError::Rejected(format!("join token {:?} is for method {:?}, not {:?}", t.name.as_str(), t.method, input.method)));
    }
    if t.expires_at <= env.now {
        return Err(JoinError::Rejected(format!("join token {:?} expired", t.name.as_str())));
    }
    Ok(t)
}

/// Refuses, before any token is read, what is wrong whatever the token:
/// an unknown method, a missing token name. These answers disclose nothing.
fn check_request(method: &str, token_name: &str) -> Result<Method, JoinError> {
    let m = Method::parse(method).map_err(|e| JoinError::invalid("method", e.to_string()))?;
    if m.spec().names_token && token_name.is_empty() {
        return Err(JoinError::invalid("token_name", format!("join method {method:?} needs the name of a join token")));
    }
    Ok(m)
}

fn base_attributes(method: &str, token: &str) -> Attributes {
    let mut a = Attributes::new();
    a.insert("join.method".into(), method.into());
    a.insert("join.token".into(), token.into());
    a
}

/// Attribute names the broker sets itself (`join.method`, `join.token`): a
/// claim of the same name is never an attribute, so an issuer (or anyone who
/// can choose claims, e.g. a generic OIDC issuer's users) cannot pose as
/// another join token or method in templates and conditions.
pub const RESERVED_ATTRIBUTES: &[&str] = &["method", "token"];

/// The `join.*` attributes of a verified join: the method's claims, minus any
/// claim named like a reserved attribute, then the broker's own values.
pub fn join_attributes(method: &str, token: &str, claims: Attributes) -> Attributes {
    let mut a: Attributes = claims
        .into_iter()
        .filter(|(k, _)| !RESERVED_ATTRIBUTES.contains(&k.as_str()))
        .map(|(k, v)| (format!("join.{k}"), v))
        .collect();
    a.extend(base_attributes(method, token));
    a
}

/// Verifies a join with whichever method the input names, and counts it
/// against the token's `max_uses` (every method; `token` and `bound_keypair`
/// count inside their own atomic store step). Every refusal that depends on
/// the token is a [`JoinError::Refused`].
pub async fn verify(env: &JoinEnv<'_>, input: &JoinInput) -> Result<Verified, JoinError> {
    let name = if input.method.is_empty() { Method::Token.name() } else { input.method.as_str() };
    let method = check_request(name, &input.token_name)?;
    if method == Method::Token {
        return token::verify(env.store, input, env.now).await;
    }
    verify_named(env, input, method).await.map_err(JoinError::refused)
}

/// The verifiers, one per method of the registry (exhaustive: a method
/// without a verifier does not compile).
async fn verify_named(env: &JoinEnv<'_>, input: &JoinInput, method: Method) -> Result<Verified, JoinError> {
    let t = load_token(env, input).await?;
    check_token(&t)?;
    let mut binding = None;
    let claims: Attributes = match method {
        Method::Token => return Err(JoinError::Internal("the token method joins by its secret".into())),
        Method::Github => github::verify(&t, input, env).await?,
        Method::Gitlab => gitlab::verify(&t, input, env).await?,
        Method::Circleci => circleci::verify(&t, input, env).await?,
        Method::Bitbucket => bitbucket::verify(&t, input, env).await?,
        Method::AzureDevops => azure_devops::verify(&t, input, env).await?,
        Method::TerraformCloud => terraform_cloud::verify(&t, input, env).await?,
        Method::Spacelift => spacelift::verify(&t, input, env).await?,
        Method::Oidc => generic_oidc::verify(&t, input, env).await?,
        Method::Kubernetes => kubernetes::verify(&t, input, env).await?,
        Method::BoundKeypair => bound_keypair::verify(&t, input, env).await?,
        Method::Iam => aws_iam::verify(&t, input, env).await?,
        Method::Tpm => tpm::verify(&t, input, env).await?,
        Method::Gcp => gcp::verify(&t, input, env).await?,
        Method::Azure => azure::verify(&t, input, env).await?,
        Method::Ec2 => {
            let (claims, b) = ec2::verify(&t, input, env).await?;
            binding = Some(b);
            claims
        }
    };
    if method != Method::BoundKeypair {
        // One conditional statement: concurrent joins cannot exceed max_uses.
        env.store.use_token(t.name.as_str(), env.now).await?;
    }
    let attributes = join_attributes(method.name(), t.name.as_str(), claims);
    Ok(Verified { bot: t.bot.to_string(), token_name: t.name.to_string(), attributes, binding })
}

/// First step of challenge-response methods.
pub async fn begin(env: &JoinEnv<'_>, method: &str, token_name: &str, payload: &[u8]) -> Result<challenge::Issued, JoinError> {
    let m = check_request(method, token_name)?;
    if !m.spec().challenge {
        return Err(JoinError::invalid("method", format!("join method {method:?} has no challenge step")));
    }
    let input = JoinInput { method: method.into(), token_name: token_name.into(), ..Default::default() };
    let issued = async {
        let t = load_token(env, &input).await?;
        check_token(&t)?;
        match m {
            Method::Iam => aws_iam::begin(env, &t).await,
            Method::Tpm => tpm::begin(env, &t, payload).await,
            Method::Azure => azure::begin(env, &t).await,
            Method::BoundKeypair => bound_keypair::begin(env, &t, payload).await,
            other => Err(JoinError::Internal(format!("join method {other} is listed as challenge-based but has no challenge step"))),
        }
    };
    issued.await.map_err(JoinError::refused)
}

/// Checks what a join token of each method must say whatever the credential:
/// first what the registry says (known settings, required settings, rule
/// fields: [`JoinToken::check_settings`]), then each method's own rules (a
/// pinned tenant on shared issuers, the Kubernetes and Azure opt-ins, a
/// usable bound key): at creation and update, so a mistake is told to the
/// administrator, and again at each join.
pub fn check_token(t: &JoinToken) -> Result<(), JoinError> {
    let (method, _) = t.check_settings().map_err(|e| JoinError::invalid(e.field(), e.message()))?;
    match method {
        Method::Github => github::check_token(t),
        Method::Gitlab => gitlab::check_token(t),
        Method::Circleci => circleci::check_token(t),
        Method::Bitbucket => bitbucket::check_token(t),
        Method::AzureDevops => azure_devops::check_token(t),
        Method::TerraformCloud => terraform_cloud::check_token(t),
        Method::Spacelift => spacelift::check_token(t),
        Method::Oidc => generic_oidc::check_token(t),
        Method::Kubernetes => kubernetes::check_token(t),
        Method::Azure => azure::check_token(t),
        Method::BoundKeypair => bound_keypair::check_token(t),
        Method::Ec2 => ec2::check_token(t),
        Method::Token | Method::Iam | Method::Tpm | Method::Gcp => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_named_like_reserved_attributes_cannot_overwrite_them() {
        let claims: Attributes = [("token", "prod-deployer"), ("method", "token"), ("sub", "job-1")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let a = join_attributes("oidc", "jenkins", claims);
        assert_eq!((a["join.token"].as_str(), a["join.method"].as_str(), a["join.sub"].as_str()), ("jenkins", "oidc", "job-1"));
        assert_eq!(a.len(), 3);
    }
}
