//! CRUD for roles, bots, join tokens and workload identities, authorized by verb
//! and audited. One generic path serves every kind.

use super::{Broker, ServiceError};
use crate::domain::{Bot, Caller, JoinToken, Name, Role, TokenSecret, WorkloadIdentity};
use crate::store::{Doc, Kind, StoreError, TokenState};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;

/// Largest page a list returns.
pub const MAX_PAGE: usize = 1000;

/// A stored resource kind.
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Store kind.
    const KIND: Kind;
    /// Name.
    fn name(&self) -> &Name;
    /// Revision.
    fn revision(&self) -> i64;
    /// Sets the revision.
    fn set_revision(&mut self, r: i64);
    /// Validates contents (now for expiry checks).
    fn validate(&self, now: i64) -> Result<(), crate::domain::DomainError>;
}

macro_rules! resource {
    ($t:ty, $kind:expr, |$s:ident, $now:ident| $validate:expr) => {
        impl Resource for $t {
            const KIND: Kind = $kind;
            fn name(&self) -> &Name {
                &self.name
            }
            fn revision(&self) -> i64 {
                self.revision
            }
            fn set_revision(&mut self, r: i64) {
                self.revision = r;
            }
            fn validate(&self, $now: i64) -> Result<(), crate::domain::DomainError> {
                let $s = self;
                $validate
            }
        }
    };
}

resource!(Role, Kind::Role, |s, _now| s.validate());
resource!(Bot, Kind::Bot, |s, _now| s.validate());
resource!(JoinToken, Kind::JoinToken, |s, now| s.validate(now));
resource!(WorkloadIdentity, Kind::WorkloadIdentity, |s, _now| s.validate());

fn to_doc<T: Resource>(r: &T) -> Result<Doc, ServiceError> {
    let mut spec = serde_json::to_value(r).map_err(|e| ServiceError::Internal(e.to_string()))?;
    if let Some(o) = spec.as_object_mut() {
        o.remove("revision");
        // Bot state is kept per instance, not in the document.
        o.remove("generation");
        o.remove("locked");
        o.remove("uses");
    }
    Ok(Doc { name: r.name().to_string(), revision: r.revision(), spec })
}

fn from_doc<T: Resource>(d: Doc) -> Result<T, ServiceError> {
    let mut r: T = serde_json::from_value(d.spec)
        .map_err(|e| ServiceError::Internal(format!("stored {} {:?} unreadable: {e}", T::KIND.as_str(), d.name)))?;
    r.set_revision(d.revision);
    Ok(r)
}

impl Broker {
    async fn authorize(&self, caller: &Caller, kind: Kind, verb: &str, name: &str) -> Result<(), ServiceError> {
        if let Err(denied) = caller.check_verb(kind.as_str(), verb) {
            self.audit
                .record(self.now(), &format!("{}.{verb}", kind.as_str()), caller.bot.name.as_str(), name, "denied", json!({"reason": denied.0}))
                .await;
            return Err(denied.into());
        }
        Ok(())
    }

    async fn audit_ok(&self, caller: &Caller, kind: Kind, verb: &str, name: &str, revision: i64) {
        self.audit
            .record(self.now(), &format!("{}.{verb}", kind.as_str()), caller.bot.name.as_str(), name, "ok", json!({"revision": revision}))
            .await;
    }

    /// Checks references between resources (a bot's roles, a token's bot exist).
    async fn check_references<T: Resource>(&self, r: &T) -> Result<(), ServiceError> {
        let v = serde_json::to_value(r).map_err(|e| ServiceError::Internal(e.to_string()))?;
        if T::KIND == Kind::Bot {
            for (i, role) in v["roles"].as_array().into_iter().flatten().enumerate() {
                let name = role.as_str().unwrap_or_default();
                if let Err(StoreError::NotFound { .. }) = self.store.get(Kind::Role, name).await {
                    return Err(ServiceError::invalid(format!("roles[{i}]"), format!("role {name:?} does not exist")));
                }
            }
        }
        if T::KIND == Kind::JoinToken {
            let bot = v["bot"].as_str().unwrap_or_default();
            if let Err(StoreError::NotFound { .. }) = self.store.get(Kind::Bot, bot).await {
                return Err(ServiceError::invalid("bot", format!("bot {bot:?} does not exist")));
            }
        }
        Ok(())
    }

    /// Creates a resource (revision must be 0).
    pub async fn create<T: Resource>(&self, caller: &Caller, r: T) -> Result<T, ServiceError> {
        self.authorize(caller, T::KIND, "create", r.name().as_str()).await?;
        if r.revision() != 0 {
            return Err(ServiceError::invalid("revision", "must be 0 on create"));
        }
        r.validate(self.now())?;
        self.check_references(&r).await?;
        let mut out = r.clone();
        out.set_revision(self.store.create(T::KIND, &to_doc(&r)?, None).await?);
        self.audit_ok(caller, T::KIND, "create", r.name().as_str(), out.revision()).await;
        Ok(out)
    }

    /// Reads a resource.
    pub async fn get<T: Resource>(&self, caller: &Caller, name: &str) -> Result<T, ServiceError> {
        self.authorize(caller, T::KIND, "read", name).await?;
        from_doc(self.store.get(T::KIND, name).await?)
    }

    /// Lists resources.
    pub async fn list<T: Resource>(&self, caller: &Caller, after: &str, limit: usize) -> Result<Vec<T>, ServiceError> {
        self.authorize(caller, T::KIND, "list", "*").await?;
        let limit = if limit == 0 { MAX_PAGE } else { limit.min(MAX_PAGE) };
        self.store.list(T::KIND, after, limit).await?.into_iter().map(from_doc).collect()
    }

    /// Updates a resource at the revision the caller read.
    pub async fn update<T: Resource>(&self, caller: &Caller, r: T) -> Result<T, ServiceError> {
        self.authorize(caller, T::KIND, "update", r.name().as_str()).await?;
        if T::KIND == Kind::JoinToken {
            return Err(ServiceError::invalid("join_token", "use update_join_token"));
        }
        r.validate(self.now())?;
        self.check_references(&r).await?;
        let mut out = r.clone();
        out.set_revision(self.store.update(T::KIND, &to_doc(&r)?, None).await?);
        self.audit_ok(caller, T::KIND, "update", r.name().as_str(), out.revision()).await;
        Ok(out)
    }

    /// Deletes a resource (revision 0 = any).
    pub async fn delete<T: Resource>(&self, caller: &Caller, name: &str, revision: i64) -> Result<(), ServiceError> {
        self.authorize(caller, T::KIND, "delete", name).await?;
        self.store.delete(T::KIND, name, revision).await?;
        self.audit_ok(caller, T::KIND, "delete", name, revision).await;
        Ok(())
    }

    /// Creates a join token and returns it with its secret (shown once).
    pub async fn create_join_token(&self, caller: &Caller, t: JoinToken) -> Result<(JoinToken, TokenSecret), ServiceError> {
        self.authorize(caller, Kind::JoinToken, "create", t.name.as_str()).await?;
        if t.revision != 0 {
            return Err(ServiceError::invalid("revision", "must be 0 on create"));
        }
        t.validate(self.now())?;
        crate::join::check_token(&t)?;
        self.check_references(&t).await?;
        let secret = TokenSecret::new(new_secret()?);
        let state = token_state(&t);
        let mut out = t.clone();
        out.uses = 0;
        out.revision = self.store.create(Kind::JoinToken, &to_doc(&t)?, Some((&state, &secret.hash()))).await?;
        self.audit
            .record(self.now(), "join_token.create", caller.bot.name.as_str(), t.name.as_str(), "ok",
                json!({"bot": t.bot.as_str(), "method": t.method, "max_uses": t.max_uses, "expires_at": t.expires_at}))
            .await;
        Ok((out, secret))
    }

    /// Updates a join token's expiry and use count.
    pub async fn update_join_token(&self, caller: &Caller, t: JoinToken) -> Result<JoinToken, ServiceError> {
        self.authorize(caller, Kind::JoinToken, "update", t.name.as_str()).await?;
        t.validate(self.now())?;
        crate::join::check_token(&t)?;
        let current: JoinToken = from_doc(self.store.get(Kind::JoinToken, t.name.as_str()).await?)?;
        if current.bot != t.bot || current.method != t.method {
            return Err(ServiceError::invalid(
                if current.bot != t.bot { "bot" } else { "method" },
                "cannot change on an existing join token; create a new token",
            ));
        }
        let mut out = t.clone();
        out.revision = self.store.update(Kind::JoinToken, &to_doc(&t)?, Some(&token_state(&t))).await?;
        out.uses = self.store.token_state(t.name.as_str()).await?.uses;
        self.audit_ok(caller, Kind::JoinToken, "update", t.name.as_str(), out.revision).await;
        Ok(out)
    }

    /// Reads a join token with its use count.
    pub async fn get_join_token(&self, caller: &Caller, name: &str) -> Result<JoinToken, ServiceError> {
        let mut t: JoinToken = self.get(caller, name).await?;
        t.uses = self.store.token_state(name).await?.uses;
        Ok(t)
    }
}

fn token_state(t: &JoinToken) -> TokenState {
    TokenState {
        name: t.name.to_string(),
        bot: t.bot.to_string(),
        method: t.method.clone(),
        uses: 0,
        max_uses: t.max_uses,
        expires_at: t.expires_at,
    }
}

/// Prefix of every join token secret: makes leaked secrets easy for scanners to
/// find, and keeps a secret from starting with `-` (which a CLI would read as a flag).
pub const SECRET_PREFIX: &str = "sigil_";

/// 256 random bits, base64url, behind [`SECRET_PREFIX`]: a join token secret.
pub fn new_secret() -> Result<String, ServiceError> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine as _;
    let mut b = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| ServiceError::Internal("random generation failed".into()))?;
    Ok(format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_the_prefix_and_never_start_with_a_dash() {
        for _ in 0..200 {
            let s = new_secret().unwrap();
            assert!(s.starts_with(SECRET_PREFIX) && s.len() == SECRET_PREFIX.len() + 43, "{s}");
        }
        assert_ne!(new_secret().unwrap(), new_secret().unwrap());
    }
}
