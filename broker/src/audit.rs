//! Audit log: every mutation, join, issuance and denial, stored and written as
//! JSON lines to a sink. Events carry names and outcomes, never secrets: callers
//! pass only non-secret fields, and [`Audit::record`] has no parameter for secrets.
//!
//! Group commit: [`Audit::record`] hands its event to one writer task and waits
//! until that task has committed it. The writer takes every event that queued
//! while it was committing the previous batch and stores them in one transaction
//! (`Store::append_audit_batch`), then writes their JSON lines with one write. A
//! request still returns only after its event is committed; concurrent requests
//! share the commit instead of queueing behind one commit each. Nothing waits to
//! fill a batch: an event on an idle broker is committed at once, alone.
//!
//! Bounds (the audit log must not be a way to fill the broker's disk):
//! every event is cut to size ([`sanitize`]); refusals of unauthenticated
//! callers go through [`Audit::refused`], rate-limited per peer with the rest
//! summarized ([`throttle`]); and a housekeeping task deletes events beyond
//! [`Retention`] (count and age).

pub mod sanitize;
pub mod throttle;

use sigil_core::clock::{Clock, SystemClock};
use sigil_core::peer::PeerKey;
use crate::store::{AuditRecord, Store};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most events committed in one transaction.
const MAX_BATCH: usize = 256;
/// How often housekeeping records due summaries.
const SUMMARY_TICK: Duration = Duration::from_secs(1);
/// How often housekeeping applies the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How many audit events the store keeps (config `limits.audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Newest events kept; older ones are deleted (0: no count limit).
    pub max_events: u64,
    /// Events older than this many days are deleted (0: no age limit).
    pub max_age_days: u64,
    /// The JSON lines file is renamed to `<file>.1` (replacing the previous
    /// one) when it would grow beyond this many MiB.
    pub max_log_file_mib: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_events: 1_000_000, max_age_days: 400, max_log_file_mib: 256 }
    }
}

/// Where JSON lines go besides the store.
pub enum Sink {
    /// Nowhere.
    None,
    /// Appended to a file.
    File(Mutex<std::fs::File>),
    /// Appended to a file that is renamed to `<path>.1` (replacing the previous
    /// one) once it would exceed its size: at most twice that size on disk.
    Rotating(Mutex<Rotating>),
    /// Standard error.
    Stderr,
}

/// A JSON lines file with a size limit.
pub struct Rotating {
    path: std::path::PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
}

impl Sink {
    /// A file sink for `path` (already opened as `file`) rotated at `max_bytes`.
    pub fn rotating(path: std::path::PathBuf, file: std::fs::File, max_bytes: u64) -> Self {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Self::Rotating(Mutex::new(Rotating { path, file, size, max_bytes: max_bytes.max(1) }))
    }
}

impl Rotating {
    fn write(&mut self, out: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + out.len() as u64 > self.max_bytes {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = sigil_core::fsutil::open_append(&self.path, 0o640).map_err(std::io::Error::other)?;
            self.size = 0;
        }
        self.file.write_all(out)?;
        self.size += out.len() as u64;
        Ok(())
    }
}

/// The audit log.
pub struct Audit {
    shared: Arc<Shared>,
    /// The writer task's queue, started by the first event.
    queue: OnceLock<Option<mpsc::UnboundedSender<Pending>>>,
    throttle: Arc<Mutex<throttle::Throttle>>,
    clock: Arc<dyn Clock>,
    retention: Retention,
}

struct Shared {
    store: Arc<dyn Store>,
    sink: Sink,
}

struct Pending {
    event: AuditRecord,
    done: oneshot::Sender<()>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

impl Audit {
    /// An audit log writing to `store` and `sink`, with the default limits.
    pub fn new(store: Arc<dyn Store>, sink: Sink) -> Self {
        Self::with_limits(store, sink, Arc::new(SystemClock), throttle::Limits::default(), Retention::default())
    }

    /// An audit log with explicit limits and clock.
    pub fn with_limits(store: Arc<dyn Store>, sink: Sink, clock: Arc<dyn Clock>, limits: throttle::Limits, retention: Retention) -> Self {
        let throttle = Arc::new(Mutex::new(throttle::Throttle::new(limits, clock.now())));
        Self { shared: Arc::new(Shared { store, sink }), queue: OnceLock::new(), throttle, clock, retention }
    }

    /// Records the refusal of a request from an unauthenticated caller at
    /// `peer` (actor `anonymous`, outcome `denied`), unless that peer (or all
    /// peers together) exceeded its rate: then the refusal is only counted,
    /// and recorded later in one `audit.suppressed` summary per peer.
    pub async fn refused(&self, peer: PeerKey, time: i64, kind: &str, resource: &str, detail: Value) {
        self.refused_as(peer, "anonymous", time, kind, resource, detail).await
    }

    /// Like [`Audit::refused`], for a refusal a caller can repeat as fast as
    /// it likes although it is authenticated (a locked bot's requests): the
    /// actor is named, the rate is limited per peer all the same.
    pub async fn refused_as(&self, peer: PeerKey, actor: &str, time: i64, kind: &str, resource: &str, detail: Value) {
        let admitted = match self.throttle.lock() {
            Ok(mut t) => t.admit(peer, kind, time),
            Err(_) => true,
        };
        if admitted {
            self.record(time, kind, actor, resource, "denied", detail).await;
        } else {
            // Make sure housekeeping runs to write the summary later.
            let _ = self.writer();
        }
    }

    /// Records the summaries that are due now (housekeeping calls this every
    /// second; tests call it with a manual clock).
    pub async fn record_due_summaries(&self) {
        let due = match self.throttle.lock() {
            Ok(mut t) => t.due(self.clock.now()),
            Err(_) => vec![],
        };
        let now = self.clock.now();
        self.record_all(due.into_iter().map(|s| summary_event(now, s)).collect()).await;
    }

    /// Records one event and returns once it is committed. Failing to persist
    /// is logged, not fatal to the request that already happened.
    pub async fn record(&self, time: i64, kind: &str, actor: &str, resource: &str, outcome: &str, detail: Value) {
        self.record_all(vec![event(time, kind, actor, resource, outcome, detail)]).await
    }

    /// Records several events (one request's, e.g. a batch of SVIDs) and
    /// returns once all are committed; they share a commit.
    pub async fn record_all(&self, events: Vec<AuditRecord>) {
        let mut waiting = Vec::with_capacity(events.len());
        let mut direct = Vec::new();
        match self.writer() {
            Some(queue) => {
                for event in events {
                    let (done, committed) = oneshot::channel();
                    match queue.send(Pending { event, done }) {
                        Ok(()) => waiting.push(committed),
                        Err(mpsc::error::SendError(p)) => direct.push(p.event),
                    }
                }
            }
            None => direct = events,
        }
        for committed in waiting {
            if committed.await.is_err() {
                // The writer's runtime ended with the event queued: nothing to
                // retry from here.
                tracing::error!("audit writer stopped before committing an event");
            }
        }
        if !direct.is_empty() {
            // No writer (no runtime to run it, or its runtime has ended):
            // commit here.
            self.shared.commit(direct).await;
        }
    }

    fn writer(&self) -> Option<&mpsc::UnboundedSender<Pending>> {
        self.queue
            .get_or_init(|| {
                let handle = tokio::runtime::Handle::try_current().ok()?;
                let (tx, rx) = mpsc::unbounded_channel();
                handle.spawn(write_batches(self.shared.clone(), rx));
                let house = Housekeeping {
                    queue: tx.downgrade(),
                    throttle: Arc::downgrade(&self.throttle),
                    store: Arc::downgrade(&self.shared),
                    clock: self.clock.clone(),
                    retention: self.retention,
                };
                handle.spawn(house.run());
                Some(tx)
            })
            .as_ref()
    }
}

/// The periodic work of the audit log: summaries of suppressed refusals, and
/// retention. Holds only weak references: it ends with the audit log.
struct Housekeeping {
    queue: mpsc::WeakUnboundedSender<Pending>,
    throttle: Weak<Mutex<throttle::Throttle>>,
    store: Weak<Shared>,
    clock: Arc<dyn Clock>,
    retention: Retention,
}

impl Housekeeping {
    async fn run(self) {
        let mut tick = tokio::time::interval(SUMMARY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first prune waits one period: not in the way of start-up.
        let mut last_prune = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let (Some(queue), Some(throttle), Some(shared)) = (self.queue.upgrade(), self.throttle.upgrade(), self.store.upgrade()) else {
                return;
            };
            let now = self.clock.now();
            let due = throttle.lock().map(|mut t| t.due(now)).unwrap_or_default();
            for s in due {
                let (done, _) = oneshot::channel();
                let _ = queue.send(Pending { event: summary_event(now, s), done });
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                prune(&shared.store, self.retention, now).await;
            }
        }
    }
}

/// Applies the retention once.
pub async fn prune(store: &Arc<dyn Store>, r: Retention, now: i64) {
    let older_than = if r.max_age_days == 0 { i64::MIN } else { now.saturating_sub(i64::try_from(r.max_age_days).unwrap_or(i64::MAX / 86_400) * 86_400) };
    match store.prune_audit(r.max_events, older_than).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "audit retention applied"),
        Err(e) => tracing::error!(error = %e, "cannot apply audit retention"),
    }
}

/// The row that stands for one peer's suppressed refusals.
fn summary_event(now: i64, s: throttle::Summary) -> AuditRecord {
    let peer = s.peer.map_or_else(|| "other peers".to_string(), |p| p.to_string());
    event(now, "audit.suppressed", "anonymous", &peer, "denied", json!({"count": s.count, "from": s.from, "to": s.to, "kinds": s.kinds}))
}

/// An audit event about to be recorded (its id is set by the store), cut to
/// size ([`sanitize`]).
pub fn event(time: i64, kind: &str, actor: &str, resource: &str, outcome: &str, detail: Value) -> AuditRecord {
    AuditRecord {
        id: 0,
        time,
        kind: sanitize::field(kind),
        actor: sanitize::field(actor),
        resource: sanitize::field(resource),
        outcome: sanitize::field(outcome),
        detail: sanitize::detail(detail),
    }
}

/// The writer task: one transaction per batch of queued events.
async fn write_batches(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Let the tasks that are ready run once first: requests finishing
        // their signatures now join this commit instead of waiting for the next.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (events, waiters): (Vec<AuditRecord>, Vec<oneshot::Sender<()>>) = batch.drain(..).map(|p| (p.event, p.done)).unzip();
        shared.commit(events).await;
        for w in waiters {
            let _ = w.send(());
        }
    }
}

impl Shared {
    /// Stores `events` in one transaction and writes their JSON lines (with
    /// id 0 for events that could not be stored).
    async fn commit(&self, mut events: Vec<AuditRecord>) {
        let ids = match self.store.append_audit_batch(&events).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "cannot persist audit events");
                vec![0; events.len()]
            }
        };
        for (e, id) in events.iter_mut().zip(&ids) {
            e.id = *id;
        }
        self.write_lines(&events);
    }

    fn write_lines(&self, events: &[AuditRecord]) {
        if matches!(self.sink, Sink::None) {
            return;
        }
        let mut out = String::new();
        for ev in events {
            let line = json!({
                "id": ev.id, "time": ev.time, "kind": ev.kind, "actor": ev.actor,
                "resource": ev.resource, "outcome": ev.outcome, "detail": ev.detail,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        let written = match &self.sink {
            Sink::None => Ok(()),
            Sink::Stderr => std::io::stderr().lock().write_all(out.as_bytes()),
            Sink::File(f) => match f.lock() {
                Ok(mut f) => f.write_all(out.as_bytes()),
                Err(_) => Ok(()),
            },
            Sink::Rotating(r) => match r.lock() {
                Ok(mut r) => r.write(out.as_bytes()),
                Err(_) => Ok(()),
            },
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write audit lines");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn audit(sink: Sink) -> (Audit, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        (Audit::new(store.clone(), sink), store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_events_are_all_committed_once_in_order_of_their_ids() {
        let (audit, store) = audit(Sink::None);
        let audit = Arc::new(audit);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..500 {
            let a = audit.clone();
            tasks.spawn(async move { a.record(i, "svid.x509", "bot", &format!("r{i}"), "ok", json!({"n": i})).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let all = store.list_audit(0, 1000).await.unwrap();
        assert_eq!(all.len(), 500);
        let mut seen: Vec<i64> = all.iter().map(|e| e.time).collect();
        seen.sort();
        assert_eq!(seen, (0..500).collect::<Vec<_>>(), "every event exactly once");
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    }

    #[tokio::test]
    async fn record_returns_after_the_event_is_committed() {
        let (audit, store) = audit(Sink::None);
        audit.record(7, "join", "b", "tok", "ok", json!({})).await;
        let all = store.list_audit(0, 10).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].kind.as_str(), all[0].time), ("join", 7));
    }

    #[tokio::test]
    async fn file_sink_gets_one_line_per_event_with_the_stored_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let (audit, store) = audit(Sink::File(Mutex::new(f)));
        for i in 0..3 {
            audit.record(i, "role.create", "admin", "r", "ok", json!({})).await;
        }
        let lines: Vec<Value> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let ids: Vec<i64> = store.list_audit(0, 10).await.unwrap().iter().map(|e| e.id).collect();
        assert_eq!(lines.iter().map(|l| l["id"].as_i64().unwrap()).collect::<Vec<_>>(), ids);
    }

    #[tokio::test]
    async fn refusals_beyond_the_rate_are_summarized_in_one_row_per_peer() {
        use sigil_core::clock::ManualClock;
        let clock = ManualClock::new(1_800_000_000);
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let limits = throttle::Limits { burst: 3.0, summary_secs: 60, ..Default::default() };
        let audit = Audit::with_limits(store.clone(), Sink::None, Arc::new(clock.clone()), limits, Retention::default());
        let peer = PeerKey::V4([192, 0, 2, 1]);
        for i in 0..100 {
            audit.refused(peer, clock.now(), "join", &format!("t{i}"), json!({"reason": "no such token"})).await;
        }
        assert_eq!(store.list_audit(0, 1000).await.unwrap().len(), 3, "the burst is recorded, the rest counted");
        clock.advance(61);
        audit.record_due_summaries().await;
        let all = store.list_audit(0, 1000).await.unwrap();
        assert_eq!(all.len(), 4);
        let s = &all[3];
        assert_eq!((s.kind.as_str(), s.resource.as_str(), s.outcome.as_str()), ("audit.suppressed", "192.0.2.1", "denied"));
        assert_eq!((s.detail["count"].as_u64(), s.detail["kinds"]["join"].as_u64()), (Some(97), Some(97)));
    }

    #[tokio::test]
    async fn an_attacker_supplied_name_is_cut_before_it_is_stored() {
        let (audit, store) = audit(Sink::None);
        let name = format!("{}\n{}", "n".repeat(60_000), "forged");
        audit.record(1, "join", "anonymous", &name, "denied", json!({"reason": format!("join token {name:?} does not exist")})).await;
        let e = &store.list_audit(0, 1).await.unwrap()[0];
        assert!(e.resource.len() <= sanitize::MAX_FIELD_BYTES + 24, "{}", e.resource.len());
        assert!(e.detail.to_string().len() <= sanitize::MAX_DETAIL_BYTES);
    }

    #[tokio::test]
    async fn the_json_lines_file_is_rotated_once_it_would_exceed_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let f = sigil_core::fsutil::open_append(&path, 0o640).unwrap();
        let (audit, _) = audit(Sink::rotating(path.clone(), f, 4096));
        for i in 0..100 {
            audit.record(i, "role.create", "admin", &"r".repeat(200), "ok", json!({})).await;
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("audit.jsonl.1")).unwrap().len();
        assert!(now <= 4096 && old <= 4096, "{now} {old}");
        let last: Value = serde_json::from_str(std::fs::read_to_string(&path).unwrap().lines().last().unwrap()).unwrap();
        assert_eq!(last["time"], 99, "the newest line is in the current file");
    }

    #[test]
    fn outside_a_runtime_the_event_is_committed_directly() {
        let (audit, store) = audit(Sink::None);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // The writer cannot start without a runtime at first use...
        assert!(audit.writer().is_none());
        // ...and record still commits.
        rt.block_on(audit.record(1, "join", "b", "t", "ok", json!({})));
        assert_eq!(rt.block_on(store.list_audit(0, 10)).unwrap().len(), 1);
    }
}
