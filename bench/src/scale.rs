//! PostgreSQL at scale (issue 14): 1,000,000 bots and 10,000,000 audit events
//! against a store of 1% that size, both in one PostgreSQL, each served by its
//! own broker (`store: postgres://...`), measured through the API.
//!
//! Filling: the broker writes one template of each row through the API (a bot
//! with a role and a trait, a joined bot instance, an X.509-SVID's audit
//! event); the bulk is then copied from those templates in SQL
//! (`generate_series`), so every row is exactly what the broker writes, only
//! the name / id / time differ. One bot instance per bot (an agent each).
//! Audit retention is off in both brokers (`limits.audit: {max_events: 0,
//! max_age_days: 0}`), so the housekeeping does not prune the filled table.
//!
//! Measured, sequentially from one client (latency, not throughput), the two
//! stores alternating in 5 slices: GetBot of a random bot; ListBots, a page of
//! 100 after a random name; ListAuditEvents, a page of 100 after an id in the
//! first 1% and in the last 1% of the log; and the caller lookup by instance
//! id (an authenticated WhoAmI right after a write, so the broker's caller
//! cache misses and reads instance, bot and roles; the write is not timed).

use crate::broker::BrokerProcess;
use crate::fixture;
use crate::pg::PgCluster;
use crate::report::{ms, rate, times, Row, Status};
use crate::stats::Sample;
use anyhow::{bail, Context, Result};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

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

const TEMPLATE_BOT: &str = "template-bot";

fn bot_name(i: u64) -> String {
    format!("bot-{i:07}")
}

/// One filled store and the broker serving it.
struct Store {
    broker: BrokerProcess,
    admin: SigilClient<Channel>,
    caller: SigilClient<Channel>,
    bots: u64,
    /// Lowest and highest audit id.
    ids: (i64, i64),
    fill: Duration,
}

/// Starts a broker on database `db` and fills it with `bots` bots and `events` audit events.
async fn fill(pg: &PgCluster, sigil: &Path, wrap: &[String], ready: Duration, db: &str, bots: u64, events: u64) -> Result<Store> {
    let url = pg.create_database(db).await?;
    let broker = BrokerProcess::spawn_config(
        sigil,
        wrap,
        ready,
        serde_json::json!({"store": url, "limits": {"audit": {"max_events": 0, "max_age_days": 0}}}),
    )
    .await?;
    let token = fixture::provision(&broker, 1000).await?;
    let mut admin = broker.admin().await?;
    admin
        .create_bot(pb::Bot {
            name: TEMPLATE_BOT.into(),
            roles: vec![fixture::BOT.into()],
            traits: [("team".to_string(), pb::StringList { values: vec!["payments".into()] })].into(),
            ..Default::default()
        })
        .await
        .context("create the template bot")?;
    let mut caller = fixture::bot_clients(&broker, &token, 1).await?.pop().context("no client")?;
    caller
        .issue_x509_svid(pb::IssueX509SvidRequest { csr: crate::raw::csr_pool(1)?.remove(0), spiffe_id: fixture::SPIFFE_ID.into(), ..Default::default() })
        .await
        .context("template SVID")?;
    let start = Instant::now();
    let sql = pg.connect(db).await?;
    let n = i64::try_from(bots)?;
    let e = i64::try_from(events)?;
    // Bots: the template bot's spec with the name replaced.
    sql.execute(
        "INSERT INTO resources (kind, name, revision, spec)
         SELECT 'bot', 'bot-' || lpad(i::text, 7, '0'), 1, replace(t.spec, '\"template-bot\"', '\"bot-' || lpad(i::text, 7, '0') || '\"')
         FROM resources t, generate_series(0, $1::bigint - 1) i WHERE t.kind = 'bot' AND t.name = 'template-bot'",
        &[&n],
    )
    .await
    .context("fill bots")?;
    // One instance per bot, copied from the benchmark client's (ids are 32 hex digits, like the broker's).
    sql.execute(
        "INSERT INTO bot_instances (id, bot, generation, pending, locked, join_attributes, created_at, pending_key)
         SELECT md5('instance' || i), 'bot-' || lpad(i::text, 7, '0'), t.generation, t.pending, t.locked, t.join_attributes, t.created_at, t.pending_key
         FROM (SELECT * FROM bot_instances LIMIT 1) t, generate_series(0, $1::bigint - 1) i",
        &[&n],
    )
    .await
    .context("fill bot instances")?;
    // Audit events: the SVID's event, in time order up to now.
    sql.execute(
        "INSERT INTO audit_events (time, kind, actor, resource, outcome, detail)
         SELECT t.time - $1::bigint + i / 100, t.kind, t.actor, t.resource, t.outcome, t.detail
         FROM (SELECT * FROM audit_events WHERE kind = 'svid.x509' ORDER BY id DESC LIMIT 1) t, generate_series(0, $1::bigint - 1) i ORDER BY i",
        &[&e],
    )
    .await
    .context("fill audit events")?;
    sql.batch_execute("ANALYZE; UPDATE store_version SET version = version + 1").await?;
    let row = sql.query_one("SELECT min(id), max(id), count(*) FROM audit_events", &[]).await?;
    let (lo, hi, count): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if count < e {
        bail!("{db}: {count} audit events after filling {e}");
    }
    let fill = start.elapsed();
    Ok(Store { broker, admin, caller, bots, ids: (lo, hi), fill })
}

/// Sequential requests, `n` of them.
async fn series<F, Fut>(n: u64, mut op: F) -> Sample
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let mut s = Sample::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        match op(i).await {
            Ok(()) => s.ok(t.elapsed()),
            Err(e) => s.err(e),
        }
    }
    s.finish(start.elapsed())
}

/// The five operations' samples on one store.
#[derive(Default)]
struct Ops {
    get_bot: Sample,
    list_bots: Sample,
    audit_start: Sample,
    audit_end: Sample,
    caller: Sample,
}

impl Ops {
    fn merge(&mut self, o: Ops) {
        self.get_bot.merge(o.get_bot);
        self.list_bots.merge(o.list_bots);
        self.audit_start.merge(o.audit_start);
        self.audit_end.merge(o.audit_end);
        self.caller.merge(o.caller);
    }

    fn finish(self) -> Self {
        let d = Duration::ZERO;
        Ops {
            get_bot: self.get_bot.finish(d),
            list_bots: self.list_bots.finish(d),
            audit_start: self.audit_start.finish(d),
            audit_end: self.audit_end.finish(d),
            caller: self.caller.finish(d),
        }
    }
}

async fn measure(s: &mut Store, n: u64, rng: &mut Rng, poke: &mut u64) -> Ops {
    let admin = s.admin.clone();
    let names: Vec<String> = (0..n).map(|_| bot_name(rng.below(s.bots))).collect();
    let get_bot = series(n, |i| {
        let (mut c, name) = (admin.clone(), names[i as usize].clone());
        async move {
            let b = c.get_bot(pb::GetRequest { name: name.clone() }).await.map_err(|e| e.to_string())?.into_inner();
            if b.name == name { Ok(()) } else { Err(format!("asked {name}, got {}", b.name)) }
        }
    })
    .await;
    let list_bots = series(n, |i| {
        let (mut c, after) = (admin.clone(), names[i as usize].clone());
        async move {
            let p = c.list_bots(pb::ListRequest { limit: 100, after: after.clone() }).await.map_err(|e| e.to_string())?.into_inner().items;
            if p.first().is_some_and(|b| b.name > after) || p.is_empty() { Ok(()) } else { Err("page not after the cursor".into()) }
        }
    })
    .await;
    let (lo, hi) = s.ids;
    let span = (hi - lo).max(1) as u64;
    let starts: Vec<i64> = (0..n).map(|_| lo + rng.below(span / 100) as i64).collect();
    let ends: Vec<i64> = (0..n).map(|_| hi - 100 - rng.below(span / 100) as i64).collect();
    let audit = |after: Vec<i64>| {
        let admin = admin.clone();
        series(n, move |i| {
            let (mut c, after) = (admin.clone(), after[i as usize]);
            async move {
                let p = c.list_audit_events(pb::ListAuditEventsRequest { after_id: after, limit: 100 }).await.map_err(|e| e.to_string())?.into_inner().items;
                if p.len() == 100 && p[0].id > after { Ok(()) } else { Err(format!("audit page after {after} has {} events", p.len())) }
            }
        })
    };
    let audit_start = audit(starts).await;
    let audit_end = audit(ends).await;
    // Caller lookup: a write (not timed) moves the store's change counter, so
    // the next authenticated request resolves its caller from the store.
    let mut caller = Sample::with_capacity(n as usize);
    let start = Instant::now();
    for _ in 0..n / 4 {
        *poke += 1;
        let role = pb::Role { name: format!("poke-{poke}"), description: "cache invalidation".into(), ..Default::default() };
        if let Err(e) = s.admin.create_role(role).await {
            caller.err(e);
            continue;
        }
        let t = Instant::now();
        match s.caller.who_am_i(pb::WhoAmIRequest {}).await {
            Ok(_) => caller.ok(t.elapsed()),
            Err(e) => caller.err(e),
        }
    }
    let caller = caller.finish(start.elapsed());
    Ops { get_bot, list_bots, audit_start, audit_end, caller }
}

fn row(figure: String, big: &Sample, small: &Sample, small_label: &str) -> Row {
    let r = big.p50_ms() / small.p50_ms().max(f64::MIN_POSITIVE);
    Row {
        figure,
        value: format!("{} / {}", ms(big.p50_ms()), ms(big.p99_ms())),
        reference: format!("{small_label}: {} / {}", ms(small.p50_ms()), ms(small.p99_ms())),
        ratio: times(big.p50_ms(), small.p50_ms()),
        target: "p50 <= 2x".into(),
        status: Status::of(big.count() > 0 && r <= 2.0),
    }
}

/// Runs the PostgreSQL scale benchmark: `bots` and `events` against 1% of each.
#[allow(clippy::too_many_arguments)]
pub async fn run(sigil: &Path, wrap: &[String], cpus: Option<&str>, ready: Duration, bots: u64, events: u64, n: u64, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<()> {
    // Bulk-load settings only (fewer checkpoints while filling); durability as shipped.
    let pg = PgCluster::start(cpus, &["max_wal_size=8GB", "checkpoint_timeout=30min"])?;
    let (small_bots, small_events) = ((bots / 100).max(100), (events / 100).max(1000));
    let mut small = fill(&pg, sigil, wrap, ready, "small", small_bots, small_events).await.context("small store")?;
    let mut big = fill(&pg, sigil, wrap, ready, "big", bots, events).await.context("large store")?;
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let (mut poke, rounds) = (0, crate::load::ROUNDS as u64);
    let (mut qs, mut qb) = (Ops::default(), Ops::default());
    for _ in 0..rounds {
        qs.merge(measure(&mut small, n / rounds, &mut rng, &mut poke).await);
        qb.merge(measure(&mut big, n / rounds, &mut rng, &mut poke).await);
    }
    let (qs, qb) = (qs.finish(), qb.finish());
    for (name, s) in [
        ("GetBot", &qb.get_bot),
        ("ListBots", &qb.list_bots),
        ("ListAuditEvents (start)", &qb.audit_start),
        ("ListAuditEvents (end)", &qb.audit_end),
        ("caller lookup", &qb.caller),
        ("GetBot (1%)", &qs.get_bot),
        ("caller lookup (1%)", &qs.caller),
    ] {
        if s.errors > 0 || s.count() == 0 {
            failures.push(format!("PostgreSQL scale {name}: {} failed, first: {}", s.errors, s.first_error.clone().unwrap_or_default()));
        }
    }
    let small_label = format!("{small_bots} bots / {small_events} events");
    rows.push(Row::info(
        format!("PostgreSQL fill in SQL from broker-written templates ({bots} bots + instances, {events} audit events)"),
        format!("{:.0} s ({} rows); 1%: {:.1} s", big.fill.as_secs_f64(), rate((2 * bots + events) as f64 / big.fill.as_secs_f64().max(1e-9)), small.fill.as_secs_f64()),
    ));
    rows.push(row(format!("GetBot by name, {bots} bots (p50 / p99)"), &qb.get_bot, &qs.get_bot, &small_label));
    rows.push(row(format!("caller lookup by instance id (WhoAmI, cache missed), {bots} instances (p50 / p99)"), &qb.caller, &qs.caller, &small_label));
    rows.push(row(format!("ListBots, 100 after a random name, {bots} bots (p50 / p99)"), &qb.list_bots, &qs.list_bots, &small_label));
    rows.push(row(format!("ListAuditEvents, 100 after an id in the first 1%, {events} events (p50 / p99)"), &qb.audit_start, &qs.audit_start, &small_label));
    rows.push(row(format!("ListAuditEvents, 100 after an id in the last 1%, {events} events (p50 / p99)"), &qb.audit_end, &qs.audit_end, &small_label));
    drop(small.broker);
    drop(big.broker);
    Ok(())
}
