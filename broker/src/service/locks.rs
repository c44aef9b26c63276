//! Locks: their API (RBAC kind `lock`: create, read, list, delete; audited)
//! and the lock set every request consults.
//!
//! Which request a lock stops is decided by the pure
//! [`sigil_core::domain::lock`]; this module keeps the locks at hand and asks.
//!
//! The lock set is per replica, in memory: one read of the store's change
//! counter, one `RwLock` read and hash lookups per request. It is rebuilt from
//! the store (one list of the `lock` documents) when that counter has moved
//! since it was read, which every committed change does (a lock created or
//! deleted on this replica at once; on another replica within the PostgreSQL
//! store's change poll, `store::postgres::CHANGE_POLL` = 500 ms, plus one poll
//! query). That is the bound on how long a new lock can go unenforced by a
//! replica; expiry needs no reload (judged at each check with the broker's
//! clock). Rebuilds run one at a time: requests arriving meanwhile wait for it
//! rather than listing the locks again. A rebuild that fails fails the request
//! (a lock is never skipped because the store hiccupped).
//!
//! The check is per request, not per connection: an HTTP/2 connection opened
//! before the lock carries the locked caller's next request to
//! [`Broker::authenticate`], which refuses it.
//!
//! What the locked caller is told is only [`LOCKED`]; the lock's name and
//! reason go to the audit log (rate limited per peer like other refusals a
//! caller can repeat at will, `crate::audit::throttle`).

use super::identity::Authenticated;
use super::resources::MAX_PAGE;
use super::{Broker, ServiceError};
use crate::store::{Doc, Kind, TokenKey};
use serde_json::json;
use sigil_core::domain::lock::{Lock, LockSet, LockTarget, Subject, MAX_LOCKS};
use sigil_core::domain::{Method, TokenSecret};
use sigil_core::peer::PeerKey;
use std::sync::{Arc, RwLock};

/// What a locked caller (or a join refused by a lock) is told, whatever the
/// lock: the reason is for operators.
pub const LOCKED: &str = "refused: locked by an administrator (the broker's audit log names the lock)";

/// The locks as last read, tagged with the change counter read before them.
#[derive(Debug, Default)]
pub struct Loaded {
    /// `None` until the first read.
    counter: Option<u64>,
    /// The locks.
    pub set: LockSet,
}

/// This replica's lock set (see the module header).
#[derive(Default)]
pub struct LockCache {
    current: RwLock<Arc<Loaded>>,
    reload: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for LockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockCache")
    }
}

impl LockCache {
    fn at(&self, counter: u64) -> Option<Arc<Loaded>> {
        let l = self.current.read().ok()?;
        (l.counter == Some(counter)).then(|| l.clone())
    }

    fn put(&self, loaded: Arc<Loaded>) {
        if let Ok(mut l) = self.current.write() {
            *l = loaded;
        }
    }
}

/// The refusal of a request `lock` stops.
fn locked(l: &Lock) -> ServiceError {
    ServiceError::Locked {
        lock: l.name.to_string(),
        target: format!("{} {:?}", l.target.kind(), l.target.value()),
        reason: l.reason.clone(),
    }
}

impl Broker {
    /// The current lock set: the one in memory if the store has not changed
    /// since it was read, else read again.
    pub async fn locks(&self) -> Result<Arc<Loaded>, ServiceError> {
        if let Some(l) = self.locks.at(self.store.change_counter()) {
            return Ok(l);
        }
        let _one = self.locks.reload.lock().await;
        // Read before the records (see `Store::change_counter`).
        let counter = self.store.change_counter();
        if let Some(l) = self.locks.at(counter) {
            return Ok(l);
        }
        let loaded = Arc::new(Loaded { counter: Some(counter), set: LockSet::new(self.read_locks().await?) });
        self.locks.put(loaded.clone());
        Ok(loaded)
    }

    /// Every stored lock. A document that does not parse is skipped and
    /// logged (it was not written by this broker).
    async fn read_locks(&self) -> Result<Vec<Lock>, ServiceError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.store.list(Kind::Lock, &after, MAX_PAGE).await?;
            let last_page = page.len() < MAX_PAGE;
            for d in page {
                after.clone_from(&d.name);
                match serde_json::from_value::<Lock>(d.spec) {
                    Ok(l) => out.push(l),
                    Err(e) => tracing::error!(lock = %d.name, error = %e, "stored lock unreadable; it is not enforced"),
                }
            }
            if last_page || out.len() > MAX_LOCKS {
                return Ok(out);
            }
        }
    }

    /// Refuses an authenticated request of a locked bot or bot instance
    /// (audited, rate limited per peer).
    pub(crate) async fn check_caller_locks(&self, a: &Authenticated, peer: Option<std::net::IpAddr>) -> Result<(), ServiceError> {
        let set = self.locks().await?;
        let now = self.now();
        let subject = Subject { bot: Some(a.caller.bot.name.as_str()), instance: Some(&a.claims.instance), ..Default::default() };
        let Some(l) = set.set.find(&subject, now) else { return Ok(()) };
        let e = locked(l);
        let detail = json!({"bot": a.caller.bot.name.as_str(), "instance": a.claims.instance, "reason": e.audit_reason()});
        self.audit.refused_as(PeerKey::of(peer), a.caller.bot.name.as_str(), now, "locked", &a.claims.instance, detail).await;
        Err(e)
    }

    /// Refuses a join as `bot` with join token `token` if a lock stops it.
    /// The joining caller is anonymous: it is told what every refused join
    /// is told ([`crate::join::REFUSED`]), the lock goes to the audit log.
    pub(crate) async fn check_join_locks(&self, token: &str, bot: &str) -> Result<(), ServiceError> {
        let set = self.locks().await?;
        let subject = Subject { bot: Some(bot), join_token: Some(token), ..Default::default() };
        set.set.find(&subject, self.now()).map_or(Ok(()), |l| Err(ServiceError::JoinRefused(locked(l).audit_reason())))
    }

    /// Before a join (or its `BeginJoin`) spends anything (a token use, a
    /// bound key's sequence, a challenge): refuses it if its join token or
    /// that token's bot is locked. The token is read only while some bot or
    /// token lock is in force, so joins cost nothing more otherwise.
    /// [`Broker::check_join_locks`] checks again once the join is verified.
    pub(crate) async fn check_join_locks_early(&self, method: &str, token_name: &str, secret: &str) -> Result<(), ServiceError> {
        if !self.locks().await?.set.locks_joins(self.now()) {
            return Ok(());
        }
        let by_secret = method.is_empty() || method == Method::Token.name();
        let hash;
        let key = if by_secret {
            if secret.is_empty() {
                return Ok(());
            }
            hash = TokenSecret::new(secret.to_string()).hash();
            TokenKey::SecretHash(&hash)
        } else if token_name.is_empty() {
            return Ok(());
        } else {
            TokenKey::Name(token_name)
        };
        match self.store.token_record(key).await? {
            Some(r) => self.check_join_locks(&r.state.name, &r.state.bot).await,
            // Unknown: the join's own checks refuse it.
            None => Ok(()),
        }
    }

    /// Refuses the issuance of an SVID with SPIFFE ID path `path` if a
    /// `spiffe_id` lock matches it.
    pub(crate) async fn check_svid_locks(&self, path: &str) -> Result<(), ServiceError> {
        let set = self.locks().await?;
        let subject = Subject { spiffe_path: Some(path), ..Default::default() };
        set.set.find(&subject, self.now()).map_or(Ok(()), |l| Err(locked(l)))
    }

    /// Creates a lock: `created_by` and `created_at` are set here. A lock on
    /// the caller's own bot or instance is refused (it would lock the caller
    /// out of deleting it).
    pub async fn create_lock(&self, auth: &Authenticated, mut l: Lock) -> Result<Lock, ServiceError> {
        let caller = &auth.caller;
        let name = l.name.to_string();
        self.authorize(caller, Kind::Lock, "create", &name).await?;
        if l.revision != 0 {
            return Err(ServiceError::invalid("revision", "must be 0 on create"));
        }
        let now = self.now();
        l.validate(now)?;
        let own = match &l.target {
            LockTarget::Bot(b) => b == &caller.bot.name,
            LockTarget::BotInstance(i) => i == &auth.claims.instance,
            _ => false,
        };
        if own {
            return Err(ServiceError::invalid(
                format!("target.{}", l.target.kind()),
                "this is the caller's own identity: a lock on it would refuse the caller's next request, including deleting the lock; lock it with another admin identity",
            ));
        }
        if self.locks().await?.set.len() >= MAX_LOCKS {
            return Err(ServiceError::invalid("name", format!("at most {MAX_LOCKS} locks are stored (expired ones count): delete some first")));
        }
        l.created_by = caller.bot.name.to_string();
        l.created_at = now;
        let mut spec = serde_json::to_value(&l).map_err(|e| ServiceError::Internal(e.to_string()))?;
        if let Some(o) = spec.as_object_mut() {
            o.remove("revision");
        }
        l.revision = self.store.create(Kind::Lock, &Doc { name: name.clone(), revision: 0, spec }, None).await?;
        let detail = json!({
            "revision": l.revision,
            "target": {l.target.kind(): l.target.value()},
            "reason": l.reason,
            "expires_at": l.expires_at,
        });
        self.audit.record(now, "lock.create", caller.bot.name.as_str(), &name, "ok", detail).await;
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sigil_core::clock::{Clock, ManualClock};
    use sigil_core::domain::Attributes;

    async fn store_lock(b: &Broker, name: &str, target: serde_json::Value, expires_at: i64) {
        let spec = json!({"name": name, "target": target, "reason": "r", "expires_at": expires_at});
        b.store.create(Kind::Lock, &Doc { name: name.into(), revision: 0, spec }, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_lock_stops_applying_at_its_expiry_by_the_brokers_clock() {
        let clock = ManualClock::new(1_800_000_000);
        let b = super::super::identity::tests::broker(&clock).await;
        let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
        let spki = crate::ca::x509::csr_public_key(&csr).unwrap();
        let id = b.start_instance("b", &Attributes::default(), &spki, 600).await.unwrap();
        b.authenticate(Some(&id.cert_der), None).await.unwrap();
        store_lock(&b, "for-a-minute", json!({"bot": "b"}), clock.now() + 60).await;
        let e = b.authenticate(Some(&id.cert_der), None).await.unwrap_err();
        assert!(matches!(&e, ServiceError::Locked { lock, .. } if lock == "for-a-minute"), "{e:?}");
        clock.advance(59);
        assert!(b.authenticate(Some(&id.cert_der), None).await.is_err(), "still in force one second before");
        let counter = b.store.change_counter();
        clock.advance(1);
        b.authenticate(Some(&id.cert_der), None).await.expect("expired: no longer applies");
        assert_eq!(b.store.change_counter(), counter, "expiry needed no store change");
    }

    #[tokio::test]
    async fn a_locked_bots_request_flood_is_audited_at_the_refusal_rate() {
        let clock = ManualClock::new(1_800_000_000);
        let b = super::super::identity::tests::broker(&clock).await;
        let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
        let spki = crate::ca::x509::csr_public_key(&csr).unwrap();
        let id = b.start_instance("b", &Attributes::default(), &spki, 600).await.unwrap();
        store_lock(&b, "l", json!({"bot": "b"}), 0).await;
        let peer = Some(std::net::IpAddr::from([192, 0, 2, 7]));
        for _ in 0..200 {
            assert!(matches!(b.authenticate(Some(&id.cert_der), peer).await, Err(ServiceError::Locked { .. })));
        }
        let events = b.store.list_audit(0, 1000).await.unwrap();
        let locked = events.iter().filter(|e| e.kind == "locked").count();
        let burst = crate::audit::throttle::Limits::default().burst as usize;
        assert_eq!(locked, burst, "200 refusals, {burst} recorded; the rest are counted for a summary");
        assert!(events.iter().filter(|e| e.kind == "locked").all(|e| e.actor == "b" && e.detail["reason"].as_str().is_some_and(|r| r.contains("lock \"l\""))));
    }

    #[tokio::test]
    async fn the_lock_set_is_read_again_only_when_the_store_changed() {
        let clock = ManualClock::new(1_800_000_000);
        let b = super::super::identity::tests::broker(&clock).await;
        let first = b.locks().await.unwrap();
        assert!(Arc::ptr_eq(&first, &b.locks().await.unwrap()), "same store version: same set, nothing read");
        store_lock(&b, "l", json!({"spiffe_id": "/x/*"}), 0).await;
        let second = b.locks().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.set.len(), 1);
        assert!(b.check_svid_locks("/x/y").await.is_err() && b.check_svid_locks("/y").await.is_ok());
        assert!(Arc::ptr_eq(&second, &b.locks().await.unwrap()), "reading locks does not move the store version");
    }
}
