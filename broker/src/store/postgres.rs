//! PostgreSQL store: several broker replicas share one database.
//!
//! No policy here: decisions are the domain's (`store::decisions`). Every
//! conditional write is an `UPDATE ... WHERE col = expected` (or an insert
//! that must not conflict) that must change exactly one row, in one
//! transaction with any write that must land with it; a revision check locks
//! the row it reads (`SELECT ... FOR UPDATE`). Under READ COMMITTED a
//! concurrent write to the same row waits for the first to commit, then
//! re-checks its `WHERE` on the committed row, so exactly one of two writes
//! at one expectation lands, however the requests spread over replicas. Migrations are numbered and
//! applied once, under a transaction-scoped advisory lock, however many
//! brokers start at once.
//!
//! Change version: every committed change but audit appends bumps one row,
//! `store_version`, in its own transaction. Each store polls that row every
//! [`CHANGE_POLL`]; [`Store::change_counter`] is this process's own writes
//! plus the last polled version, so a change made through another replica
//! reaches this replica's caches within `CHANGE_POLL` (plus one poll query).
//!
//! Connection: TCP with TLS as the URL's `sslmode` asks (libpq's parameters,
//! default `verify-full` for a non-loopback host; `pg_url`, `pg_tls`), or a
//! Unix socket.

use super::pg_pool::{Conn, Pool};
use super::*;
use sigil_core::domain::token_uses;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

/// How often a store reads the store-wide change version: the bound on how
/// long another replica's change can go unseen by this replica's caches.
pub const CHANGE_POLL: Duration = Duration::from_millis(500);
/// Most connections one broker opens to PostgreSQL.
pub const POOL_SIZE: usize = 16;
/// Longest wait for a free pooled connection, and for a new connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Advisory lock key (`pg_advisory_xact_lock`) held while migrating.
const MIGRATION_LOCK: i64 = 0x5349_4749_4c00_0001;
/// Advisory lock key held while appending audit events, so ids commit in
/// increasing order and `list_audit(after_id)` never skips a late commit.
const AUDIT_LOCK: i64 = 0x5349_4749_4c00_0002;

/// Migrations, applied in order; the index + 1 is the schema version.
/// Names sort bytewise (`COLLATE "C"`), as in SQLite.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE resources (
        kind TEXT NOT NULL, name TEXT COLLATE \"C\" NOT NULL, revision BIGINT NOT NULL, spec TEXT NOT NULL,
        PRIMARY KEY (kind, name));
    CREATE TABLE join_tokens (
        name TEXT PRIMARY KEY, secret_hash TEXT NOT NULL UNIQUE, bot TEXT NOT NULL, method TEXT NOT NULL,
        uses BIGINT NOT NULL, max_uses BIGINT NOT NULL, expires_at BIGINT NOT NULL);
    CREATE INDEX join_tokens_bot ON join_tokens (bot);
    CREATE TABLE bot_instances (
        id TEXT PRIMARY KEY, bot TEXT NOT NULL, generation BIGINT NOT NULL, pending BIGINT NOT NULL,
        locked BOOLEAN NOT NULL, join_attributes TEXT NOT NULL, created_at BIGINT NOT NULL,
        pending_key TEXT NOT NULL DEFAULT '');
    CREATE INDEX bot_instances_bot ON bot_instances (bot);
    CREATE TABLE ca_keys (
        id TEXT PRIMARY KEY, purpose TEXT NOT NULL, alg TEXT NOT NULL, sealed_key BYTEA NOT NULL,
        cert_der BYTEA, created_at BIGINT NOT NULL, not_after BIGINT NOT NULL, state TEXT NOT NULL);
    CREATE TABLE audit_events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, time BIGINT NOT NULL, kind TEXT NOT NULL,
        actor TEXT NOT NULL, resource TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL);
    CREATE TABLE keypair_bindings (
        token TEXT PRIMARY KEY REFERENCES join_tokens (name) ON DELETE CASCADE, public_key TEXT NOT NULL,
        sequence BIGINT NOT NULL, locked BOOLEAN NOT NULL, updated_at BIGINT NOT NULL,
        last_attempt TEXT NOT NULL DEFAULT '');
    CREATE TABLE store_version (id INT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
    INSERT INTO store_version (id, version) VALUES (1, 0);
",
    // One active CA key per purpose (see the SQLite migration of the same number).
    "UPDATE ca_keys SET state = 'retired' WHERE state = 'active' AND EXISTS (
        SELECT 1 FROM ca_keys k2 WHERE k2.purpose = ca_keys.purpose AND k2.state = 'active'
          AND (k2.created_at > ca_keys.created_at OR (k2.created_at = ca_keys.created_at AND k2.id > ca_keys.id)));
     CREATE UNIQUE INDEX ca_keys_one_active ON ca_keys (purpose) WHERE state = 'active';",
    // A CA key in a PKCS#11 token (see the SQLite migration of the same purpose).
    "ALTER TABLE ca_keys ADD COLUMN key_ref TEXT NOT NULL DEFAULT '';",
    // Pending join challenges, shared by the replicas.
    super::pg_challenges::MIGRATION,
    // Bot instance activity (see the SQLite migration of the same purpose).
    "ALTER TABLE bot_instances ADD COLUMN last_seen BIGINT NOT NULL DEFAULT 0;
     ALTER TABLE bot_instances ADD COLUMN heartbeat_at BIGINT NOT NULL DEFAULT 0;
     ALTER TABLE bot_instances ADD COLUMN heartbeat TEXT NOT NULL DEFAULT '';
     UPDATE bot_instances SET last_seen = created_at;
     CREATE INDEX bot_instances_last_seen ON bot_instances (last_seen);",
    // The latest NotAfter of an instance's identities (see the SQLite
    // migration of the same purpose).
    "ALTER TABLE bot_instances ADD COLUMN identity_expires_at BIGINT NOT NULL DEFAULT 0;
     UPDATE bot_instances SET identity_expires_at =
        COALESCE((SELECT MAX(not_after) FROM ca_keys WHERE purpose = 'internal'), 0);",
    // CA rotation (see the SQLite migration of the same purpose).
    super::ca_keys_sql::MIGRATION,
    // Revoked certificates (see the SQLite migration of the same purpose).
    "CREATE TABLE revocations (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, ca_key TEXT NOT NULL, serial TEXT NOT NULL,
        not_after BIGINT NOT NULL, revoked_at BIGINT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL,
        UNIQUE (ca_key, serial));",
    // Outside identities bound to bot instances (see the SQLite migration of the same purpose).
    "CREATE TABLE instance_bindings (
        key TEXT COLLATE \"C\" PRIMARY KEY, instance TEXT NOT NULL, bot TEXT NOT NULL, bound_at BIGINT NOT NULL);
     CREATE INDEX instance_bindings_bot ON instance_bindings (bot);",
];

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn not_found(kind: Kind, name: &str) -> StoreError {
    StoreError::NotFound { kind: kind.as_str(), name: name.to_string() }
}

fn changed(kind: &'static str, name: &str) -> StoreError {
    StoreError::Changed { kind, name: name.to_string() }
}

fn corrupt(kind: &'static str, name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { kind, name: name.to_string(), reason: e.to_string() }
}

/// Stored JSON text of record `kind`/`name`, parsed: text that does not parse
/// is [`StoreError::Corrupt`], never `Null`.
fn json(kind: &'static str, name: &str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(kind, name, e))
}

/// `postgres://user:SECRET@host/db` with the password (and any query, which
/// may carry one) left out: for logs and errors.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, String::new()));
    let host = match authority.rsplit_once('@') {
        Some((user, host)) => format!("{}@{host}", user.split(':').next().unwrap_or("")),
        None => authority.to_string(),
    };
    format!("{scheme}://{host}{path}")
}

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Bumped after each of this process's committed changes.
    local: AtomicU64,
    /// The store-wide version last read by the poller.
    remote: AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

const TOKEN_COLS: &str = "name, bot, method, uses, max_uses, expires_at";
const INSTANCE_COLS: &str = "id, bot, generation, pending, locked, join_attributes, created_at, identity_expires_at";

fn token_row(r: &tokio_postgres::Row) -> TokenState {
    TokenState { name: r.get(0), bot: r.get(1), method: r.get(2), uses: r.get(3), max_uses: r.get(4), expires_at: r.get(5) }
}

fn instance_row(r: &tokio_postgres::Row) -> Result<BotInstance, StoreError> {
    let id: String = r.get(0);
    Ok(BotInstance {
        join_attributes: json("bot instance", &id, r.get(5))?,
        id,
        bot: r.get(1),
        generation: r.get(2),
        pending: r.get(3),
        locked: r.get(4),
        created_at: r.get(6),
        identity_expires_at: r.get(7),
    })
}

const RECORD_COLS: &str = "id, bot, generation, pending, locked, join_attributes, created_at, identity_expires_at, last_seen, heartbeat_at, heartbeat";

fn record_row(r: &tokio_postgres::Row) -> Result<InstanceRecord, StoreError> {
    let hb: &str = r.get(10);
    let heartbeat = if hb.is_empty() {
        None
    } else {
        let id: String = r.get(0);
        Some(serde_json::from_str(hb).map_err(|e| corrupt("bot instance", &id, format!("heartbeat: {e}")))?)
    };
    Ok(InstanceRecord { instance: instance_row(r)?, last_seen: r.get(8), heartbeat_at: r.get(9), heartbeat })
}

fn no_instance(id: &str) -> StoreError {
    StoreError::IdentityRejected(format!("bot instance {id} does not exist (deleted, or its bot was)"))
}

fn keypair_row(r: &tokio_postgres::Row) -> KeypairBinding {
    KeypairBinding { token: r.get(0), public_key: r.get(1), sequence: r.get(2), locked: r.get(3), last_attempt: r.get(4) }
}

const KEYPAIR_COLS: &str = "token, public_key, sequence, locked, last_attempt";

/// Bumps the store-wide change version; last statement of a changing transaction.
async fn bump(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("UPDATE store_version SET version = version + 1 WHERE id = 1", &[]).await.map_err(backend)?;
    Ok(())
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and
    /// migrates the database. Errors never contain the password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = Pool::open(url, POOL_SIZE, CONNECT_TIMEOUT).await?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                local: AtomicU64::new(0),
                remote: AtomicU64::new(0),
            }),
        };
        store.migrate().await?;
        store.poll_version().await?;
        let weak = Arc::downgrade(&store.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHANGE_POLL).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = (PgStore { inner }).poll_version().await {
                    tracing::warn!(error = %e, "reading the store change version failed; will retry");
                }
            }
        });
        Ok(store)
    }

    pub(super) async fn conn(&self) -> Result<Conn<'_>, StoreError> {
        self.inner.pool.get().await
    }

    async fn poll_version(&self) -> Result<(), StoreError> {
        let c = self.conn().await?;
        let row = c.query_one("SELECT version FROM store_version WHERE id = 1", &[]).await.map_err(backend)?;
        let v: i64 = row.get(0);
        self.inner.remote.fetch_max(v as u64, Ordering::SeqCst);
        Ok(())
    }

    /// Applies the missing migrations, exactly once across concurrent brokers.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(backend)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS sigil_schema_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(backend)?;
        let version: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM sigil_schema_migrations", &[])
            .await
            .map_err(backend)?
            .get(0);
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::Backend(format!(
                "database schema version {version} is newer than this broker supports ({}); upgrade sigil",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(m).await.map_err(backend)?;
            tx.execute("INSERT INTO sigil_schema_migrations (version) VALUES ($1)", &[&((i + 1) as i32)]).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    /// Counts this process's committed change (after the commit).
    /// Commits a write: bumps the store-wide change version in the same
    /// transaction (other replicas see it within one poll), then this store's own counter.
    async fn commit_write(&self, tx: Transaction<'_>) -> Result<(), StoreError> {
        bump(&tx).await?;
        tx.commit().await.map_err(backend)?;
        self.changed();
        Ok(())
    }

    fn changed(&self) {
        self.inner.local.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs raw SQL (tests set up corrupt rows with it).
    #[cfg(any(test, feature = "test-support"))]
    pub async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        self.conn().await?.batch_execute(sql).await.map_err(backend)
    }

    /// Schema versions applied, oldest first (tests check "exactly once").
    #[cfg(any(test, feature = "test-support"))]
    pub async fn applied_migrations(&self) -> Result<Vec<i32>, StoreError> {
        let rows = self
            .conn()
            .await?
            .query("SELECT version FROM sigil_schema_migrations ORDER BY version", &[])
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

async fn locked_revision(tx: &Transaction<'_>, kind: Kind, name: &str) -> Result<Option<i64>, StoreError> {
    let row = tx
        .query_opt("SELECT revision FROM resources WHERE kind = $1 AND name = $2 FOR UPDATE", &[&kind.as_str(), &name])
        .await
        .map_err(backend)?;
    Ok(row.map(|r| r.get(0)))
}

fn doc_row(kind: Kind, r: &tokio_postgres::Row) -> Result<Doc, StoreError> {
    let name: String = r.get(0);
    Ok(Doc { spec: json(kind.as_str(), &name, r.get(2))?, name, revision: r.get(1) })
}

/// [`Store::create`] inside `tx`.
async fn create_in(tx: &Transaction<'_>, kind: Kind, doc: &Doc, token: Option<&(TokenState, Option<String>)>) -> Result<i64, StoreError> {
    let inserted = tx
        .execute(
            "INSERT INTO resources (kind, name, revision, spec) VALUES ($1, $2, 1, $3) ON CONFLICT DO NOTHING",
            &[&kind.as_str(), &doc.name, &doc.spec.to_string()],
        )
        .await
        .map_err(backend)?;
    if inserted != 1 {
        return Err(StoreError::AlreadyExists { kind: kind.as_str(), name: doc.name.clone() });
    }
    if let Some((t, hash)) = token {
        let hash = hash.clone().unwrap_or_else(|| token_uses::no_secret_hash(&t.name));
        tx.execute(
            "INSERT INTO join_tokens (name, secret_hash, bot, method, uses, max_uses, expires_at) VALUES ($1, $2, $3, $4, 0, $5, $6)",
            &[&t.name, &hash, &t.bot, &t.method, &t.max_uses, &t.expires_at],
        )
        .await
        .map_err(backend)?;
    }
    Ok(1)
}

/// [`Store::update`] inside `tx` (the revision check locks the row).
async fn update_in(tx: &Transaction<'_>, kind: Kind, doc: &Doc, token: Option<&TokenUpdate>) -> Result<i64, StoreError> {
    let current = locked_revision(tx, kind, &doc.name).await?.ok_or_else(|| not_found(kind, &doc.name))?;
    if current != doc.revision {
        return Err(StoreError::Conflict { kind: kind.as_str(), name: doc.name.clone(), expected: doc.revision, current });
    }
    tx.execute(
        "UPDATE resources SET revision = revision + 1, spec = $1 WHERE kind = $2 AND name = $3 AND revision = $4",
        &[&doc.spec.to_string(), &kind.as_str(), &doc.name, &doc.revision],
    )
    .await
    .map_err(backend)?;
    if let Some(u) = token {
        let t = &u.state;
        tx.execute("UPDATE join_tokens SET max_uses = $1, expires_at = $2 WHERE name = $3", &[&t.max_uses, &t.expires_at, &t.name])
            .await
            .map_err(backend)?;
        if u.unbind_keypair {
            tx.execute("DELETE FROM keypair_bindings WHERE token = $1", &[&t.name]).await.map_err(backend)?;
        }
    }
    Ok(current + 1)
}

#[async_trait]
impl Store for PgStore {
    async fn create(&self, kind: Kind, doc: &Doc, token: Option<(&TokenState, Option<&str>)>) -> Result<i64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let token = token.map(|(t, h)| (t.clone(), h.map(str::to_string)));
        let r = create_in(&tx, kind, doc, token.as_ref()).await?;
        self.commit_write(tx).await?;
        Ok(r)
    }

    async fn update(&self, kind: Kind, doc: &Doc, token: Option<&TokenUpdate>) -> Result<i64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let r = update_in(&tx, kind, doc, token).await?;
        self.commit_write(tx).await?;
        Ok(r)
    }

    async fn write_batch(&self, writes: &[BatchWrite]) -> Result<Vec<i64>, StoreError> {
        super::check_batch_size(writes)?;
        let mut c = self.conn().await?;
        // Dropped without commit on the first error: rolled back.
        let tx = c.transaction().await.map_err(backend)?;
        let mut revisions = Vec::with_capacity(writes.len());
        for w in writes {
            revisions.push(match w {
                BatchWrite::Create { kind, doc, token } => create_in(&tx, *kind, doc, token.as_ref()).await?,
                BatchWrite::Update { kind, doc, token } => update_in(&tx, *kind, doc, token.as_ref()).await?,
            });
        }
        self.commit_write(tx).await?;
        Ok(revisions)
    }

    async fn get(&self, kind: Kind, name: &str) -> Result<Doc, StoreError> {
        let c = self.conn().await?;
        // query_typed: one round trip (parse, bind, execute in one message),
        // not a prepare and an execute; the join path's reads are all this way.
        let row = c
            .query_typed_opt(
                "SELECT name, revision, spec FROM resources WHERE kind = $1 AND name = $2",
                &[(&kind.as_str(), Type::TEXT), (&name, Type::TEXT)],
            )
            .await
            .map_err(backend)?;
        row.map(|r| doc_row(kind, &r)).unwrap_or_else(|| Err(not_found(kind, name)))
    }

    async fn list(&self, kind: Kind, after: &str, limit: usize) -> Result<Vec<Doc>, StoreError> {
        let c = self.conn().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                "SELECT name, revision, spec FROM resources WHERE kind = $1 AND name > $2 ORDER BY name LIMIT $3",
                &[&kind.as_str(), &after, &limit],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(|r| doc_row(kind, r)).collect()
    }

    async fn delete(&self, kind: Kind, name: &str, revision: i64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let current = locked_revision(&tx, kind, name).await?.ok_or_else(|| not_found(kind, name))?;
        if revision != 0 && revision != current {
            return Err(StoreError::Conflict { kind: kind.as_str(), name: name.to_string(), expected: revision, current });
        }
        tx.execute("DELETE FROM resources WHERE kind = $1 AND name = $2", &[&kind.as_str(), &name]).await.map_err(backend)?;
        match kind {
            Kind::JoinToken => {
                tx.execute("DELETE FROM join_tokens WHERE name = $1", &[&name]).await.map_err(backend)?;
            }
            Kind::Bot => {
                tx.execute("DELETE FROM bot_instances WHERE bot = $1", &[&name]).await.map_err(backend)?;
                tx.execute("DELETE FROM instance_bindings WHERE bot = $1", &[&name]).await.map_err(backend)?;
                tx.execute(
                    "DELETE FROM resources WHERE kind = $1 AND name IN (SELECT name FROM join_tokens WHERE bot = $2)",
                    &[&Kind::JoinToken.as_str(), &name],
                )
                .await
                .map_err(backend)?;
                tx.execute("DELETE FROM join_tokens WHERE bot = $1", &[&name]).await.map_err(backend)?;
            }
            _ => {}
        }
        self.commit_write(tx).await
    }

    async fn token_state(&self, name: &str) -> Result<TokenState, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_typed_opt(&format!("SELECT {TOKEN_COLS} FROM join_tokens WHERE name = $1"), &[(&name, Type::TEXT)])
            .await
            .map_err(backend)?;
        row.map(|r| token_row(&r)).ok_or_else(|| not_found(Kind::JoinToken, name))
    }

    async fn token_record(&self, key: TokenKey<'_>) -> Result<Option<TokenRecord>, StoreError> {
        let (sql, value) = match key {
            TokenKey::Name(n) => (format!("SELECT {TOKEN_COLS}, secret_hash FROM join_tokens WHERE name = $1"), n),
            TokenKey::SecretHash(h) => (format!("SELECT {TOKEN_COLS}, secret_hash FROM join_tokens WHERE secret_hash = $1"), h),
        };
        let c = self.conn().await?;
        let row = c.query_typed_opt(&sql, &[(&value, Type::TEXT)]).await.map_err(backend)?;
        Ok(row.map(|r| TokenRecord { state: token_row(&r), secret_hash: r.get(6) }))
    }

    async fn count_token_use(&self, expected: &TokenRecord) -> Result<i64, StoreError> {
        // The conditional count and the change-version bump as one statement
        // in its own implicit transaction: one round trip instead of six
        // (BEGIN, prepare + execute twice, COMMIT). The bump runs only if the
        // count did (`EXISTS`), as a rolled back transaction would have it.
        let c = self.conn().await?;
        let t = expected;
        let row = c.query_typed_opt(
            "WITH counted AS (
                 UPDATE join_tokens SET uses = uses + 1
                 WHERE name = $1 AND secret_hash = $2 AND max_uses = $3 AND expires_at = $4 AND uses < $3 RETURNING uses),
             bumped AS (UPDATE store_version SET version = version + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM counted))
             SELECT uses FROM counted",
            &[
                (&t.state.name, Type::TEXT),
                (&t.secret_hash, Type::TEXT),
                (&t.state.max_uses, Type::INT8),
                (&t.state.expires_at, Type::INT8),
            ],
        )
        .await
        .map_err(backend)?;
        let uses = row.map(|r| r.get(0)).ok_or_else(|| changed("join token", &t.state.name))?;
        self.changed();
        Ok(uses)
    }

    async fn create_instance(&self, inst: &BotInstance) -> Result<(), StoreError> {
        // The insert and the change-version bump as one statement in its own
        // implicit transaction (one round trip): a failed insert (duplicate
        // id) fails the whole statement, bump included.
        let c = self.conn().await?;
        let attrs = inst.join_attributes.to_string();
        c.query_typed(
            "WITH inserted AS (
                 INSERT INTO bot_instances (id, bot, generation, pending, locked, join_attributes, created_at, last_seen, identity_expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) RETURNING 1)
             UPDATE store_version SET version = version + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM inserted)",
            &[
                (&inst.id, Type::TEXT),
                (&inst.bot, Type::TEXT),
                (&inst.generation, Type::INT8),
                (&inst.pending, Type::INT8),
                (&inst.locked, Type::BOOL),
                (&attrs, Type::TEXT),
                (&inst.created_at, Type::INT8),
                (&inst.identity_expires_at, Type::INT8),
            ],
        )
        .await
        .map_err(backend)?;
        self.changed();
        Ok(())
    }

    async fn create_bound_instance(&self, inst: &BotInstance, key: &str, rebind: bool) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // Under READ COMMITTED a concurrent insert of the same key waits for
        // the first to commit, then finds the conflict: exactly one lands.
        let sql = if rebind {
            "INSERT INTO instance_bindings (key, instance, bot, bound_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET instance = EXCLUDED.instance, bot = EXCLUDED.bot, bound_at = EXCLUDED.bound_at"
        } else {
            "INSERT INTO instance_bindings (key, instance, bot, bound_at) VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING"
        };
        let n = tx.execute(sql, &[&key, &inst.id, &inst.bot, &inst.created_at]).await.map_err(backend)?;
        if n != 1 {
            return Err(StoreError::AlreadyExists { kind: "instance_binding", name: key.to_string() });
        }
        tx.execute(
            "INSERT INTO bot_instances (id, bot, generation, pending, locked, join_attributes, created_at, last_seen, identity_expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
            &[&inst.id, &inst.bot, &inst.generation, &inst.pending, &inst.locked, &inst.join_attributes.to_string(), &inst.created_at, &inst.identity_expires_at],
        )
        .await
        .map_err(backend)?;
        self.commit_write(tx).await
    }

    async fn instance_binding(&self, key: &str) -> Result<Option<InstanceBinding>, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_typed_opt("SELECT key, instance, bot, bound_at FROM instance_bindings WHERE key = $1", &[(&key, Type::TEXT)])
            .await
            .map_err(backend)?;
        Ok(row.map(|r| InstanceBinding { key: r.get(0), instance: r.get(1), bot: r.get(2), bound_at: r.get(3) }))
    }

    async fn list_instance_bindings(&self, bot: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<InstanceBinding>, StoreError> {
        let c = self.conn().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                "SELECT key, instance, bot, bound_at FROM instance_bindings
                 WHERE ($1 = '' OR bot = $1) AND substr(key, 1, length($2)) = $2 AND key COLLATE \"C\" > $3
                 ORDER BY key COLLATE \"C\" LIMIT $4",
                &[&bot, &prefix, &after, &limit],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| InstanceBinding { key: r.get(0), instance: r.get(1), bot: r.get(2), bound_at: r.get(3) }).collect())
    }

    async fn delete_instance_binding(&self, key: &str) -> Result<InstanceBinding, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt("DELETE FROM instance_bindings WHERE key = $1 RETURNING key, instance, bot, bound_at", &[&key])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound { kind: "instance_binding", name: key.to_string() })?;
        Ok(InstanceBinding { key: row.get(0), instance: row.get(1), bot: row.get(2), bound_at: row.get(3) })
    }

    async fn instance(&self, id: &str) -> Result<BotInstance, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_typed_opt(&format!("SELECT {INSTANCE_COLS} FROM bot_instances WHERE id = $1"), &[(&id, Type::TEXT)])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::IdentityRejected(format!("bot instance {id} does not exist (deleted, or its bot was)")))?;
        instance_row(&row)
    }

    async fn caller_records(&self, id: &str, bot: &str) -> Result<CallerRecords, StoreError> {
        let mut c = self.conn().await?;
        // One snapshot for the three reads.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)?;
        // query_typed: one round trip per read instead of two.
        let instance = tx
            .query_typed_opt(&format!("SELECT {INSTANCE_COLS} FROM bot_instances WHERE id = $1"), &[(&id, Type::TEXT)])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::IdentityRejected(format!("bot instance {id} does not exist (deleted, or its bot was)")))?;
        let instance = instance_row(&instance)?;
        let raw = |r: &tokio_postgres::Row| RawDoc { name: r.get(0), revision: r.get(1), spec: r.get(2) };
        let bot = tx
            .query_typed_opt(
                "SELECT name, revision, spec FROM resources WHERE kind = $1 AND name = $2",
                &[(&Kind::Bot.as_str(), Type::TEXT), (&bot, Type::TEXT)],
            )
            .await
            .map_err(backend)?
            .map(|r| raw(&r));
        let mut roles = Vec::new();
        if let Some(b) = &bot {
            let names = sigil_core::domain::bot::role_names(&b.spec).map_err(|e| corrupt("bot", &b.name, e))?;
            if !names.is_empty() {
                let rows = tx
                    .query_typed(
                        "SELECT name, revision, spec FROM resources WHERE kind = $1 AND name = ANY($2)",
                        &[(&Kind::Role.as_str(), Type::TEXT), (&names, Type::TEXT_ARRAY)],
                    )
                    .await
                    .map_err(backend)?;
                let found: Vec<RawDoc> = rows.iter().map(raw).collect();
                for n in &names {
                    if let Some(d) = found.iter().find(|d| &d.name == n) {
                        roles.push(d.clone());
                    }
                }
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(CallerRecords { instance, bot, roles })
    }

    async fn generation_state(&self, id: &str) -> Result<Option<GenerationState>, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_typed_opt("SELECT id, generation, pending, pending_key, locked FROM bot_instances WHERE id = $1", &[(&id, Type::TEXT)])
            .await
            .map_err(backend)?;
        Ok(row.map(|r| GenerationState { id: r.get(0), generation: r.get(1), pending: r.get(2), pending_key: r.get(3), locked: r.get(4) }))
    }

    async fn swap_generation(&self, e: &GenerationState, n: &GenerationState) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // A concurrent swap of the row waits for this one's commit, then
        // re-checks the WHERE on the committed row and changes nothing.
        let swapped = tx
            .execute(
                "UPDATE bot_instances SET generation = $1, pending = $2, pending_key = $3, locked = $4
                 WHERE id = $5 AND generation = $6 AND pending = $7 AND pending_key = $8 AND locked = $9",
                &[&n.generation, &n.pending, &n.pending_key, &n.locked, &e.id, &e.generation, &e.pending, &e.pending_key, &e.locked],
            )
            .await
            .map_err(backend)?;
        if swapped != 1 {
            return Err(changed("bot instance", &e.id));
        }
        self.commit_write(tx).await
    }

    // Activity writes do not bump the store version: nothing a cached caller
    // depends on changes, and a fleet's heartbeats must not empty every
    // replica's caller cache.
    async fn touch_instance(&self, id: &str, now: i64, identity_expires_at: i64) -> Result<(), StoreError> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE bot_instances SET last_seen = GREATEST(last_seen, $1), identity_expires_at = GREATEST(identity_expires_at, $3)
                 WHERE id = $2",
                &[&now, &id, &identity_expires_at],
            )
            .await
            .map_err(backend)?;
        if n == 0 {
            return Err(no_instance(id));
        }
        Ok(())
    }

    async fn record_heartbeat(&self, id: &str, heartbeat: &InstanceHeartbeat, now: i64, min_interval: i64) -> Result<bool, StoreError> {
        let text = serde_json::to_string(heartbeat).map_err(|e| StoreError::Backend(e.to_string()))?;
        let c = self.conn().await?;
        // One conditional statement: two replicas cannot both accept.
        let n = c
            .execute(
                "UPDATE bot_instances SET heartbeat = $1, heartbeat_at = $2, last_seen = GREATEST(last_seen, $2)
                 WHERE id = $3 AND (heartbeat_at = 0 OR heartbeat_at <= $2::BIGINT - $4::BIGINT)",
                &[&text, &now, &id, &min_interval],
            )
            .await
            .map_err(backend)?;
        if n == 1 {
            return Ok(true);
        }
        let exists = c.query_opt("SELECT 1 FROM bot_instances WHERE id = $1", &[&id]).await.map_err(backend)?;
        exists.map(|_| false).ok_or_else(|| no_instance(id))
    }

    async fn list_instances(&self, bot: &str, seen_since: i64, after: &str, limit: usize) -> Result<Vec<InstanceRecord>, StoreError> {
        let c = self.conn().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                &format!(
                    "SELECT {RECORD_COLS} FROM bot_instances WHERE ($1 = '' OR bot = $1) AND last_seen >= $2
                     AND id COLLATE \"C\" > $3 ORDER BY id COLLATE \"C\" LIMIT $4"
                ),
                &[&bot, &seen_since, &after, &limit],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(record_row).collect()
    }

    async fn instance_record(&self, id: &str) -> Result<InstanceRecord, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(&format!("SELECT {RECORD_COLS} FROM bot_instances WHERE id = $1"), &[&id])
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound { kind: "bot_instance", name: id.to_string() })?;
        record_row(&row)
    }

    async fn delete_expired_instances(&self, seen_before: i64, now: i64, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // SKIP LOCKED: replicas sweeping at once take different rows instead
        // of waiting on each other; a row a renewal is updating is left for
        // the next sweep (the renewal moves it out of reach anyway).
        let n = tx
            .execute(
                "DELETE FROM bot_instances WHERE id IN (SELECT id FROM bot_instances
                    WHERE last_seen < $1 AND identity_expires_at <= $2 ORDER BY last_seen LIMIT $3 FOR UPDATE SKIP LOCKED)",
                &[&seen_before, &now, &limit],
            )
            .await
            .map_err(backend)?;
        if n == 0 {
            tx.commit().await.map_err(backend)?;
            return Ok(0);
        }
        self.commit_write(tx).await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn issuance_events(&self, key: IssuanceKey<'_>, expires_after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let (field, value) = match key {
            IssuanceKey::Serial(s) => ("serial", s),
            IssuanceKey::Instance(i) => ("instance", i),
        };
        // The LIKE narrows the rows before their JSON is parsed (compact
        // serde_json text, as every event is written).
        let escaped = value.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let like = format!("%\"{field}\":\"{escaped}\"%");
        let kinds: Vec<&str> = ISSUANCE_KINDS.to_vec();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT id, time, kind, actor, resource, outcome, detail FROM audit_events
                     WHERE kind = ANY($1) AND outcome = 'ok' AND detail LIKE $2
                       AND (detail::jsonb)->>'{field}' = $3 AND ((detail::jsonb)->>'expires_at')::bigint > $4
                     ORDER BY id DESC LIMIT $5"
                ),
                &[&kinds, &like, &value, &expires_after, &limit],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(audit_row).collect()
    }

    async fn insert_revocations(&self, revocations: &[Revocation], now: i64) -> Result<usize, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // One writer at a time across replicas: sequences are then drawn in
        // commit order, so a reader past sequence n has seen all before it.
        tx.batch_execute("LOCK TABLE revocations IN EXCLUSIVE MODE").await.map_err(backend)?;
        let mut n = 0;
        for r in revocations {
            n += tx
                .execute(
                    "INSERT INTO revocations (ca_key, serial, not_after, revoked_at, reason, actor) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (ca_key, serial) DO NOTHING",
                    &[&r.ca_key, &r.serial, &r.not_after, &r.revoked_at, &r.reason, &r.actor],
                )
                .await
                .map_err(backend)?;
        }
        tx.execute("DELETE FROM revocations WHERE not_after < $1", &[&now.saturating_sub(86_400)]).await.map_err(backend)?;
        if n > 0 {
            self.commit_write(tx).await?;
        } else {
            tx.commit().await.map_err(backend)?;
        }
        Ok(n as usize)
    }

    async fn list_revocations(&self, after_seq: i64, not_after_after: i64, limit: usize) -> Result<Vec<Revocation>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT seq, serial, ca_key, not_after, revoked_at, reason, actor FROM revocations
                 WHERE seq > $1 AND not_after > $2 ORDER BY seq LIMIT $3",
                &[&after_seq, &not_after_after, &limit],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| Revocation {
                seq: r.get(0),
                serial: r.get(1),
                ca_key: r.get(2),
                not_after: r.get(3),
                revoked_at: r.get(4),
                reason: r.get(5),
                actor: r.get(6),
            })
            .collect())
    }

    async fn list_ca_keys(&self) -> Result<Vec<CaKeyRecord>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, purpose, alg, sealed_key, cert_der, created_at, not_after, state, key_ref, activated_at, deactivated_at FROM ca_keys ORDER BY created_at, id",
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| CaKeyRecord {
                id: r.get(0),
                purpose: r.get(1),
                alg: r.get(2),
                sealed_key: r.get(3),
                cert_der: r.get(4),
                created_at: r.get(5),
                not_after: r.get(6),
                state: r.get(7),
                key_ref: r.get(8),
                activated_at: r.get(9),
                deactivated_at: r.get(10),
            })
            .collect())
    }

    async fn insert_ca_key(&self, k: &CaKeyRecord) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.execute(
            "INSERT INTO ca_keys (id, purpose, alg, sealed_key, cert_der, created_at, not_after, state, key_ref, activated_at, deactivated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[&k.id, &k.purpose, &k.alg, &k.sealed_key, &k.cert_der, &k.created_at, &k.not_after, &k.state, &k.key_ref, &k.activated_at, &k.deactivated_at],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                StoreError::AlreadyExists { kind: "ca key", name: format!("{} ({})", k.id, k.purpose) }
            } else {
                backend(e)
            }
        })?;
        self.commit_write(tx).await
    }

    async fn change_ca_key(&self, change: &CaKeyChange, now: i64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        for st in super::ca_keys_sql::steps(change) {
            let n = if st.with_now { tx.execute(st.sql, &[&st.id, &now]).await } else { tx.execute(st.sql, &[&st.id]).await };
            let n = n.map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    changed("ca key", st.id)
                } else {
                    backend(e)
                }
            })?;
            if n != 1 {
                return Err(changed("ca key", st.id));
            }
        }
        self.commit_write(tx).await
    }

    fn change_counter(&self) -> u64 {
        self.inner.local.load(Ordering::SeqCst) + self.inner.remote.load(Ordering::SeqCst)
    }

    async fn insert_challenge(&self, challenge: &ChallengeRecord, limits: &ChallengeLimits, now: i64) -> Result<(), StoreError> {
        super::pg_challenges::insert(&mut self.conn().await?, challenge, limits, now).await
    }

    async fn take_challenge(&self, id: &str, now: i64) -> Result<Option<ChallengeRecord>, StoreError> {
        super::pg_challenges::take(&self.conn().await?, id, now).await
    }

    async fn append_audit_batch(&self, events: &[AuditRecord]) -> Result<Vec<i64>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // One statement, one round trip, in its own implicit transaction:
        // the audit lock (joined in, so it is taken before the first id is
        // drawn, and held until the commit) and every event as arrays. The lock
        // serializes every replica's audit commits, so each round trip taken
        // while holding it would be taken from all of them.
        let n = events.len();
        let mut times = Vec::with_capacity(n);
        let (mut kinds, mut actors, mut resources, mut outcomes, mut details) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for e in events {
            times.push(e.time);
            kinds.push(e.kind.as_str());
            actors.push(e.actor.as_str());
            resources.push(e.resource.as_str());
            outcomes.push(e.outcome.as_str());
            details.push(e.detail.to_string());
        }
        let c = self.conn().await?;
        let rows = c
            .query_typed(
                &format!(
                    "WITH audit_lock AS (SELECT pg_advisory_xact_lock({AUDIT_LOCK}))
                     INSERT INTO audit_events (time, kind, actor, resource, outcome, detail)
                     SELECT e.time, e.kind, e.actor, e.resource, e.outcome, e.detail
                     FROM audit_lock, unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                          WITH ORDINALITY AS e(time, kind, actor, resource, outcome, detail, n)
                     ORDER BY e.n RETURNING id"
                ),
                &[
                    (&times, Type::INT8_ARRAY),
                    (&kinds, Type::TEXT_ARRAY),
                    (&actors, Type::TEXT_ARRAY),
                    (&resources, Type::TEXT_ARRAY),
                    (&outcomes, Type::TEXT_ARRAY),
                    (&details, Type::TEXT_ARRAY),
                ],
            )
            .await
            .map_err(backend)?;
        // Ids are drawn in the SELECT's order (ORDER BY n), under the lock:
        // ascending ids are the events' ids in order.
        let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        ids.sort_unstable();
        if ids.len() != n {
            return Err(StoreError::Backend(format!("audit insert returned {} ids for {n} events", ids.len())));
        }
        Ok(ids)
    }

    async fn list_audit(&self, after_id: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let c = self.conn().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                "SELECT id, time, kind, actor, resource, outcome, detail FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after_id, &limit],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(audit_row).collect()
    }

    async fn prune_audit(&self, keep: u64, older_than: i64) -> Result<u64, StoreError> {
        // As in SQLite, both steps walk the id order only as far as the rows
        // they delete: events are appended in time order.
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let first_kept: Option<i64> = tx
            .query_opt("SELECT id FROM audit_events WHERE time >= $1 ORDER BY id LIMIT 1", &[&older_than])
            .await
            .map_err(backend)?
            .map(|r| r.get(0));
        let mut n = match first_kept {
            Some(id) => tx.execute("DELETE FROM audit_events WHERE id < $1", &[&id]).await,
            None => tx.execute("DELETE FROM audit_events", &[]).await,
        }
        .map_err(backend)?;
        if keep > 0 {
            let offset = i64::try_from(keep - 1).unwrap_or(i64::MAX);
            n += tx
                .execute(
                    "DELETE FROM audit_events WHERE id < (SELECT id FROM audit_events ORDER BY id DESC OFFSET $1 LIMIT 1)",
                    &[&offset],
                )
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }

    async fn keypair_binding(&self, token: &str) -> Result<Option<KeypairBinding>, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(&format!("SELECT {KEYPAIR_COLS} FROM keypair_bindings WHERE token = $1"), &[&token])
            .await
            .map_err(backend)?;
        Ok(row.map(|r| keypair_row(&r)))
    }

    async fn insert_keypair_binding(&self, b: &KeypairBinding, spend_secret: Option<(&str, &str)>, now: i64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        if let Some((expected, marker)) = spend_secret {
            let spent = tx
                .execute("UPDATE join_tokens SET secret_hash = $3 WHERE name = $1 AND secret_hash = $2", &[&b.token, &expected, &marker])
                .await
                .map_err(backend)?;
            if spent != 1 {
                return Err(changed("join token", &b.token));
            }
        }
        let inserted = tx
            .execute(
                "INSERT INTO keypair_bindings (token, public_key, sequence, locked, updated_at, last_attempt)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token) DO NOTHING",
                &[&b.token, &b.public_key, &b.sequence, &b.locked, &now, &b.last_attempt],
            )
            .await
            .map_err(backend)?;
        if inserted != 1 {
            return Err(changed("keypair binding", &b.token));
        }
        self.commit_write(tx).await
    }

    async fn swap_keypair(&self, e: &KeypairBinding, n: &KeypairBinding, count_use_of: Option<&TokenRecord>, now: i64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let swapped = tx
            .execute(
                "UPDATE keypair_bindings SET public_key = $1, sequence = $2, locked = $3, last_attempt = $4, updated_at = $5
                 WHERE token = $6 AND public_key = $7 AND sequence = $8 AND locked = $9 AND last_attempt = $10",
                &[&n.public_key, &n.sequence, &n.locked, &n.last_attempt, &now, &e.token, &e.public_key, &e.sequence, &e.locked, &e.last_attempt],
            )
            .await
            .map_err(backend)?;
        if swapped != 1 {
            return Err(changed("keypair binding", &e.token));
        }
        if let Some(t) = count_use_of {
            count_use(&tx, t).await?;
        }
        self.commit_write(tx).await
    }
}

/// A token use counted inside a transaction ([`Store::swap_keypair`]; the
/// same statement as [`Store::count_token_use`]'s): a concurrent count
/// of the row waits for this one's commit and re-checks the WHERE. The new count.
async fn count_use(tx: &Transaction<'_>, t: &TokenRecord) -> Result<i64, StoreError> {
    let row = tx
        .query_opt(
            "UPDATE join_tokens SET uses = uses + 1
             WHERE name = $1 AND secret_hash = $2 AND max_uses = $3 AND expires_at = $4 AND uses < $3 RETURNING uses",
            &[&t.state.name, &t.secret_hash, &t.state.max_uses, &t.state.expires_at],
        )
        .await
        .map_err(backend)?;
    row.map(|r| r.get(0)).ok_or_else(|| changed("join token", &t.state.name))
}

#[cfg(test)]
pub(crate) mod conformance_tests {
    use super::PgStore;
    use crate::store::conformance::{RawSql, Subject};
    use crate::store::pg_harness;
    use std::sync::Arc;

    struct Raw(PgStore);

    #[async_trait::async_trait]
    impl RawSql for Raw {
        async fn exec(&self, sql: &str) {
            self.0.execute_raw(sql).await.unwrap();
        }
    }

    /// The conformance subject for a store at `url` (plain here, TLS in `pg_tls`).
    pub(crate) async fn subject_at(url: &str) -> Subject {
        let s = PgStore::connect(url).await.unwrap();
        Subject { store: Arc::new(s.clone()), raw: Arc::new(Raw(s)) }
    }

    async fn fresh() -> Subject {
        subject_at(&pg_harness::shared().fresh_database().await).await
    }

    crate::store_conformance_tests!(fresh);
}

/// An audit event from a row of `SELECT id, time, kind, actor, resource, outcome, detail`.
fn audit_row(r: &tokio_postgres::Row) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: r.get(0),
        time: r.get(1),
        kind: r.get(2),
        actor: r.get(3),
        resource: r.get(4),
        outcome: r.get(5),
        detail: json("audit event", &r.get::<_, i64>(0).to_string(), r.get(6))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pg_harness;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn eight_brokers_starting_at_once_apply_each_migration_exactly_once() {
        let url = pg_harness::shared().fresh_database().await;
        let starts: Vec<_> = (0..8).map(|_| tokio::spawn({
            let url = url.clone();
            async move { PgStore::connect(&url).await }
        })).collect();
        let mut stores = Vec::new();
        for s in starts {
            stores.push(s.await.unwrap().unwrap());
        }
        let want: Vec<i32> = (1..=MIGRATIONS.len() as i32).collect();
        assert_eq!(stores[0].applied_migrations().await.unwrap(), want);
        // And a later start changes nothing.
        let again = PgStore::connect(&url).await.unwrap();
        assert_eq!(again.applied_migrations().await.unwrap(), want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_change_through_one_replica_moves_the_other_replicas_change_counter_within_the_poll_bound() {
        let url = pg_harness::shared().fresh_database().await;
        let (a, b) = (PgStore::connect(&url).await.unwrap(), PgStore::connect(&url).await.unwrap());
        let before = b.change_counter();
        let doc = Doc { name: "r".into(), revision: 0, spec: serde_json::json!({}) };
        a.create(Kind::Role, &doc, None).await.unwrap();
        let written = std::time::Instant::now();
        // Bounded wait: the bound is CHANGE_POLL; allow generous slack for a busy CI machine.
        while b.change_counter() == before {
            assert!(written.elapsed() < CHANGE_POLL * 20, "replica B never saw replica A's change");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(b.get(Kind::Role, "r").await.unwrap().revision, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_audit_batches_through_two_replicas_get_contiguous_ids_in_event_order_and_none_is_lost() {
        // One statement per batch (lock, ids, rows): ids must still come back
        // in the events' order, a batch's ids contiguous (the lock is held
        // while they are drawn), and every event listed once.
        let url = pg_harness::shared().fresh_database().await;
        let (a, b) = (PgStore::connect(&url).await.unwrap(), PgStore::connect(&url).await.unwrap());
        let tasks: Vec<_> = (0..40)
            .map(|batch| {
                let s = if batch % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    let events: Vec<AuditRecord> = (0..5)
                        .map(|i| crate::audit::event(batch, "svid.x509", &format!("b{batch}"), "r", "ok", serde_json::json!({"i": i})))
                        .collect();
                    (batch, s.append_audit_batch(&events).await.unwrap())
                })
            })
            .collect();
        let mut expected = std::collections::HashMap::new();
        for t in tasks {
            let (batch, ids) = t.await.unwrap();
            assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "batch {batch}: ids not contiguous: {ids:?}");
            for (i, id) in ids.into_iter().enumerate() {
                expected.insert(id, (format!("b{batch}"), serde_json::json!({"i": i})));
            }
        }
        let listed = a.list_audit(0, 1000).await.unwrap();
        assert_eq!(listed.len(), 200);
        for e in &listed {
            assert_eq!(expected.get(&e.id), Some(&(e.actor.clone(), e.detail.clone())), "event {}", e.id);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_redemptions_of_one_single_use_token_spread_over_two_stores_succeed_once() {
        let url = pg_harness::shared().fresh_database().await;
        let (a, b) = (PgStore::connect(&url).await.unwrap(), PgStore::connect(&url).await.unwrap());
        let state = TokenState { name: "t".into(), bot: "b".into(), method: "token".into(), uses: 0, max_uses: 1, expires_at: i64::MAX };
        let doc = Doc { name: "t".into(), revision: 0, spec: serde_json::json!({}) };
        a.create(Kind::JoinToken, &doc, Some((&state, Some("h")))).await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { s.consume_token("h", 1).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e, StoreError::TokenRejected(TokenRejection::UsedUp)),
            }
        }
        assert_eq!(ok, 1);
    }

    async fn stored_version(s: &PgStore) -> i64 {
        s.conn().await.unwrap().query_one("SELECT version FROM store_version WHERE id = 1", &[]).await.unwrap().get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_one_statement_token_use_or_new_instance_bumps_the_change_version_only_when_it_writes() {
        // count_token_use and create_instance are one statement each (write +
        // bump): the bump must land with the write and never without it.
        let url = pg_harness::shared().fresh_database().await;
        let (a, b) = (PgStore::connect(&url).await.unwrap(), PgStore::connect(&url).await.unwrap());
        let state = TokenState { name: "t".into(), bot: "b".into(), method: "token".into(), uses: 0, max_uses: 2, expires_at: i64::MAX };
        let doc = Doc { name: "t".into(), revision: 0, spec: serde_json::json!({}) };
        a.create(Kind::JoinToken, &doc, Some((&state, Some("h")))).await.unwrap();
        let v0 = stored_version(&a).await;
        let rec = a.token_record(TokenKey::Name("t")).await.unwrap().unwrap();
        assert_eq!(a.count_token_use(&rec).await.unwrap(), 1);
        assert_eq!(stored_version(&a).await, v0 + 1);
        // A stale expectation counts nothing and bumps nothing.
        let stale = TokenRecord { state: TokenState { max_uses: 5, uses: 1, ..rec.state.clone() }, ..rec.clone() };
        assert!(matches!(b.count_token_use(&stale).await, Err(StoreError::Changed { .. })));
        assert_eq!(stored_version(&a).await, v0 + 1);
        assert_eq!(b.token_state("t").await.unwrap().uses, 1);
        let inst = BotInstance {
            id: "i1".into(),
            bot: "b".into(),
            generation: 1,
            pending: 1,
            locked: false,
            join_attributes: serde_json::json!({"join.method": "token"}),
            created_at: 7,
            identity_expires_at: 3600,
        };
        a.create_instance(&inst).await.unwrap();
        assert_eq!(stored_version(&a).await, v0 + 2);
        // A duplicate id fails the whole statement, bump included.
        assert!(b.create_instance(&inst).await.is_err());
        assert_eq!(stored_version(&a).await, v0 + 2);
        assert_eq!(b.instance("i1").await.unwrap(), inst);
    }

    #[test]
    fn the_password_never_appears_in_a_redacted_url() {
        assert_eq!(redact_url("postgres://sigil:s3cret@db.example:5432/sigil?sslmode=disable&password=x"), "postgres://sigil@db.example:5432/sigil");
        assert_eq!(redact_url("postgresql://db/x"), "postgresql://db/x");
        assert!(!redact_url("postgres://u:p@h").contains(":p@"));
    }

    #[tokio::test]
    async fn tls_parameters_that_cannot_be_honoured_are_refused_before_connecting() {
        for (query, says) in [
            ("sslmode=verify-ca", "needs sslrootcert"),
            ("sslmode=allow", "is not one of"),
            ("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", "sslrootcert /nonexistent/ca.pem"),
            ("sslmode=require&sslcert=/c.pem", "go together"),
        ] {
            let Err(e) = PgStore::connect(&format!("postgres://u:pw@db.example:1/db?{query}")).await else {
                panic!("{query} accepted")
            };
            let e = e.to_string();
            assert!(e.contains(says) && !e.contains("cannot connect") && !e.contains("pw"), "{query}: {e}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_clear_error_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = PgStore::connect(&format!("postgres://u:hunter2@127.0.0.1:{port}/db")).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cannot connect to PostgreSQL"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
