//! Embedded SQLite store (WAL, numbered migrations).
//!
//! No policy here: decisions are the domain's (`store::decisions`); this file
//! reads records and performs the conditional writes they ask for, each in
//! one transaction on the store's one connection.

use super::*;
use rusqlite::{params, Connection, OptionalExtension};
use sigil_core::domain::token_uses;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Migrations, applied in order; the index + 1 is the schema version.
pub(crate) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE resources (
        kind TEXT NOT NULL, name TEXT NOT NULL, revision INTEGER NOT NULL, spec TEXT NOT NULL,
        PRIMARY KEY (kind, name));
     CREATE TABLE join_tokens (
        name TEXT PRIMARY KEY, secret_hash TEXT NOT NULL UNIQUE, bot TEXT NOT NULL, method TEXT NOT NULL,
        uses INTEGER NOT NULL, max_uses INTEGER NOT NULL, expires_at INTEGER NOT NULL);
     CREATE TABLE bot_instances (
        id TEXT PRIMARY KEY, bot TEXT NOT NULL, generation INTEGER NOT NULL, pending INTEGER NOT NULL,
        locked INTEGER NOT NULL, join_attributes TEXT NOT NULL, created_at INTEGER NOT NULL,
        pending_key TEXT NOT NULL DEFAULT '');
     CREATE INDEX bot_instances_bot ON bot_instances (bot);
     CREATE TABLE ca_keys (
        id TEXT PRIMARY KEY, purpose TEXT NOT NULL, alg TEXT NOT NULL, sealed_key BLOB NOT NULL,
        cert_der BLOB, created_at INTEGER NOT NULL, not_after INTEGER NOT NULL, state TEXT NOT NULL);
     CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,
        resource TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL);",
    // Bound-keypair join state; goes with its join token.
    "CREATE TABLE keypair_bindings (
        token TEXT PRIMARY KEY, public_key TEXT NOT NULL, sequence INTEGER NOT NULL, locked INTEGER NOT NULL,
        updated_at INTEGER NOT NULL);
     CREATE TRIGGER keypair_bindings_follow_token AFTER DELETE ON join_tokens
        BEGIN DELETE FROM keypair_bindings WHERE token = OLD.name; END;",
    // Only `token` secrets are redeemable: tokens of other methods lose theirs
    // (a `none:` hash matches no secret), bound-keypair secrets already used to
    // bind a key are spent. Retry-safe bound-keypair joins remember the attempt.
    "UPDATE join_tokens SET secret_hash = 'none:' || name WHERE method NOT IN ('token', 'bound_keypair');
     UPDATE join_tokens SET secret_hash = 'spent:' || name
        WHERE method = 'bound_keypair' AND name IN (SELECT token FROM keypair_bindings);
     ALTER TABLE keypair_bindings ADD COLUMN last_attempt TEXT NOT NULL DEFAULT '';",
    // One active key per purpose, so brokers starting at once on an empty store
    // agree on one CA: the second insert fails and that broker loads the first's.
    // Should an older store hold two, the newest (the one in use) stays active.
    "UPDATE ca_keys SET state = 'retired' WHERE state = 'active' AND EXISTS (
        SELECT 1 FROM ca_keys k2 WHERE k2.purpose = ca_keys.purpose AND k2.state = 'active'
          AND (k2.created_at > ca_keys.created_at OR (k2.created_at = ca_keys.created_at AND k2.id > ca_keys.id)));
     CREATE UNIQUE INDEX ca_keys_one_active ON ca_keys (purpose) WHERE state = 'active';",
    // A CA key in a PKCS#11 token: the row keeps a reference, no sealed key.
    "ALTER TABLE ca_keys ADD COLUMN key_ref TEXT NOT NULL DEFAULT '';",
    // Pending join challenges, shared by every broker on the store.
    super::sqlite_challenges::MIGRATION,
    // Bot instance activity (issue 15): last join/renewal/heartbeat and the
    // agent's last heartbeat (JSON, empty: none). Old instances count as seen
    // when created.
    "ALTER TABLE bot_instances ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE bot_instances ADD COLUMN heartbeat_at INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE bot_instances ADD COLUMN heartbeat TEXT NOT NULL DEFAULT '';
     UPDATE bot_instances SET last_seen = created_at;
     CREATE INDEX bot_instances_last_seen ON bot_instances (last_seen);",
    // The latest NotAfter of an instance's identities, so the expiry sweep
    // never deletes an instance whose identity is still valid. Older rows did
    // not record it: the latest internal CA NotAfter bounds every identity
    // (each is capped at its issuer's), so they are kept until then.
    "ALTER TABLE bot_instances ADD COLUMN identity_expires_at INTEGER NOT NULL DEFAULT 0;
     UPDATE bot_instances SET identity_expires_at =
        COALESCE((SELECT MAX(not_after) FROM ca_keys WHERE purpose = 'internal'), 0);",
    // CA rotation (issue 15): when a key started and stopped signing; at most
    // one prepared and one previous key per purpose. A legacy `retired` row
    // (an older active key set aside by migration 4) stays retired: never
    // published again (docs/ca-rotation.md). Any other unknown state is
    // retired too; an active key counts as active since its creation.
    super::ca_keys_sql::MIGRATION,
    // Revoked certificates (issue 15): each on its CA key's CRL until it expires.
    "CREATE TABLE revocations (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, ca_key TEXT NOT NULL, serial TEXT NOT NULL,
        not_after INTEGER NOT NULL, revoked_at INTEGER NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL,
        UNIQUE (ca_key, serial));",
    // Outside identities (EC2 instance ids, issue 17) bound to the bot
    // instance that joined with them; deleted with the bot.
    "CREATE TABLE instance_bindings (
        key TEXT PRIMARY KEY, instance TEXT NOT NULL, bot TEXT NOT NULL, bound_at INTEGER NOT NULL);
     CREATE INDEX instance_bindings_bot ON instance_bindings (bot);",
];

/// How long a readiness probe waits for another writer's lock (the
/// `/readyz` bound is 1 s, see `server::ops`).
const PROBE_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(900);

/// How often the background checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Bumped after every [`Self::run`] (the path of every write but audit
    /// appends): see [`Store::change_counter`].
    changes: Arc<std::sync::atomic::AtomicU64>,
    /// The checkpointer thread runs while any clone of the store lives.
    _alive: Arc<()>,
    /// A connection of its own for [`Store::ping`], so a readiness probe
    /// waiting on another process's lock never holds up requests (none for
    /// an in-memory store: the probe uses `conn`).
    probe: Option<Arc<Mutex<Connection>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn corrupt(kind: &'static str, name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { kind, name: name.to_string(), reason: e.to_string() }
}

/// A read's failure: stored JSON that does not parse ([`parse_json`]) is the
/// record `kind`/`name` being corrupt, anything else the backend failing.
fn read_failed<'a>(kind: &'static str, name: &'a str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |e| match e {
        rusqlite::Error::FromSqlConversionFailure(_, _, cause) => corrupt(kind, name, cause),
        other => backend(other),
    }
}

fn changed(kind: &'static str, name: &str) -> StoreError {
    StoreError::Changed { kind, name: name.to_string() }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        let mut store = Self::init(conn)?;
        spawn_checkpointer(path, Arc::downgrade(&store._alive))?;
        let probe = Connection::open(path).map_err(backend)?;
        probe.busy_timeout(PROBE_BUSY_TIMEOUT).map_err(backend)?;
        store.probe = Some(Arc::new(Mutex::new(probe)));
        Ok(store)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
        // Checkpoints run on their own connection (spawn_checkpointer), not
        // inside a request's commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(backend)?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::Backend(format!(
                "database schema version {version} is newer than this broker supports ({}); upgrade sigil",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(backend)?;
            tx.execute_batch(m).map_err(backend)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)), changes: Default::default(), _alive: Arc::new(()), probe: None })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (conn, changes) = (self.conn.clone(), self.changes.clone());
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
            let r = f(&mut guard);
            // After the commit, under the connection lock: a reader that read
            // the counter before its records sees it move (reads count too:
            // harmless, they only retire cached callers early).
            changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r
        })
        .await
        .map_err(backend)?
    }

    /// Like [`Self::run`], but the change counter stays: for tables no cache
    /// reads (join challenges), so a flood of `BeginJoin` calls does not
    /// retire every cached caller.
    async fn run_uncounted<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(backend)?
    }

    /// Runs raw SQL on the store's connection (tests set up corrupt rows with it).
    #[cfg(any(test, feature = "test-support"))]
    pub fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        self.run_inline(|c| c.execute_batch(sql).map_err(backend))
    }

    /// Runs a one-row statement on the calling thread. Used for the lookups and
    /// the audit insert every API request makes: each takes tens of
    /// microseconds (checkpoints run elsewhere, see [`spawn_checkpointer`]),
    /// less than the hop to the blocking pool and back that [`Self::run`] costs
    /// (docs/benchmarks.md: 4 hops and ~17 futex calls per issued SVID).
    fn run_inline<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        f(&mut guard)
    }
}

/// Copies the WAL into the database from a second connection, off the request
/// path. SQLite's automatic checkpoint runs inside whichever commit crosses the
/// threshold, copying pages and fsyncing while every other request waits on the
/// store: about one write in a thousand stalled 10-30 ms (docs/benchmarks.md).
/// A passive checkpoint from another connection does not block writers.
fn spawn_checkpointer(path: &Path, alive: std::sync::Weak<()>) -> Result<(), StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || loop {
            std::thread::sleep(CHECKPOINT_EVERY);
            if alive.strong_count() == 0 {
                return;
            }
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
            }
        })
        .map_err(backend)?;
    Ok(())
}

fn current_revision(tx: &Connection, kind: Kind, name: &str) -> Result<Option<i64>, StoreError> {
    tx.query_row(
        "SELECT revision FROM resources WHERE kind = ?1 AND name = ?2",
        params![kind.as_str(), name],
        |r| r.get(0),
    )
    .optional()
    .map_err(backend)
}

fn not_found(kind: Kind, name: &str) -> StoreError {
    StoreError::NotFound { kind: kind.as_str(), name: name.to_string() }
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenState> {
    Ok(TokenState {
        name: r.get(0)?,
        bot: r.get(1)?,
        method: r.get(2)?,
        uses: r.get(3)?,
        max_uses: r.get(4)?,
        expires_at: r.get(5)?,
    })
}

/// Stored JSON text, parsed: text that does not parse is an error, never `Null`.
fn parse_json(column: usize, text: &str) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e)))
}

const TOKEN_COLS: &str = "name, bot, method, uses, max_uses, expires_at";

fn instance_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BotInstance> {
    let attrs: String = r.get(5)?;
    Ok(BotInstance {
        id: r.get(0)?,
        bot: r.get(1)?,
        generation: r.get(2)?,
        pending: r.get(3)?,
        locked: r.get::<_, i64>(4)? != 0,
        join_attributes: parse_json(5, &attrs)?,
        created_at: r.get(6)?,
        identity_expires_at: r.get(7)?,
    })
}

/// The columns [`instance_row`] reads.
const INSTANCE_COLS: &str = "id, bot, generation, pending, locked, join_attributes, created_at, identity_expires_at";
const RECORD_COLS: &str = "id, bot, generation, pending, locked, join_attributes, created_at, identity_expires_at, last_seen, heartbeat_at, heartbeat";

fn record_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRecord> {
    let hb: String = r.get(10)?;
    let heartbeat = if hb.is_empty() {
        None
    } else {
        Some(serde_json::from_str(&hb).map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, Box::new(e)))?)
    };
    Ok(InstanceRecord { instance: instance_row(r)?, last_seen: r.get(8)?, heartbeat_at: r.get(9)?, heartbeat })
}

fn no_instance(id: &str) -> StoreError {
    StoreError::IdentityRejected(format!("bot instance {id} does not exist (deleted, or its bot was)"))
}

/// [`Store::create`] inside `tx`.
fn create_in(tx: &Connection, kind: Kind, doc: &Doc, token: Option<&(TokenState, Option<String>)>) -> Result<i64, StoreError> {
    if current_revision(tx, kind, &doc.name)?.is_some() {
        return Err(StoreError::AlreadyExists { kind: kind.as_str(), name: doc.name.clone() });
    }
    tx.execute(
        "INSERT INTO resources (kind, name, revision, spec) VALUES (?1, ?2, 1, ?3)",
        params![kind.as_str(), doc.name, doc.spec.to_string()],
    )
    .map_err(backend)?;
    if let Some((t, hash)) = token {
        let hash = hash.clone().unwrap_or_else(|| token_uses::no_secret_hash(&t.name));
        tx.execute(
            "INSERT INTO join_tokens (name, secret_hash, bot, method, uses, max_uses, expires_at)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
            params![t.name, hash, t.bot, t.method, t.max_uses, t.expires_at],
        )
        .map_err(backend)?;
    }
    Ok(1)
}

/// [`Store::update`] inside `tx`.
fn update_in(tx: &Connection, kind: Kind, doc: &Doc, token: Option<&TokenUpdate>) -> Result<i64, StoreError> {
    let current = current_revision(tx, kind, &doc.name)?.ok_or_else(|| not_found(kind, &doc.name))?;
    if current != doc.revision {
        return Err(StoreError::Conflict { kind: kind.as_str(), name: doc.name.clone(), expected: doc.revision, current });
    }
    let changed = tx
        .execute(
            "UPDATE resources SET revision = revision + 1, spec = ?1 WHERE kind = ?2 AND name = ?3 AND revision = ?4",
            params![doc.spec.to_string(), kind.as_str(), doc.name, doc.revision],
        )
        .map_err(backend)?;
    if changed != 1 {
        return Err(StoreError::Conflict { kind: kind.as_str(), name: doc.name.clone(), expected: doc.revision, current });
    }
    if let Some(u) = token {
        let t = &u.state;
        tx.execute("UPDATE join_tokens SET max_uses = ?1, expires_at = ?2 WHERE name = ?3", params![t.max_uses, t.expires_at, t.name])
            .map_err(backend)?;
        if u.unbind_keypair {
            tx.execute("DELETE FROM keypair_bindings WHERE token = ?1", params![t.name]).map_err(backend)?;
        }
    }
    Ok(current + 1)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, kind: Kind, doc: &Doc, token: Option<(&TokenState, Option<&str>)>) -> Result<i64, StoreError> {
        let doc = doc.clone();
        let token = token.map(|(t, h)| (t.clone(), h.map(str::to_string)));
        self.run(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let r = create_in(&tx, kind, &doc, token.as_ref())?;
            tx.commit().map_err(backend)?;
            Ok(r)
        })
        .await
    }

    async fn update(&self, kind: Kind, doc: &Doc, token: Option<&TokenUpdate>) -> Result<i64, StoreError> {
        let doc = doc.clone();
        let token = token.cloned();
        self.run(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let r = update_in(&tx, kind, &doc, token.as_ref())?;
            tx.commit().map_err(backend)?;
            Ok(r)
        })
        .await
    }

    async fn write_batch(&self, writes: &[BatchWrite]) -> Result<Vec<i64>, StoreError> {
        super::check_batch_size(writes)?;
        let writes = writes.to_vec();
        self.run(move |c| {
            // Dropped without commit on the first error: rolled back.
            let tx = c.transaction().map_err(backend)?;
            let mut revisions = Vec::with_capacity(writes.len());
            for w in &writes {
                revisions.push(match w {
                    BatchWrite::Create { kind, doc, token } => create_in(&tx, *kind, doc, token.as_ref())?,
                    BatchWrite::Update { kind, doc, token } => update_in(&tx, *kind, doc, token.as_ref())?,
                });
            }
            tx.commit().map_err(backend)?;
            Ok(revisions)
        })
        .await
    }

    async fn get(&self, kind: Kind, name: &str) -> Result<Doc, StoreError> {
        self.run_inline(|c| {
            c.prepare_cached("SELECT name, revision, spec FROM resources WHERE kind = ?1 AND name = ?2")
                .map_err(backend)?
                .query_row(params![kind.as_str(), name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                })
                .optional()
                .map_err(backend)?
                .map(|(name, revision, spec)| {
                    let spec = serde_json::from_str(&spec).map_err(|e| corrupt(kind.as_str(), &name, e))?;
                    Ok(Doc { name, revision, spec })
                })
                .unwrap_or_else(|| Err(not_found(kind, name)))
        })
    }

    async fn list(&self, kind: Kind, after: &str, limit: usize) -> Result<Vec<Doc>, StoreError> {
        let after = after.to_string();
        // A read: the change counter stays, so the lock set (which lists
        // locks whenever the counter moves, `service::locks`) does not retire
        // itself and every cached caller by reading.
        self.run_uncounted(move |c| {
            let mut st = c
                .prepare_cached("SELECT name, revision, spec FROM resources WHERE kind = ?1 AND name > ?2 ORDER BY name LIMIT ?3")
                .map_err(backend)?;
            let rows = st
                .query_map(params![kind.as_str(), after, limit as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (name, revision, spec) = row.map_err(backend)?;
                let spec = serde_json::from_str(&spec).map_err(|e| corrupt(kind.as_str(), &name, e))?;
                out.push(Doc { name, revision, spec });
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, kind: Kind, name: &str, revision: i64) -> Result<(), StoreError> {
        let name = name.to_string();
        self.run(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let current = current_revision(&tx, kind, &name)?.ok_or_else(|| not_found(kind, &name))?;
            if revision != 0 && revision != current {
                return Err(StoreError::Conflict { kind: kind.as_str(), name, expected: revision, current });
            }
            tx.execute("DELETE FROM resources WHERE kind = ?1 AND name = ?2", params![kind.as_str(), name])
                .map_err(backend)?;
            match kind {
                Kind::JoinToken => {
                    tx.execute("DELETE FROM join_tokens WHERE name = ?1", params![name]).map_err(backend)?;
                }
                Kind::Bot => {
                    tx.execute("DELETE FROM bot_instances WHERE bot = ?1", params![name]).map_err(backend)?;
                    tx.execute("DELETE FROM instance_bindings WHERE bot = ?1", params![name]).map_err(backend)?;
                    let tokens: Vec<String> = {
                        let mut st = tx.prepare("SELECT name FROM join_tokens WHERE bot = ?1").map_err(backend)?;
                        let rows = st.query_map(params![name], |r| r.get(0)).map_err(backend)?;
                        rows.collect::<Result<_, _>>().map_err(backend)?
                    };
                    for t in tokens {
                        tx.execute("DELETE FROM resources WHERE kind = ?1 AND name = ?2", params![Kind::JoinToken.as_str(), t])
                            .map_err(backend)?;
                    }
                    tx.execute("DELETE FROM join_tokens WHERE bot = ?1", params![name]).map_err(backend)?;
                }
                _ => {}
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn token_state(&self, name: &str) -> Result<TokenState, StoreError> {
        let name = name.to_string();
        self.run(move |c| {
            c.query_row(&format!("SELECT {TOKEN_COLS} FROM join_tokens WHERE name = ?1"), params![name], token_row)
                .optional()
                .map_err(backend)?
                .ok_or_else(|| not_found(Kind::JoinToken, &name))
        })
        .await
    }

    async fn token_record(&self, key: TokenKey<'_>) -> Result<Option<TokenRecord>, StoreError> {
        let (sql, value) = match key {
            TokenKey::Name(n) => ("SELECT name, bot, method, uses, max_uses, expires_at, secret_hash FROM join_tokens WHERE name = ?1", n),
            TokenKey::SecretHash(h) => ("SELECT name, bot, method, uses, max_uses, expires_at, secret_hash FROM join_tokens WHERE secret_hash = ?1", h),
        };
        self.run_inline(|c| {
            c.prepare_cached(sql)
                .map_err(backend)?
                .query_row(params![value], |r| Ok(TokenRecord { state: token_row(r)?, secret_hash: r.get(6)? }))
                .optional()
                .map_err(backend)
        })
    }

    async fn count_token_use(&self, expected: &TokenRecord) -> Result<i64, StoreError> {
        let expected = expected.clone();
        self.run(move |c| count_use(c, &expected)).await
    }

    async fn create_instance(&self, inst: &BotInstance) -> Result<(), StoreError> {
        let inst = inst.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO bot_instances (id, bot, generation, pending, locked, join_attributes, created_at, last_seen, identity_expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
                params![inst.id, inst.bot, inst.generation, inst.pending, inst.locked as i64, inst.join_attributes.to_string(), inst.created_at, inst.identity_expires_at],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn create_bound_instance(&self, inst: &BotInstance, key: &str, rebind: bool) -> Result<(), StoreError> {
        let (inst, key) = (inst.clone(), key.to_string());
        self.run(move |c| {
            let tx = c.transaction().map_err(backend)?;
            // The primary key decides between concurrent binds (the one
            // connection serialises them here; the constraint is the rule).
            let sql = if rebind {
                "INSERT INTO instance_bindings (key, instance, bot, bound_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET instance = excluded.instance, bot = excluded.bot, bound_at = excluded.bound_at"
            } else {
                "INSERT INTO instance_bindings (key, instance, bot, bound_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO NOTHING"
            };
            let n = tx.execute(sql, params![key, inst.id, inst.bot, inst.created_at]).map_err(backend)?;
            if n != 1 {
                return Err(StoreError::AlreadyExists { kind: "instance_binding", name: key });
            }
            tx.execute(
                "INSERT INTO bot_instances (id, bot, generation, pending, locked, join_attributes, created_at, last_seen, identity_expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
                params![inst.id, inst.bot, inst.generation, inst.pending, inst.locked as i64, inst.join_attributes.to_string(), inst.created_at, inst.identity_expires_at],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn instance_binding(&self, key: &str) -> Result<Option<InstanceBinding>, StoreError> {
        self.run_inline(|c| {
            c.prepare_cached("SELECT key, instance, bot, bound_at FROM instance_bindings WHERE key = ?1")
                .map_err(backend)?
                .query_row(params![key], |r| Ok(InstanceBinding { key: r.get(0)?, instance: r.get(1)?, bot: r.get(2)?, bound_at: r.get(3)? }))
                .optional()
                .map_err(backend)
        })
    }

    async fn list_instance_bindings(&self, bot: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<InstanceBinding>, StoreError> {
        let (bot, prefix, after) = (bot.to_string(), prefix.to_string(), after.to_string());
        self.run(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT key, instance, bot, bound_at FROM instance_bindings
                     WHERE (?1 = '' OR bot = ?1) AND substr(key, 1, length(?2)) = ?2 AND key > ?3 ORDER BY key LIMIT ?4",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![bot, prefix, after, limit as i64], |r| {
                    Ok(InstanceBinding { key: r.get(0)?, instance: r.get(1)?, bot: r.get(2)?, bound_at: r.get(3)? })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(read_failed("instance binding", ""))
        })
        .await
    }

    async fn delete_instance_binding(&self, key: &str) -> Result<InstanceBinding, StoreError> {
        let key = key.to_string();
        self.run(move |c| {
            c.prepare_cached("DELETE FROM instance_bindings WHERE key = ?1 RETURNING key, instance, bot, bound_at")
                .map_err(backend)?
                .query_row(params![key], |r| Ok(InstanceBinding { key: r.get(0)?, instance: r.get(1)?, bot: r.get(2)?, bound_at: r.get(3)? }))
                .optional()
                .map_err(backend)?
                .ok_or(StoreError::NotFound { kind: "instance_binding", name: key })
        })
        .await
    }

    async fn instance(&self, id: &str) -> Result<BotInstance, StoreError> {
        self.run_inline(|c| {
            c.prepare_cached(&format!("SELECT {INSTANCE_COLS} FROM bot_instances WHERE id = ?1"))
            .map_err(backend)?
            .query_row(params![id], instance_row)
            .optional()
            .map_err(read_failed("bot instance", id))?
            .ok_or_else(|| StoreError::IdentityRejected(format!("bot instance {id} does not exist (deleted, or its bot was)")))
        })
    }

    async fn caller_records(&self, id: &str, bot: &str) -> Result<CallerRecords, StoreError> {
        // Three reads under one acquisition of the connection, with cached
        // statements, on the calling thread.
        self.run_inline(|c| {
            let instance = c
                .prepare_cached(&format!("SELECT {INSTANCE_COLS} FROM bot_instances WHERE id = ?1"))
                .map_err(backend)?
                .query_row(params![id], instance_row)
                .optional()
                .map_err(read_failed("bot instance", id))?
                .ok_or_else(|| StoreError::IdentityRejected(format!("bot instance {id} does not exist (deleted, or its bot was)")))?;
            let mut get = c.prepare_cached("SELECT name, revision, spec FROM resources WHERE kind = ?1 AND name = ?2").map_err(backend)?;
            let raw = |r: &rusqlite::Row<'_>| Ok(RawDoc { name: r.get(0)?, revision: r.get(1)?, spec: r.get(2)? });
            let bot = get.query_row(params![Kind::Bot.as_str(), bot], raw).optional().map_err(backend)?;
            let mut roles = Vec::new();
            if let Some(b) = &bot {
                let names = sigil_core::domain::bot::role_names(&b.spec).map_err(|e| corrupt("bot", &b.name, e))?;
                for name in &names {
                    if let Some(d) = get.query_row(params![Kind::Role.as_str(), name], raw).optional().map_err(backend)? {
                        roles.push(d);
                    }
                }
            }
            Ok(CallerRecords { instance, bot, roles })
        })
    }

    async fn generation_state(&self, id: &str) -> Result<Option<GenerationState>, StoreError> {
        self.run_inline(|c| {
            c.prepare_cached("SELECT id, generation, pending, pending_key, locked FROM bot_instances WHERE id = ?1")
                .map_err(backend)?
                .query_row(params![id], |r| {
                    Ok(GenerationState {
                        id: r.get(0)?,
                        generation: r.get(1)?,
                        pending: r.get(2)?,
                        pending_key: r.get(3)?,
                        locked: r.get::<_, i64>(4)? != 0,
                    })
                })
                .optional()
                .map_err(backend)
        })
    }

    async fn swap_generation(&self, expected: &GenerationState, next: &GenerationState) -> Result<(), StoreError> {
        let (e, n) = (expected.clone(), next.clone());
        self.run(move |c| {
            let swapped = c
                .execute(
                    "UPDATE bot_instances SET generation = ?1, pending = ?2, pending_key = ?3, locked = ?4
                     WHERE id = ?5 AND generation = ?6 AND pending = ?7 AND pending_key = ?8 AND locked = ?9",
                    params![n.generation, n.pending, n.pending_key, n.locked as i64, e.id, e.generation, e.pending, e.pending_key, e.locked as i64],
                )
                .map_err(backend)?;
            if swapped != 1 {
                return Err(changed("bot instance", &e.id));
            }
            Ok(())
        })
        .await
    }

    async fn touch_instance(&self, id: &str, now: i64, identity_expires_at: i64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE bot_instances SET last_seen = MAX(last_seen, ?1), identity_expires_at = MAX(identity_expires_at, ?3) WHERE id = ?2",
                    params![now, id, identity_expires_at],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(no_instance(&id));
            }
            Ok(())
        })
        .await
    }

    async fn record_heartbeat(&self, id: &str, heartbeat: &InstanceHeartbeat, now: i64, min_interval: i64) -> Result<bool, StoreError> {
        let (id, text) = (id.to_string(), serde_json::to_string(heartbeat).map_err(|e| StoreError::Backend(e.to_string()))?);
        self.run(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let last: Option<i64> = tx
                .query_row("SELECT heartbeat_at FROM bot_instances WHERE id = ?1", params![id], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            let last = last.ok_or_else(|| no_instance(&id))?;
            if last != 0 && last > now - min_interval {
                return Ok(false);
            }
            tx.execute(
                "UPDATE bot_instances SET heartbeat = ?1, heartbeat_at = ?2, last_seen = MAX(last_seen, ?2) WHERE id = ?3",
                params![text, now, id],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn list_instances(&self, bot: &str, seen_since: i64, after: &str, limit: usize) -> Result<Vec<InstanceRecord>, StoreError> {
        let (bot, after) = (bot.to_string(), after.to_string());
        self.run(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLS} FROM bot_instances WHERE (?1 = '' OR bot = ?1) AND last_seen >= ?2 AND id > ?3 ORDER BY id LIMIT ?4"
                ))
                .map_err(backend)?;
            let rows = st.query_map(params![bot, seen_since, after, limit as i64], record_row).map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(read_failed("bot instance", ""))
        })
        .await
    }

    async fn instance_record(&self, id: &str) -> Result<InstanceRecord, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            c.prepare_cached(&format!("SELECT {RECORD_COLS} FROM bot_instances WHERE id = ?1"))
                .map_err(backend)?
                .query_row(params![id], record_row)
                .optional()
                .map_err(read_failed("bot instance", &id))?
                .ok_or_else(|| StoreError::NotFound { kind: "bot_instance", name: id.clone() })
        })
        .await
    }

    async fn delete_expired_instances(&self, seen_before: i64, now: i64, limit: usize) -> Result<usize, StoreError> {
        let changes = self.changes.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run_uncounted(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM bot_instances WHERE id IN (SELECT id FROM bot_instances
                        WHERE last_seen < ?1 AND identity_expires_at <= ?2 ORDER BY last_seen LIMIT ?3)",
                )
                .map_err(backend)?
                .execute(params![seen_before, now, limit])
                .map_err(backend)?;
            if n > 0 {
                changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(n)
        })
        .await
    }

    async fn issuance_events(&self, key: IssuanceKey<'_>, expires_after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let (path, value) = match key {
            IssuanceKey::Serial(s) => ("$.serial", s.to_string()),
            IssuanceKey::Instance(i) => ("$.instance", i.to_string()),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run_uncounted(move |c| {
            let sql = format!(
                "SELECT id, time, kind, actor, resource, outcome, detail FROM audit_events
                 WHERE kind IN ('{}') AND outcome = 'ok' AND json_valid(detail)
                   AND json_extract(detail, '{path}') = ?1 AND CAST(json_extract(detail, '$.expires_at') AS INTEGER) > ?2
                 ORDER BY id DESC LIMIT ?3",
                ISSUANCE_KINDS.join("', '")
            );
            let mut st = c.prepare(&sql).map_err(backend)?;
            let rows = st
                .query_map(params![value, expires_after, limit], |r| {
                    let id: i64 = r.get(0)?;
                    let detail: String = r.get(6)?;
                    Ok(AuditRecord {
                        id,
                        time: r.get(1)?,
                        kind: r.get(2)?,
                        actor: r.get(3)?,
                        resource: r.get(4)?,
                        outcome: r.get(5)?,
                        detail: parse_json(6, &detail)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(read_failed("audit event", "issuance"))
        })
        .await
    }

    async fn insert_revocations(&self, revocations: &[Revocation], now: i64) -> Result<usize, StoreError> {
        let rs = revocations.to_vec();
        let f = move |c: &mut Connection| {
            let tx = c.transaction().map_err(backend)?;
            let mut n = 0;
            for r in &rs {
                n += tx
                    .execute(
                        "INSERT INTO revocations (ca_key, serial, not_after, revoked_at, reason, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (ca_key, serial) DO NOTHING",
                        params![r.ca_key, r.serial, r.not_after, r.revoked_at, r.reason, r.actor],
                    )
                    .map_err(backend)?;
            }
            tx.execute("DELETE FROM revocations WHERE not_after < ?1", params![now.saturating_sub(86_400)]).map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(n)
        };
        // Only a write that inserted moves the change counter (every cache re-reads then).
        let n = self.run_uncounted(f).await?;
        if n > 0 {
            self.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(n)
    }

    async fn list_revocations(&self, after_seq: i64, not_after_after: i64, limit: usize) -> Result<Vec<Revocation>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Inline: an index range that is nearly always empty, read after
        // every change (see `service::revocation`).
        self.run_inline(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT seq, serial, ca_key, not_after, revoked_at, reason, actor FROM revocations
                     WHERE seq > ?1 AND not_after > ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![after_seq, not_after_after, limit], |r| {
                    Ok(Revocation {
                        seq: r.get(0)?,
                        serial: r.get(1)?,
                        ca_key: r.get(2)?,
                        not_after: r.get(3)?,
                        revoked_at: r.get(4)?,
                        reason: r.get(5)?,
                        actor: r.get(6)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
    }

    async fn list_ca_keys(&self) -> Result<Vec<CaKeyRecord>, StoreError> {
        // A read: the change counter stays, so the CA reload watcher (which
        // lists the keys whenever the counter moves, `ca::rotation::watch`)
        // does not retire itself and every cached caller by reading.
        self.run_uncounted(|c| {
            let mut st = c
                .prepare("SELECT id, purpose, alg, sealed_key, cert_der, created_at, not_after, state, key_ref, activated_at, deactivated_at FROM ca_keys ORDER BY created_at, id")
                .map_err(backend)?;
            let rows = st
                .query_map([], |r| {
                    Ok(CaKeyRecord {
                        id: r.get(0)?,
                        purpose: r.get(1)?,
                        alg: r.get(2)?,
                        sealed_key: r.get(3)?,
                        cert_der: r.get(4)?,
                        created_at: r.get(5)?,
                        not_after: r.get(6)?,
                        state: r.get(7)?,
                        key_ref: r.get(8)?,
                        activated_at: r.get(9)?,
                        deactivated_at: r.get(10)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn insert_ca_key(&self, k: &CaKeyRecord) -> Result<(), StoreError> {
        let k = k.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO ca_keys (id, purpose, alg, sealed_key, cert_der, created_at, not_after, state, key_ref, activated_at, deactivated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![k.id, k.purpose, k.alg, k.sealed_key, k.cert_der, k.created_at, k.not_after, k.state, k.key_ref, k.activated_at, k.deactivated_at],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::AlreadyExists { kind: "ca key", name: format!("{} ({})", k.id, k.purpose) }
                }
                other => backend(other),
            })?;
            Ok(())
        })
        .await
    }

    async fn change_ca_key(&self, change: &CaKeyChange, now: i64) -> Result<(), StoreError> {
        let change = change.clone();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
            for st in super::ca_keys_sql::steps(&change) {
                let sql = st.sql.replace('$', "?");
                let n = if st.with_now { tx.execute(&sql, params![st.id, now]) } else { tx.execute(&sql, params![st.id]) };
                let n = n.map_err(|e| match e {
                    rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => changed("ca key", st.id),
                    other => backend(other),
                })?;
                if n != 1 {
                    return Err(changed("ca key", st.id));
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    fn change_counter(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn insert_challenge(&self, challenge: &ChallengeRecord, limits: &ChallengeLimits, now: i64) -> Result<(), StoreError> {
        let (c, l) = (challenge.clone(), *limits);
        self.run_uncounted(move |conn| super::sqlite_challenges::insert(conn, &c, &l, now)).await
    }

    async fn take_challenge(&self, id: &str, now: i64) -> Result<Option<ChallengeRecord>, StoreError> {
        let id = id.to_string();
        self.run_uncounted(move |conn| super::sqlite_challenges::take(conn, &id, now)).await
    }

    async fn append_audit_batch(&self, events: &[AuditRecord]) -> Result<Vec<i64>, StoreError> {
        let details: Vec<String> = events.iter().map(|e| e.detail.to_string()).collect();
        self.run_inline(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
            let mut ids = Vec::with_capacity(events.len());
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO audit_events (time, kind, actor, resource, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(backend)?;
                for (e, detail) in events.iter().zip(&details) {
                    st.execute(params![e.time, e.kind, e.actor, e.resource, e.outcome, detail]).map_err(backend)?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            tx.commit().map_err(backend)?;
            Ok(ids)
        })
    }

    async fn list_audit(&self, after_id: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, time, kind, actor, resource, outcome, detail FROM audit_events WHERE id > ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![after_id, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get::<_, String>(6)?))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, time, kind, actor, resource, outcome, detail) = row.map_err(backend)?;
                let detail = serde_json::from_str(&detail).map_err(|e| corrupt("audit event", &id.to_string(), e))?;
                out.push(AuditRecord { id, time, kind, actor, resource, outcome, detail });
            }
            Ok(out)
        })
        .await
    }

    /// Takes and releases the write lock: every request writes (the audit log
    /// at least), so a database another process holds locked is not ready even
    /// though reads still work (WAL). On its own connection, off the change counter.
    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.probe.clone().unwrap_or_else(|| self.conn.clone());
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
            c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").map_err(backend)
        })
        .await
        .map_err(backend)?
    }

    async fn prune_audit(&self, keep: u64, older_than: i64) -> Result<u64, StoreError> {
        // Off the async workers: a first prune may delete many rows. Both steps walk
        // the id (rowid) order only as far as the rows they delete, never the whole
        // table: `time` has no index, and at the default cap of 1,000,000 events a scan
        // every PRUNE_EVERY would stall every writer. Events are appended in time order,
        // so the first event at or after `older_than` ends the old ones; ids grow by one
        // per event, so the newest `keep` events are those above MAX(id) - keep.
        self.run(move |c| {
            let first_kept: Option<i64> = c
                .query_row("SELECT id FROM audit_events WHERE time >= ?1 ORDER BY id LIMIT 1", params![older_than], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            let mut n = match first_kept {
                Some(id) => c.execute("DELETE FROM audit_events WHERE id < ?1", params![id]),
                None => c.execute("DELETE FROM audit_events", []),
            }
            .map_err(backend)?;
            if keep > 0 {
                let keep = i64::try_from(keep).unwrap_or(i64::MAX);
                n += c
                    .execute("DELETE FROM audit_events WHERE id <= (SELECT MAX(id) FROM audit_events) - ?1", params![keep])
                    .map_err(backend)?;
            }
            Ok(n as u64)
        })
        .await
    }

    async fn keypair_binding(&self, token: &str) -> Result<Option<KeypairBinding>, StoreError> {
        let token = token.to_string();
        self.run(move |c| keypair_row(c, &token)).await
    }

    async fn insert_keypair_binding(&self, binding: &KeypairBinding, spend_secret: Option<(&str, &str)>, now: i64) -> Result<(), StoreError> {
        let b = binding.clone();
        let spend = spend_secret.map(|(expected, marker)| (expected.to_string(), marker.to_string()));
        self.run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
            if let Some((expected, marker)) = spend {
                let spent = tx
                    .execute("UPDATE join_tokens SET secret_hash = ?3 WHERE name = ?1 AND secret_hash = ?2", params![b.token, expected, marker])
                    .map_err(backend)?;
                if spent != 1 {
                    return Err(changed("join token", &b.token));
                }
            }
            let inserted = tx
                .execute(
                    "INSERT INTO keypair_bindings (token, public_key, sequence, locked, updated_at, last_attempt)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (token) DO NOTHING",
                    params![b.token, b.public_key, b.sequence, b.locked as i64, now, b.last_attempt],
                )
                .map_err(backend)?;
            if inserted != 1 {
                return Err(changed("keypair binding", &b.token));
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn swap_keypair(&self, expected: &KeypairBinding, next: &KeypairBinding, count_use_of: Option<&TokenRecord>, now: i64) -> Result<(), StoreError> {
        let (e, n, token) = (expected.clone(), next.clone(), count_use_of.cloned());
        self.run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
            let swapped = tx
                .execute(
                    "UPDATE keypair_bindings SET public_key = ?1, sequence = ?2, locked = ?3, last_attempt = ?4, updated_at = ?5
                     WHERE token = ?6 AND public_key = ?7 AND sequence = ?8 AND locked = ?9 AND last_attempt = ?10",
                    params![n.public_key, n.sequence, n.locked as i64, n.last_attempt, now, e.token, e.public_key, e.sequence, e.locked as i64, e.last_attempt],
                )
                .map_err(backend)?;
            if swapped != 1 {
                return Err(changed("keypair binding", &e.token));
            }
            if let Some(t) = token {
                count_use(&tx, &t)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }
}

/// [`Store::count_token_use`]: one conditional statement; the new count.
fn count_use(c: &Connection, t: &TokenRecord) -> Result<i64, StoreError> {
    c.prepare_cached(
        "UPDATE join_tokens SET uses = uses + 1
         WHERE name = ?1 AND secret_hash = ?2 AND max_uses = ?3 AND expires_at = ?4 AND uses < ?3 RETURNING uses",
    )
    .map_err(backend)?
    .query_row(params![t.state.name, t.secret_hash, t.state.max_uses, t.state.expires_at], |r| r.get(0))
    .optional()
    .map_err(backend)?
    .ok_or_else(|| changed("join token", &t.state.name))
}

fn keypair_row(c: &Connection, token: &str) -> Result<Option<KeypairBinding>, StoreError> {
    c.query_row(
        "SELECT token, public_key, sequence, locked, last_attempt FROM keypair_bindings WHERE token = ?1",
        params![token],
        |r| {
            Ok(KeypairBinding {
                token: r.get(0)?,
                public_key: r.get(1)?,
                sequence: r.get(2)?,
                locked: r.get::<_, i64>(3)? != 0,
                last_attempt: r.get(4)?,
            })
        },
    )
    .optional()
    .map_err(backend)
}

#[cfg(test)]
mod conformance_tests {
    use super::SqliteStore;
    use crate::store::conformance::{RawSql, Subject};
    use std::sync::Arc;

    struct Raw(SqliteStore);

    #[async_trait::async_trait]
    impl RawSql for Raw {
        async fn exec(&self, sql: &str) {
            self.0.execute_raw(sql).unwrap();
        }
    }

    async fn fresh() -> Subject {
        let s = SqliteStore::in_memory().unwrap();
        Subject { store: Arc::new(s.clone()), raw: Arc::new(Raw(s)) }
    }

    crate::store_conformance_tests!(fresh);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(name: &str, revision: i64) -> Doc {
        Doc { name: name.into(), revision, spec: json!({"name": name}) }
    }

    #[tokio::test]
    async fn a_legacy_retired_ca_key_stays_retired_and_unpublished_after_the_rotation_migration() {
        let conn = Connection::open_in_memory().unwrap();
        let before = MIGRATIONS.iter().position(|m| *m == crate::store::ca_keys_sql::MIGRATION).unwrap();
        for m in &MIGRATIONS[..before] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", before as i64).unwrap();
        conn.execute_batch(
            "INSERT INTO ca_keys (id, purpose, alg, sealed_key, cert_der, created_at, not_after, state) VALUES
               ('old', 'x509-svid', 'ec-p256', x'00', NULL, 10, 1000, 'retired'),
               ('cur', 'x509-svid', 'ec-p256', x'00', NULL, 20, 1000, 'active'),
               ('odd', 'jwt-svid', 'ec-p256', x'00', NULL, 30, 1000, 'next');",
        )
        .unwrap();
        let s = SqliteStore::init(conn).unwrap();
        let keys: Vec<(String, String, i64, i64)> =
            s.list_ca_keys().await.unwrap().into_iter().map(|k| (k.id, k.state, k.activated_at, k.deactivated_at)).collect();
        assert_eq!(
            keys,
            vec![
                ("old".into(), "retired".into(), 10, 10),
                ("cur".into(), "active".into(), 20, 0),
                ("odd".into(), "retired".into(), 30, 30),
            ]
        );
    }

    #[tokio::test]
    async fn wal_is_checkpointed_into_the_database_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let s = SqliteStore::open(&db).unwrap();
        let before = std::fs::metadata(&db).unwrap().len();
        for i in 0..200 {
            s.create(Kind::Role, &doc(&format!("r{i}"), 0), None).await.unwrap();
        }
        // Writers never checkpoint (wal_autocheckpoint = 0): the rows reach the
        // database file only through the background checkpointer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&db).unwrap().len() <= before {
            assert!(std::time::Instant::now() < deadline, "WAL never checkpointed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(s.list(Kind::Role, "", 1000).await.unwrap().len(), 200);
    }

    #[tokio::test]
    async fn instances_from_before_identity_expiry_was_recorded_are_kept_until_the_internal_ca_expires() {
        // A store at the schema before `identity_expires_at`, with an instance
        // whose identity's NotAfter is unknown: only its issuer bounds it.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        let before = MIGRATIONS.iter().position(|m| m.contains("identity_expires_at")).unwrap();
        {
            let mut c = Connection::open(&db).unwrap();
            for (i, m) in MIGRATIONS[..before].iter().enumerate() {
                let tx = c.transaction().unwrap();
                tx.execute_batch(m).unwrap();
                tx.pragma_update(None, "user_version", (i + 1) as i64).unwrap();
                tx.commit().unwrap();
            }
            c.execute_batch(
                "INSERT INTO ca_keys (id, purpose, alg, sealed_key, created_at, not_after, state) VALUES
                    ('k1', 'internal', 'ec', x'00', 0, 5000, 'retired'), ('k2', 'internal', 'ec', x'00', 0, 9000, 'active'),
                    ('k3', 'x509-svid', 'ec', x'00', 0, 99999, 'active');
                 INSERT INTO bot_instances (id, bot, generation, pending, locked, join_attributes, created_at, last_seen)
                    VALUES ('old', 'b', 1, 1, 0, '{}', 10, 10);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&db).unwrap();
        assert_eq!(s.instance("old").await.unwrap().identity_expires_at, 9000);
        assert_eq!(s.delete_expired_instances(100, 8999, 10).await.unwrap(), 0, "its identity may still be valid");
        assert_eq!(s.delete_expired_instances(100, 9000, 10).await.unwrap(), 1);
    }
}
