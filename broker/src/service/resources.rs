//! CRUD for roles, bots, join tokens, workload identities and locks (created
//! by `locks`), authorized by verb
//! (and resource name) and audited. One generic path serves every kind.
//!
//! Writes that hand out power are also checked against escalation (see
//! [`sigil_core::domain::escalation`]): a role's grants, the roles attached to a bot,
//! the roles of the bot a join token is for, and a workload identity's SPIFFE
//! ID must not go beyond what the caller holds, unless it holds `escalate`
//! (role contents, workload identities) or `bind` (attaching a role).

use super::{Broker, ServiceError};
use sigil_core::domain::{glob, Bot, Caller, DefaultCaps, Denied, JoinToken, Lock, Name, Role, TokenSecret, WorkloadIdentity};
use crate::store::{Doc, Kind, StoreError, TokenState, TokenUpdate};
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
    fn validate(&self, now: i64) -> Result<(), sigil_core::domain::DomainError>;
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
            fn validate(&self, $now: i64) -> Result<(), sigil_core::domain::DomainError> {
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
resource!(Lock, Kind::Lock, |s, now| s.validate(now));

/// Roles and bots about to be written in the same request (`apply`): they
/// count as existing, with their new contents, in the checks of the others.
pub(super) struct Staged<'a> {
    /// Roles of the request.
    pub roles: &'a [Role],
    /// Bots of the request.
    pub bots: &'a [Bot],
}

impl Staged<'_> {
    /// A single-resource call: nothing staged.
    pub const NONE: Staged<'static> = Staged { roles: &[], bots: &[] };

    /// Where a missing reference was looked for, for its error.
    fn where_looked(&self) -> &'static str {
        if self.roles.is_empty() && self.bots.is_empty() {
            ""
        } else {
            " (neither stored nor in this apply)"
        }
    }
}

/// A join token's bot and method are fixed once it exists.
pub(super) fn check_token_immutable(current: &JoinToken, t: &JoinToken) -> Result<(), ServiceError> {
    if current.bot != t.bot || current.method != t.method {
        return Err(ServiceError::invalid(
            if current.bot != t.bot { "bot" } else { "method" },
            "cannot change on an existing join token; delete it and create it again, or use a token of another name",
        ));
    }
    Ok(())
}

/// The store update of join token `current` to `t`: its state, and whether a
/// new `config.public_key` unbinds the bound keypair.
pub(super) fn token_update(current: &JoinToken, t: &JoinToken) -> TokenUpdate {
    TokenUpdate { state: token_state(t), unbind_keypair: crate::join::bound_keypair::key_changed(current, t) }
}

/// Audit detail of a join token update.
pub(super) fn token_update_detail(update: &TokenUpdate, mut detail: serde_json::Value) -> serde_json::Value {
    if update.unbind_keypair {
        detail["keypair_binding"] = json!("removed: config.public_key changed; the new key binds at its next join");
    }
    detail
}

/// Audit detail of a join token creation.
pub(super) fn token_create_detail(t: &JoinToken) -> serde_json::Value {
    json!({"bot": t.bot.as_str(), "method": t.method, "max_uses": t.max_uses, "expires_at": t.expires_at})
}

pub(super) fn to_doc<T: Resource>(r: &T) -> Result<Doc, ServiceError> {
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

pub(super) fn from_doc<T: Resource>(d: Doc) -> Result<T, ServiceError> {
    let mut r: T = serde_json::from_value(d.spec)
        .map_err(|e| ServiceError::Internal(format!("stored {} {:?} unreadable: {e}", T::KIND.as_str(), d.name)))?;
    r.set_revision(d.revision);
    Ok(r)
}

impl Broker {
    pub(super) async fn authorize(&self, caller: &Caller, kind: Kind, verb: &str, name: &str) -> Result<(), ServiceError> {
        match caller.check_verb_on(kind.as_str(), verb, name) {
            Ok(()) => Ok(()),
            Err(denied) => Err(self.deny(caller, kind, verb, name, denied).await),
        }
    }

    /// Audits a denial and returns it as the error to send.
    pub(super) async fn deny(&self, caller: &Caller, kind: Kind, verb: &str, name: &str, denied: Denied) -> ServiceError {
        self.audit
            .record(self.now(), &format!("{}.{verb}", kind.as_str()), caller.bot.name.as_str(), name, "denied", json!({"reason": denied.0}))
            .await;
        denied.into()
    }

    fn default_caps(&self) -> DefaultCaps {
        DefaultCaps { x509: self.settings.x509_max_ttl, jwt: self.settings.jwt_max_ttl, ssh: self.settings.ssh_max_ttl, tls: self.settings.tls_max_ttl }
    }

    /// Refuses a write that would grant more than the caller holds (see the
    /// module header); audited like any denial.
    ///
    /// `staged`: roles about to be written in the same request (`apply`),
    /// whose new contents count instead of the stored ones.
    pub(super) async fn check_escalation<T: Resource>(&self, caller: &Caller, verb: &str, r: &T, staged: &[Role]) -> Result<(), ServiceError> {
        let any: &dyn std::any::Any = r;
        let name = r.name().as_str();
        let result = if let Some(role) = any.downcast_ref::<Role>() {
            caller.covers_allow(&role.allow, self.default_caps()).or_else(|why| {
                caller.check_verb_on("role", "escalate", name).map_err(|_| {
                    Denied(format!(
                        "bot {:?} may not {verb} role {name:?}: {why}; writing grants beyond your own needs verb \"escalate\" on role {name:?}",
                        caller.bot.name.as_str()
                    ))
                })
            })
        } else if let Some(bot) = any.downcast_ref::<Bot>() {
            self.check_roles_bindable(caller, bot, &format!("attach roles to bot {name:?}"), staged).await?
        } else if let Some(wi) = any.downcast_ref::<WorkloadIdentity>() {
            // What an update may keep without escalate; unreadable counts as nothing.
            let stored: Option<WorkloadIdentity> = match verb {
                "update" => self.store.get(Kind::WorkloadIdentity, name).await.ok().map(from_doc).transpose()?,
                _ => None,
            };
            caller.covers_path_template(&wi.spiffe_id).and_then(|()| new_unscoped_contents(wi, stored.as_ref())).or_else(|why| {
                caller.check_verb_on("workload_identity", "escalate", name).map_err(|_| {
                    Denied(format!(
                        "bot {:?} may not {verb} workload identity {name:?}: {why}; that needs verb \"escalate\" on workload_identity {name:?}",
                        caller.bot.name.as_str()
                    ))
                })
            })
        } else {
            Ok(())
        };
        match result {
            Ok(()) => Ok(()),
            Err(denied) => Err(self.deny(caller, T::KIND, verb, name, denied).await),
        }
    }

    /// Each role of `bot` must be within the caller's grants, or the caller must
    /// hold `bind` on it. `doing` names the action for the denial; a role in
    /// `staged` counts with its new contents.
    pub(super) async fn check_roles_bindable(&self, caller: &Caller, bot: &Bot, doing: &str, staged: &[Role]) -> Result<Result<(), Denied>, ServiceError> {
        for role_name in &bot.roles {
            if let Some(r) = staged.iter().find(|r| r.name == *role_name) {
                if let Err(why) = caller.covers_allow(&r.allow, self.default_caps()) {
                    if caller.check_verb_on("role", "bind", role_name.as_str()).is_err() {
                        return Ok(Err(unbindable(caller, doing, role_name.as_str(), &why)));
                    }
                }
                continue;
            }
            let role: Role = match self.store.get(Kind::Role, role_name.as_str()).await {
                Ok(d) => from_doc(d)?,
                // A missing role grants nothing (references are checked elsewhere).
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Err(why) = caller.covers_allow(&role.allow, self.default_caps()) {
                if caller.check_verb_on("role", "bind", role_name.as_str()).is_err() {
                    return Ok(Err(unbindable(caller, doing, role_name.as_str(), &why)));
                }
            }
        }
        Ok(Ok(()))
    }

    /// The bot a join token is for, from `staged` or the store.
    pub(super) async fn token_bot(&self, t: &JoinToken, staged: &Staged<'_>) -> Result<Bot, ServiceError> {
        if let Some(b) = staged.bots.iter().find(|b| b.name == t.bot) {
            return Ok(b.clone());
        }
        match self.current(Kind::Bot, t.bot.as_str()).await? {
            Some(d) => from_doc(d),
            None => Err(ServiceError::invalid("bot", format!("bot {:?} does not exist{}", t.bot.as_str(), staged.where_looked()))),
        }
    }

    /// A join token lets its holder become `bot`: the caller must be able to
    /// bind every role of that bot (a role in `staged` with its new contents).
    pub(super) async fn check_token_bindable(&self, caller: &Caller, verb: &str, t: &JoinToken, bot: &Bot, staged: &Staged<'_>) -> Result<(), ServiceError> {
        let doing = format!("{verb} a join token for bot {:?}", t.bot.as_str());
        match self.check_roles_bindable(caller, bot, &doing, staged.roles).await? {
            Ok(()) => Ok(()),
            Err(denied) => Err(self.deny(caller, Kind::JoinToken, verb, t.name.as_str(), denied).await),
        }
    }

    /// What every write of a join token checks first: its fields, its join
    /// method's settings and, for `kubernetes`, the cluster it names.
    pub(super) fn check_token_settings(&self, t: &JoinToken) -> Result<(), ServiceError> {
        t.validate(self.now())?;
        crate::join::check_token(t)?;
        crate::join::kubernetes::check_cluster(t, &self.settings.kubernetes_clusters)?;
        Ok(())
    }

    async fn audit_ok(&self, caller: &Caller, kind: Kind, verb: &str, name: &str, revision: i64) {
        self.audit
            .record(self.now(), &format!("{}.{verb}", kind.as_str()), caller.bot.name.as_str(), name, "ok", json!({"revision": revision}))
            .await;
    }

    /// The stored document, if any.
    pub(super) async fn current(&self, kind: Kind, name: &str) -> Result<Option<Doc>, ServiceError> {
        match self.store.get(kind, name).await {
            Ok(d) => Ok(Some(d)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A bot's roles exist, stored or in `staged` (a join token's bot is
    /// checked by [`Broker::token_bot`]).
    pub(super) async fn check_references<T: Resource>(&self, r: &T, staged: &Staged<'_>) -> Result<(), ServiceError> {
        let any: &dyn std::any::Any = r;
        let Some(bot) = any.downcast_ref::<Bot>() else { return Ok(()) };
        for (i, role) in bot.roles.iter().enumerate() {
            if staged.roles.iter().any(|s| s.name == *role) || self.current(Kind::Role, role.as_str()).await?.is_some() {
                continue;
            }
            return Err(ServiceError::invalid(
                format!("roles[{i}]"),
                format!("role {:?} does not exist{}", role.as_str(), staged.where_looked()),
            ));
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
        self.check_references(&r, &Staged::NONE).await?;
        self.check_escalation(caller, "create", &r, &[]).await?;
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

    /// Lists resources; a caller whose `list` rules are limited to names sees
    /// only those.
    pub async fn list<T: Resource>(&self, caller: &Caller, after: &str, limit: usize) -> Result<Vec<T>, ServiceError> {
        let globs = match caller.names_granted(T::KIND.as_str(), "list") {
            Ok(g) => g,
            Err(denied) => return Err(self.deny(caller, T::KIND, "list", "*", denied).await),
        };
        let limit = if limit == 0 { MAX_PAGE } else { limit.min(MAX_PAGE) };
        let Some(globs) = globs else {
            return self.store.list(T::KIND, after, limit).await?.into_iter().map(from_doc).collect();
        };
        let mut out = Vec::new();
        let mut cursor = after.to_string();
        loop {
            let page = self.store.list(T::KIND, &cursor, MAX_PAGE).await?;
            let last_page = page.len() < MAX_PAGE;
            for d in page {
                cursor.clone_from(&d.name);
                if globs.iter().any(|g| glob::matches(g, &d.name)) {
                    out.push(from_doc(d)?);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if last_page {
                return Ok(out);
            }
        }
    }

    /// Updates a resource at the revision the caller read.
    pub async fn update<T: Resource>(&self, caller: &Caller, r: T) -> Result<T, ServiceError> {
        self.authorize(caller, T::KIND, "update", r.name().as_str()).await?;
        if T::KIND == Kind::JoinToken {
            return Err(ServiceError::invalid("join_token", "use update_join_token"));
        }
        r.validate(self.now())?;
        self.check_references(&r, &Staged::NONE).await?;
        self.check_escalation(caller, "update", &r, &[]).await?;
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

    /// Creates a join token and returns it with its secret (shown once), for
    /// the methods that have one ([`JoinToken::has_secret`]).
    pub async fn create_join_token(&self, caller: &Caller, t: JoinToken) -> Result<(JoinToken, Option<TokenSecret>), ServiceError> {
        self.authorize(caller, Kind::JoinToken, "create", t.name.as_str()).await?;
        if t.revision != 0 {
            return Err(ServiceError::invalid("revision", "must be 0 on create"));
        }
        self.check_token_settings(&t)?;
        let bot = self.token_bot(&t, &Staged::NONE).await?;
        self.check_token_bindable(caller, "create", &t, &bot, &Staged::NONE).await?;
        let secret = if t.has_secret() { Some(TokenSecret::new(new_secret()?)) } else { None };
        let hash = secret.as_ref().map(TokenSecret::hash);
        let state = token_state(&t);
        let mut out = t.clone();
        out.uses = 0;
        out.revision = self.store.create(Kind::JoinToken, &to_doc(&t)?, Some((&state, hash.as_deref()))).await?;
        self.audit.record(self.now(), "join_token.create", caller.bot.name.as_str(), t.name.as_str(), "ok", token_create_detail(&t)).await;
        Ok((out, secret))
    }

    /// Updates a join token's expiry, use limit, rules and settings. A new
    /// `config.public_key` of a bound-keypair token rotates the binding: the
    /// new key joins (from sequence 0), the old one is refused.
    pub async fn update_join_token(&self, caller: &Caller, t: JoinToken) -> Result<JoinToken, ServiceError> {
        self.authorize(caller, Kind::JoinToken, "update", t.name.as_str()).await?;
        self.check_token_settings(&t)?;
        let current: JoinToken = from_doc(self.store.get(Kind::JoinToken, t.name.as_str()).await?)?;
        check_token_immutable(&current, &t)?;
        let bot = self.token_bot(&t, &Staged::NONE).await?;
        self.check_token_bindable(caller, "update", &t, &bot, &Staged::NONE).await?;
        let update = token_update(&current, &t);
        let mut out = t.clone();
        out.revision = self.store.update(Kind::JoinToken, &to_doc(&t)?, Some(&update)).await?;
        out.uses = self.store.token_state(t.name.as_str()).await?.uses;
        let detail = token_update_detail(&update, json!({"revision": out.revision}));
        self.audit.record(self.now(), "join_token.update", caller.bot.name.as_str(), t.name.as_str(), "ok", detail).await;
        Ok(out)
    }

    /// Reads a join token with its use count.
    pub async fn get_join_token(&self, caller: &Caller, name: &str) -> Result<JoinToken, ServiceError> {
        let mut t: JoinToken = self.get(caller, name).await?;
        t.uses = self.store.token_state(name).await?.uses;
        Ok(t)
    }
}

/// The denial of attaching a role that grants more than the caller holds.
fn unbindable(caller: &Caller, doing: &str, role: &str, why: &impl std::fmt::Display) -> Denied {
    Denied(format!(
        "bot {:?} may not {doing}: role {role:?} grants more than the caller holds ({why}); that needs verb \"bind\" on role {role:?}",
        caller.bot.name.as_str()
    ))
}

/// DNS SANs and extra JWT claims are granted by no role: a caller without
/// `escalate` may keep those a workload identity has, not add or change any.
fn new_unscoped_contents(wi: &WorkloadIdentity, stored: Option<&WorkloadIdentity>) -> Result<(), String> {
    let had = |d: &String| stored.is_some_and(|s| s.dns_sans.contains(d));
    if let Some(d) = wi.dns_sans.iter().find(|d| !had(d)) {
        return Err(format!("DNS SAN {d:?} is granted by no role"));
    }
    let kept = |k: &String, v: &String| stored.is_some_and(|s| s.jwt_extra_claims.get(k) == Some(v));
    if let Some((k, _)) = wi.jwt_extra_claims.iter().find(|(k, v)| !kept(k, v)) {
        return Err(format!("JWT claim {k:?} is granted by no role"));
    }
    Ok(())
}

pub(super) fn token_state(t: &JoinToken) -> TokenState {
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
