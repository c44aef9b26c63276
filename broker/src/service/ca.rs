//! CA status and rotation (`GetCaStatus`, `RotateCa`) under RBAC (kind `ca`:
//! `read` for the status, `update` for a step), audited; and the automatic
//! schedule. The decisions are the domain's
//! (`sigil_core::domain::ca_rotation`), carried out by [`crate::ca::rotation`].

use super::{Broker, ServiceError};
use crate::ca::rotation::{self, RotateError, Status};
use serde_json::json;
use sigil_core::domain::ca_rotation::{Purpose, RotationError, Step};
use sigil_core::domain::Caller;
use std::sync::Arc;

/// The kind name in role rules.
pub const KIND: &str = "ca";

impl From<RotateError> for ServiceError {
    fn from(e: RotateError) -> Self {
        match e {
            RotateError::Refused(r @ (RotationError::UnknownPurpose(_) | RotationError::UnknownStep(_))) => {
                let field = if matches!(r, RotationError::UnknownPurpose(_)) { "purpose" } else { "phase" };
                ServiceError::invalid(field, r.to_string())
            }
            RotateError::Refused(r) => ServiceError::Precondition(r.to_string()),
            RotateError::Concurrent(_) => ServiceError::Precondition(e.to_string()),
            RotateError::Ca(c) => ServiceError::Internal(c.to_string()),
            RotateError::Store(s) => ServiceError::Store(s),
        }
    }
}

impl Broker {
    async fn deny_ca(&self, caller: &Caller, verb: &str, resource: &str, why: sigil_core::domain::Denied) -> ServiceError {
        let kind = if verb == "read" { "ca.status" } else { "ca.rotate" };
        self.audit.record(self.now(), kind, caller.bot.name.as_str(), resource, "denied", json!({"reason": why.0})).await;
        why.into()
    }

    /// Every CA key with its state and bounds, and each purpose's phase.
    pub async fn ca_status(&self, caller: &Caller) -> Result<Status, ServiceError> {
        if let Err(why) = caller.check_verb(KIND, "read") {
            return Err(self.deny_ca(caller, "read", "", why).await);
        }
        Ok(self.rotation.status(&self.store).await?)
    }

    /// Takes one rotation step (`prepare`, `activate`, `retire`, `rollback`)
    /// for one purpose; `force` retires before `retire_safe_at`. Audited with
    /// the key ids it moved, or the reason it was refused.
    pub async fn rotate_ca(&self, caller: &Caller, purpose: &str, phase: &str, force: bool) -> Result<Status, ServiceError> {
        let actor = caller.bot.name.as_str();
        if let Err(why) = caller.check_verb_on(KIND, "update", purpose) {
            return Err(self.deny_ca(caller, "update", purpose, why).await);
        }
        let now = self.now();
        let parsed = Purpose::parse(purpose).and_then(|p| Ok((p, Step::parse(phase)?)));
        let result = match parsed {
            Ok((p, s)) => self.rotation.step(&self.store, &self.authority, p, s, force, now).await.map(|d| (s, d)),
            Err(e) => Err(e.into()),
        };
        match result {
            Ok((step, done)) => {
                self.audit.record(now, "ca.rotate", actor, purpose, "ok", rotation::audit_detail(step, force, &done)).await;
                Ok(self.rotation.status(&self.store).await?)
            }
            Err(e) => {
                let e = ServiceError::from(e);
                let detail = json!({"phase": phase, "force": force, "reason": e.to_string()});
                self.audit.record(now, "ca.rotate", actor, purpose, "denied", detail).await;
                Err(e)
            }
        }
    }
}

/// Starts the CA tasks of a serving broker: the reload watcher (always) and
/// the automatic schedule (when configured). Abort them on shutdown.
pub fn spawn(broker: &Arc<Broker>) -> Vec<tokio::task::JoinHandle<()>> {
    let b = broker;
    let mut tasks = vec![tokio::spawn(rotation::watch(b.store.clone(), b.authority.clone(), b.rotation.clone()))];
    if b.rotation.auto.is_some() {
        tasks.push(tokio::spawn(schedule(b.clone())));
    }
    tasks
}

/// Every `check_every`, takes the steps the schedule says are due. Every
/// replica runs it; of two taking one step at once, the store lets one land
/// and the other's is a no-op (logged at debug).
async fn schedule(b: Arc<Broker>) {
    let Some(auto) = b.rotation.auto else { return };
    loop {
        schedule_tick(&b).await;
        tokio::time::sleep(auto.check_every).await;
    }
}

/// One check of the schedule at the broker's clock: takes every step due
/// (at most one per purpose).
pub async fn schedule_tick(b: &Broker) {
    let now = b.now();
    match b.store.list_ca_keys().await {
        Ok(records) => {
            for (purpose, step) in b.rotation.due(&records, now) {
                scheduled_step(b, purpose, step, now).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "CA rotation schedule: cannot read the keys; will retry"),
    }
}

async fn scheduled_step(b: &Broker, purpose: Purpose, step: Step, now: i64) {
    match b.rotation.step(&b.store, &b.authority, purpose, step, false, now).await {
        Ok(done) => {
            tracing::info!(purpose = %purpose, step = %step, "CA rotation schedule: step taken");
            b.audit.record(now, "ca.rotate", "schedule", purpose.as_str(), "ok", rotation::audit_detail(step, false, &done)).await;
        }
        Err(RotateError::Concurrent(_) | RotateError::Refused(_)) => {
            tracing::debug!(purpose = %purpose, step = %step, "CA rotation schedule: another replica took the step first");
        }
        Err(e) => {
            tracing::error!(purpose = %purpose, step = %step, error = %e, "CA rotation schedule: step failed; will retry");
            let detail = json!({"phase": step.as_str(), "reason": e.to_string()});
            b.audit.record(now, "ca.rotate", "schedule", purpose.as_str(), "error", detail).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::{Audit, Sink};
    use crate::ca::rotation::{AutoRotation, Lifetimes, Rotation};
    use crate::ca::{seal::SealKey, Authority, AuthorityCell, CaSettings};
    use crate::store::{sqlite::SqliteStore, Store};
    use sigil_core::clock::{Clock, ManualClock};
    use sigil_core::domain::ca_rotation::Schedule;

    const T0: i64 = 1_800_000_000;
    const LIFE: i64 = 10_000;

    /// A replica on `store` with the schedule on: CA life 10,000 s, prepare at
    /// half life, activate after 600 s; credentials at most 60 s.
    async fn replica(store: &Arc<dyn Store>, seal: &str, clock: &ManualClock) -> Broker {
        let td: sigil_core::domain::TrustDomain = "example.org".parse().unwrap();
        let key_store = crate::ca::backend::KeyStore::sealed(SealKey::parse(seal).unwrap());
        let settings = CaSettings { ca_ttl: LIFE, ..Default::default() };
        let authority = Authority::load_or_create(store, &key_store, &td, &settings, clock.now()).await.unwrap();
        let lifetimes =
            Lifetimes { x509_svid_max_ttl: 60, jwt_svid_max_ttl: 60, identity_max_ttl: 60, bundle_refresh_hint: 30, jwks_cache_allowance: 30, ssh_max_ttl: 60, tls_max_ttl: 60 };
        let auto = Some(AutoRotation {
            schedule: Schedule { prepare_at_fraction: 0.5, activate_after: 600 },
            check_every: std::time::Duration::from_secs(1),
        });
        let rotation = Rotation { key_store, trust_domain: td.clone(), settings, lifetimes, auto };
        Broker {
            audit: Audit::new(store.clone(), Sink::None),
            store: store.clone(),
            authority: Arc::new(AuthorityCell::new(authority)),
            rotation: Arc::new(rotation),
            settings: crate::service::Settings::new(td, "https://127.0.0.1:1".into()),
            clock: Arc::new(clock.clone()),
            challenges: Default::default(),
            callers: Default::default(),
            locks: Default::default(),
            metrics: Default::default(),
            revocations: Default::default(),
        }
    }

    fn states(keys: &[crate::store::CaKeyRecord], purpose: &str) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().filter(|k| k.purpose == purpose).map(|k| k.state.clone()).collect();
        v.sort();
        v
    }

    async fn tick_both(a: &Broker, b: &Broker) {
        tokio::join!(schedule_tick(a), schedule_tick(b));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_on_the_schedule_take_each_step_once_and_only_when_due() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let seal = SealKey::generate_hex().unwrap();
        let clock = ManualClock::new(T0);
        let (a, b) = (replica(&store, &seal, &clock).await, replica(&store, &seal, &clock).await);
        let x509 = |keys: &[crate::store::CaKeyRecord]| states(keys, "x509-svid");

        clock.advance(LIFE / 2 - 1);
        tick_both(&a, &b).await;
        assert_eq!(x509(&store.list_ca_keys().await.unwrap()), ["active"], "nothing due before half life");
        clock.advance(1);
        tick_both(&a, &b).await;
        let keys = store.list_ca_keys().await.unwrap();
        for p in ["x509-svid", "internal", "jwt-svid"] {
            assert_eq!(states(&keys, p), ["active", "prepared"], "{p}: one prepared key, though both replicas ran");
        }

        clock.advance(599);
        tick_both(&a, &b).await;
        assert_eq!(x509(&store.list_ca_keys().await.unwrap()), ["active", "prepared"], "published 599 s: not yet");
        clock.advance(1);
        tick_both(&a, &b).await;
        let keys = store.list_ca_keys().await.unwrap();
        assert_eq!(x509(&keys), ["active", "previous"]);
        let previous = keys.iter().find(|k| k.purpose == "x509-svid" && k.state == "previous").unwrap();
        assert_eq!(previous.deactivated_at, clock.now(), "activated once, at this tick");

        // retire_safe_at = deactivation + 5 s lag + 60 s longest SVID + 30 s hint.
        clock.advance(5 + 60 + 30 - 1);
        tick_both(&a, &b).await;
        assert_eq!(x509(&store.list_ca_keys().await.unwrap()), ["active", "previous"], "retire waits for retire_safe_at");
        clock.advance(1);
        tick_both(&a, &b).await;
        assert_eq!(x509(&store.list_ca_keys().await.unwrap()), ["active", "retired"]);
        let events = store.list_audit(0, 100).await.unwrap();
        let steps: Vec<&str> = events.iter().filter(|e| e.kind == "ca.rotate" && e.resource == "x509-svid").map(|e| e.outcome.as_str()).collect();
        assert_eq!(steps, ["ok", "ok", "ok"], "three steps audited once each: {events:?}");
        assert!(events.iter().filter(|e| e.kind == "ca.rotate").all(|e| e.actor == "schedule"));
    }

    #[tokio::test]
    async fn with_the_schedule_on_issuance_survives_a_broker_that_was_down_past_its_ca_expiry() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let clock = ManualClock::new(T0);
        let b = replica(&store, &SealKey::generate_hex().unwrap(), &clock).await;
        // Down for longer than the CA lives: the active key has expired.
        clock.advance(LIFE + 1);
        let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
        let spki = crate::ca::x509::csr_public_key(&csr).unwrap();
        let expired = crate::ca::lifetime::validity(clock.now(), 0, 60, 60, b.authority.current().x509.not_after);
        assert!(expired.is_err(), "the old CA cannot issue any more");
        schedule_tick(&b).await;
        schedule_tick(&b).await;
        let a = b.authority.current();
        let v = crate::ca::lifetime::validity(clock.now(), 0, 60, 60, a.x509.not_after).unwrap();
        assert_eq!(v.not_after, clock.now() + 60, "a full-length SVID from the new CA");
        a.sign_svid(&spki, "spiffe://example.org/w", &[], v, None).unwrap();
    }
}
