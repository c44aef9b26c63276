//! Audit log: every mutation, join, issuance and denial, stored and written as
//! JSON lines to a sink. Events carry names and outcomes, never secrets: callers
//! pass only non-secret fields, and [`Audit::record`] has no parameter for secrets.

use crate::store::{AuditRecord, Store};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Where JSON lines go besides the store.
pub enum Sink {
    /// Nowhere.
    None,
    /// Appended to a file.
    File(Mutex<std::fs::File>),
    /// Standard error.
    Stderr,
}

/// The audit log.
pub struct Audit {
    store: Arc<dyn crate::store::Store>,
    sink: Sink,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

impl Audit {
    /// An audit log writing to `store` and `sink`.
    pub fn new(store: Arc<dyn Store>, sink: Sink) -> Self {
        Self { store, sink }
    }

    /// Records one event. Failing to persist is logged, not fatal to the request
    /// that already happened.
    pub async fn record(&self, time: i64, kind: &str, actor: &str, resource: &str, outcome: &str, detail: Value) {
        let mut ev = AuditRecord {
            id: 0,
            time,
            kind: kind.into(),
            actor: actor.into(),
            resource: resource.into(),
            outcome: outcome.into(),
            detail,
        };
        match self.store.append_audit(&ev).await {
            Ok(id) => ev.id = id,
            Err(e) => tracing::error!(error = %e, "cannot persist audit event"),
        }
        let line = json!({
            "id": ev.id, "time": ev.time, "kind": ev.kind, "actor": ev.actor,
            "resource": ev.resource, "outcome": ev.outcome, "detail": ev.detail,
        })
        .to_string();
        match &self.sink {
            Sink::None => {}
            Sink::Stderr => eprintln!("{line}"),
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
    }
}
