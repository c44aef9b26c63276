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
        let now = b.now();
        match b.store.list_ca_keys().await {
            Ok(records) => {
                for (purpose, step) in b.rotation.due(&records, now) {
                    scheduled_step(&b, purpose, step, now).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "CA rotation schedule: cannot read the keys; will retry"),
        }
        tokio::time::sleep(auto.check_every).await;
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
