//! Store scale: many bots and audit events in SQLite, inserted through the
//! `Store` trait; lookup and list latency beside the same queries on a small
//! store built in the same run.

use crate::report::{ms, rate, times, Row, Status};
use crate::stats::Sample;
use anyhow::{Context, Result};
use serde_json::json;
use sigil_broker::store::sqlite::SqliteStore;
use sigil_broker::store::{AuditRecord, Doc, Kind, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deterministic xorshift, so runs pick the same keys.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn bot_name(i: u64) -> String {
    format!("bot-{i:07}")
}

fn bot_doc(i: u64) -> Doc {
    Doc {
        name: bot_name(i),
        revision: 0,
        spec: json!({"name": bot_name(i), "roles": ["ci", "deploy"], "traits": {"team": [format!("t{}", i % 50)]}, "max_session_ttl_seconds": 0}),
    }
}

fn audit_event(i: u64) -> AuditRecord {
    AuditRecord {
        id: 0,
        time: 1_700_000_000 + i as i64,
        kind: "svid.x509".into(),
        actor: bot_name(i % 1000),
        resource: format!("spiffe://bench.test/svc/{}", i % 97),
        outcome: "ok".into(),
        detail: json!({"expires_at": 1_700_003_600 + i as i64}),
    }
}

/// Inserts `n` items with `f(store, i)` from 4 tasks (the store serializes
/// writes; the tasks only overlap the hand-off to its blocking thread). Returns
/// each insert's latency.
async fn insert<F, Fut>(store: &Arc<SqliteStore>, n: u64, f: F) -> Result<Sample>
where
    F: Fn(Arc<SqliteStore>, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), sigil_broker::store::StoreError>> + Send,
{
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 4u64;
    for w in 0..workers {
        let (store, f) = (store.clone(), f.clone());
        tasks.spawn(async move {
            let mut s = Sample::with_capacity((n / workers + 1) as usize);
            let mut i = w;
            while i < n {
                let t = Instant::now();
                f(store.clone(), i).await?;
                s.ok(t.elapsed());
                i += workers;
            }
            Ok::<_, sigil_broker::store::StoreError>(s)
        });
    }
    let mut all = Sample::with_capacity(n as usize);
    while let Some(r) = tasks.join_next().await {
        all.merge(r??);
    }
    Ok(all.finish(start.elapsed()))
}

/// A filled store and its insert rates.
struct Filled {
    store: Arc<SqliteStore>,
    bots: Sample,
    events: Sample,
    _dir: tempfile::TempDir,
}

async fn fill(bots: u64, events: u64) -> Result<Filled> {
    let dir = tempfile::Builder::new().prefix("sigil-bench-store-").tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("sigil.db"))?);
    let bots = insert(&store, bots, |s, i| async move { s.create(Kind::Bot, &bot_doc(i), None).await.map(|_| ()) }).await?;
    let events = insert(&store, events, |s, i| async move { s.append_audit(&audit_event(i)).await.map(|_| ()) }).await?;
    Ok(Filled { store, bots, events, _dir: dir })
}

/// The three measured queries on one store.
struct Queries {
    get: Sample,
    list_bots: Sample,
    list_audit: Sample,
}

async fn timed<Fut: std::future::Future<Output = Result<(), String>>>(n: u64, mut f: impl FnMut(u64) -> Fut) -> Sample {
    let start = Instant::now();
    let mut s = Sample::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        match f(i).await {
            Ok(()) => s.ok(t.elapsed()),
            Err(e) => s.err(e),
        }
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    s.finish(start.elapsed())
}

async fn query(f: &Filled, bots: u64, events: u64, n: u64) -> Queries {
    let store = f.store.clone();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let names: Vec<u64> = (0..n).map(|_| rng.below(bots)).collect();
    let ids: Vec<u64> = (0..n).map(|_| rng.below(events.saturating_sub(100))).collect();
    let get = timed(n, |i| {
        let (s, name) = (store.clone(), bot_name(names[i as usize]));
        async move {
            let d = s.get(Kind::Bot, &name).await.map_err(|e| e.to_string())?;
            if d.name == name { Ok(()) } else { Err(format!("asked {name}, got {}", d.name)) }
        }
    })
    .await;
    let list_bots = timed(n, |i| {
        let (s, after) = (store.clone(), bot_name(names[i as usize]));
        async move {
            let page = s.list(Kind::Bot, &after, 100).await.map_err(|e| e.to_string())?;
            if page.first().is_some_and(|d| d.name > after) || page.is_empty() { Ok(()) } else { Err("page not after the cursor".into()) }
        }
    })
    .await;
    let list_audit = timed(n, |i| {
        let (s, after) = (store.clone(), ids[i as usize] as i64);
        async move {
            let page = s.list_audit(after, 100).await.map_err(|e| e.to_string())?;
            if page.len() == 100 && page[0].id == after + 1 { Ok(()) } else { Err(format!("audit page after {after} has {} events", page.len())) }
        }
    })
    .await;
    Queries { get, list_bots, list_audit }
}

fn row(figure: String, big: &Sample, small: &Sample, small_label: &str) -> Row {
    Row {
        figure,
        value: format!("{} / {}", ms(big.p50_ms()), ms(big.p99_ms())),
        reference: format!("{small_label}: {} / {}", ms(small.p50_ms()), ms(small.p99_ms())),
        ratio: times(big.p50_ms(), small.p50_ms()),
        target: "-".into(),
        status: Status::Info,
    }
}

/// Runs the store-scale benchmark: `bots` and `events` against 1% of each.
pub async fn run(bots: u64, events: u64, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<()> {
    let (small_bots, small_events) = ((bots / 100).max(100), (events / 100).max(1000));
    let n = 2000;
    let small = fill(small_bots, small_events).await.context("small store")?;
    let qs = query(&small, small_bots, small_events, n).await;
    let big = fill(bots, events).await.context("large store")?;
    let qb = query(&big, bots, events, n).await;
    for (name, s) in [("get bot", &qb.get), ("list bots", &qb.list_bots), ("list audit", &qb.list_audit), ("get bot (small)", &qs.get)] {
        if s.errors > 0 {
            failures.push(format!("store {name}: {} failed, first: {}", s.errors, s.first_error.clone().unwrap_or_default()));
        }
    }
    let small_label = format!("{small_bots} bots / {small_events} events");
    rows.push(Row::info(
        format!("store insert via Store trait ({bots} bots, {events} audit events)"),
        format!("{} bots, {} events", rate(big.bots.throughput()), rate(big.events.throughput())),
    ));
    rows.push(row(format!("store audit append, 4 writers, {events} events (p50 / p99)"), &big.events, &small.events, &small_label));
    rows.push(row(format!("store get bot by name, {bots} bots (p50 / p99)"), &qb.get, &qs.get, &small_label));
    rows.push(row(format!("store list 100 bots after a name, {bots} bots (p50 / p99)"), &qb.list_bots, &qs.list_bots, &small_label));
    rows.push(row(format!("store list 100 audit events after an id, {events} events (p50 / p99)"), &qb.list_audit, &qs.list_audit, &small_label));
    Ok(())
}
