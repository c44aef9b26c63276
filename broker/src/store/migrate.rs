//! `sigil store migrate`: copies a single-node broker's SQLite store into a
//! PostgreSQL database, row for row, and proves the copy.
//!
//! - The source is opened read-only and read in one read transaction: a
//!   consistent snapshot, never changed. Writes a still-running broker makes
//!   after that snapshot are not copied (stop it first, or migrate from a
//!   `sigil store backup`).
//! - The target is migrated to the current schema, then everything happens in
//!   one PostgreSQL transaction that holds every table locked: a non-empty
//!   target is refused unless `replace` (then emptied in that transaction),
//!   every table is copied (`COPY ... BINARY`, ids, revisions, generations,
//!   token uses and secret hashes as stored; CA keys stay sealed), the audit id
//!   sequence is moved past the copied ids, and per-table counts and checks are
//!   compared with the source's. Any difference rolls everything back.
//! - Memory is bounded: rows travel in batches of [`BATCH`] over a channel of
//!   [`IN_FLIGHT`] batches.

use super::postgres::{redact_url, PgStore};
use super::sqlite::MIGRATIONS as SQLITE_MIGRATIONS;
use super::sqlite_backup::{self, Counts, TABLES};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// Rows per batch read from SQLite.
pub const BATCH: usize = 1000;
/// Batches buffered between the SQLite reader and the PostgreSQL writer.
pub const IN_FLIGHT: usize = 4;

/// Migration failures. Nothing is committed to the target when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The SQLite source cannot be read, or is not a current Sigil store.
    #[error("source {path}: {why}")]
    Source {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The PostgreSQL target failed (the URL in it has no password).
    #[error("target {url}: {why}")]
    Target {
        /// The target URL without its password.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// The target already holds data.
    #[error(
        "target {url} is not empty ({counts}): refusing to mix two stores; pass --replace to delete everything in it \
         first (in the same transaction as the copy)"
    )]
    NotEmpty {
        /// The target URL without its password.
        url: String,
        /// What it holds.
        counts: Counts,
    },
    /// The copy does not match the source: rolled back.
    #[error("verification failed, nothing committed: {table} {what}: source {source_value}, target {target_value}")]
    Mismatch {
        /// The table.
        table: &'static str,
        /// What was compared.
        what: &'static str,
        /// The source's figure.
        source_value: i64,
        /// The target's figure.
        target_value: i64,
    },
}

/// A table's figures: row count and one check (see [`Spec::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Per table, in [`TABLES`] order: (table, rows, check label, check value).
    pub tables: Vec<(&'static str, i64, &'static str, i64)>,
}

impl Figures {
    /// Row counts only.
    pub fn counts(&self) -> Counts {
        Counts(self.tables.iter().map(|(t, n, _, _)| (*t, *n)).collect())
    }

    /// The first difference, if any.
    pub fn compare(&self, target: &Figures) -> Result<(), MigrateError> {
        for ((t, n, what, v), (_, tn, _, tv)) in self.tables.iter().zip(&target.tables) {
            if n != tn {
                return Err(MigrateError::Mismatch { table: t, what: "rows", source_value: *n, target_value: *tn });
            }
            if v != tv {
                return Err(MigrateError::Mismatch { table: t, what, source_value: *v, target_value: *tv });
            }
        }
        if self.tables.len() != target.tables.len() {
            return Err(MigrateError::Mismatch {
                table: "(all)",
                what: "tables",
                source_value: self.tables.len() as i64,
                target_value: target.tables.len() as i64,
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.tables.iter().map(|(t, n, what, v)| format!("{t}={n} ({what} {v})")).collect();
        f.write_str(&parts.join(" "))
    }
}

/// What a migration copied and checked.
#[derive(Debug, Clone)]
pub struct Report {
    /// The source's figures (equal to the target's: checked).
    pub source: Figures,
    /// The target's figures after the copy, read in the copying transaction.
    pub target: Figures,
    /// Where the target's audit id sequence continues from (its last value).
    pub audit_sequence: i64,
    /// Rows deleted from the target first (`replace`).
    pub replaced: Option<Counts>,
    /// Instances of the `admin` bot left out of the target because the source
    /// was last served by dev mode (see [`migrate`]).
    pub dev_admin_instances_dropped: u64,
}

/// Whether the store at `source` was last served by a production broker:
/// its directory's `mode` file says so. Dev mode, a version before that file
/// existed, or a copy elsewhere (a backup) count as dev, as at a broker start.
fn source_is_production(source: &Path) -> bool {
    let dir = source.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::read_to_string(dir.join("mode")).map(|m| m.trim() == "production").unwrap_or(false)
}

#[derive(Clone, Copy)]
enum Col {
    Int,
    Text,
    Blob,
    OptBlob,
    Bool,
}

impl Col {
    fn pg(self) -> Type {
        match self {
            Col::Int => Type::INT8,
            Col::Text => Type::TEXT,
            Col::Blob | Col::OptBlob => Type::BYTEA,
            Col::Bool => Type::BOOL,
        }
    }
}

enum Val {
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    OptBlob(Option<Vec<u8>>),
    Bool(bool),
}

impl Val {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Val::Int(v) => v,
            Val::Text(v) => v,
            Val::Blob(v) => v,
            Val::OptBlob(v) => v,
            Val::Bool(v) => v,
        }
    }
}

struct Spec {
    table: &'static str,
    cols: &'static [(&'static str, Col)],
    order: &'static str,
    /// (label, SQL aggregate valid in SQLite and PostgreSQL, as BIGINT).
    check: (&'static str, &'static str),
}

use Col::{Blob, Bool, Int, OptBlob, Text};

/// Copy order: `keypair_bindings` after `join_tokens` (its foreign key).
const SPECS: &[Spec] = &[
    Spec {
        table: "resources",
        cols: &[("kind", Text), ("name", Text), ("revision", Int), ("spec", Text)],
        order: "kind, name",
        check: ("revision sum", "CAST(COALESCE(SUM(revision), 0) AS BIGINT)"),
    },
    Spec {
        table: "join_tokens",
        cols: &[
            ("name", Text),
            ("secret_hash", Text),
            ("bot", Text),
            ("method", Text),
            ("uses", Int),
            ("max_uses", Int),
            ("expires_at", Int),
        ],
        order: "name",
        check: ("uses sum", "CAST(COALESCE(SUM(uses), 0) AS BIGINT)"),
    },
    Spec {
        table: "keypair_bindings",
        cols: &[
            ("token", Text),
            ("public_key", Text),
            ("sequence", Int),
            ("locked", Bool),
            ("updated_at", Int),
            ("last_attempt", Text),
        ],
        order: "token",
        check: ("sequence sum", "CAST(COALESCE(SUM(sequence), 0) AS BIGINT)"),
    },
    Spec {
        table: "bot_instances",
        cols: &[
            ("id", Text),
            ("bot", Text),
            ("generation", Int),
            ("pending", Int),
            ("locked", Bool),
            ("join_attributes", Text),
            ("created_at", Int),
            ("pending_key", Text),
            ("last_seen", Int),
            ("heartbeat_at", Int),
            ("heartbeat", Text),
            ("identity_expires_at", Int),
        ],
        order: "id",
        check: ("generation sum", "CAST(COALESCE(SUM(generation), 0) AS BIGINT)"),
    },
    Spec {
        table: "ca_keys",
        cols: &[
            ("id", Text),
            ("purpose", Text),
            ("alg", Text),
            ("sealed_key", Blob),
            ("cert_der", OptBlob),
            ("created_at", Int),
            ("not_after", Int),
            ("state", Text),
            ("key_ref", Text),
            ("activated_at", Int),
            ("deactivated_at", Int),
        ],
        order: "id",
        check: ("sealed bytes", "CAST(COALESCE(SUM(LENGTH(sealed_key)), 0) AS BIGINT)"),
    },
    Spec {
        table: "audit_events",
        cols: &[
            ("id", Int),
            ("time", Int),
            ("kind", Text),
            ("actor", Text),
            ("resource", Text),
            ("outcome", Text),
            ("detail", Text),
        ],
        order: "id",
        check: ("max id", "CAST(COALESCE(MAX(id), 0) AS BIGINT)"),
    },
    Spec {
        table: "revocations",
        cols: &[
            ("seq", Int),
            ("ca_key", Text),
            ("serial", Text),
            ("not_after", Int),
            ("revoked_at", Int),
            ("reason", Text),
            ("actor", Text),
        ],
        order: "seq",
        check: ("max seq", "CAST(COALESCE(MAX(seq), 0) AS BIGINT)"),
    },
    Spec {
        table: "instance_bindings",
        cols: &[("key", Text), ("instance", Text), ("bot", Text), ("bound_at", Int)],
        order: "key",
        check: ("bound_at sum", "CAST(COALESCE(SUM(bound_at), 0) AS BIGINT)"),
    },
];

fn spec(table: &str) -> &'static Spec {
    SPECS.iter().find(|s| s.table == table).expect("every table has a spec")
}

fn figures_sql(table: &str) -> String {
    format!("SELECT COUNT(*), {} FROM {table}", spec(table).check.1)
}

fn cols(s: &Spec) -> String {
    s.cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
}

/// A batch of rows of `SPECS[table]`.
struct Batch {
    table: usize,
    rows: Vec<Vec<Val>>,
}

/// What the reader learnt besides the rows.
struct SourceEnd {
    figures: Figures,
    /// SQLite's AUTOINCREMENT high-water mark for audit ids (may exceed MAX(id) after pruning).
    audit_seq: i64,
}

/// A PostgreSQL error with the server's message, table and constraint, but not
/// its `DETAIL` (which quotes row values, such as a token's secret hash).
fn pg_why(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut why = format!("{}: {}", db.severity(), db.message());
            if let Some(t) = db.table() {
                why += &format!(" (table {t}");
                if let Some(c) = db.constraint() {
                    why += &format!(", constraint {c}");
                }
                why += ")";
            }
            why
        }
        None => e.to_string(),
    }
}

fn source_err(path: &Path, e: impl std::fmt::Display) -> MigrateError {
    MigrateError::Source { path: path.to_path_buf(), why: e.to_string() }
}

/// Reads the whole source in one read transaction, sending batches; returns
/// the figures of that same snapshot.
fn read_source(path: &Path, tx: tokio::sync::mpsc::Sender<Batch>) -> Result<SourceEnd, MigrateError> {
    let err = |e: rusqlite::Error| source_err(path, e);
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
    conn.execute_batch("BEGIN DEFERRED").map_err(err)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
    if version != SQLITE_MIGRATIONS.len() as i64 {
        return Err(source_err(
            path,
            format!(
                "schema version {version}, this sigil copies version {}: start the broker of this version on it once \
                 (it upgrades the store), stop it, then migrate",
                SQLITE_MIGRATIONS.len()
            ),
        ));
    }
    for (i, s) in SPECS.iter().enumerate() {
        let mut stmt = conn.prepare(&format!("SELECT {} FROM {} ORDER BY {}", cols(s), s.table, s.order)).map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(r) = rows.next().map_err(err)? {
            let mut row = Vec::with_capacity(s.cols.len());
            for (j, (name, col)) in s.cols.iter().enumerate() {
                let v = match col {
                    Int => r.get(j).map(Val::Int),
                    Text => r.get(j).map(Val::Text),
                    Blob => r.get(j).map(Val::Blob),
                    OptBlob => r.get(j).map(Val::OptBlob),
                    Bool => r.get(j).map(Val::Bool),
                }
                .map_err(|e| source_err(path, format!("{}.{name}: {e}", s.table)))?;
                row.push(v);
            }
            batch.push(row);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                tx.blocking_send(Batch { table: i, rows: full }).map_err(|_| source_err(path, "the writer stopped"))?;
            }
        }
        if !batch.is_empty() {
            tx.blocking_send(Batch { table: i, rows: batch }).map_err(|_| source_err(path, "the writer stopped"))?;
        }
    }
    let mut tables = Vec::with_capacity(TABLES.len());
    for t in TABLES {
        let (n, v): (i64, i64) = conn.query_row(&figures_sql(t), [], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?;
        tables.push((*t, n, spec(t).check.0, v));
    }
    let audit_seq: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'audit_events'", [], |r| r.get(0))
        .map_err(err)?;
    conn.execute_batch("COMMIT").map_err(err)?;
    Ok(SourceEnd { figures: Figures { tables }, audit_seq })
}

/// Copies the SQLite store at `source` into the PostgreSQL database at `url`
/// (migrating its schema first). A target holding any row is refused unless
/// `replace`. Nothing is committed unless the target's figures equal the source's.
///
/// A store dev mode served last (its directory's `mode` is not `production`)
/// carries the week-long dev admin identity, whose key sits in a file beside
/// the data: after the verified copy, the `admin` bot's instances are deleted
/// in the same transaction, so that identity is refused by the PostgreSQL
/// brokers (which issue a new one at start), as a production start on a dev
/// data directory does.
pub async fn migrate(source: &Path, url: &str, replace: bool) -> Result<Report, MigrateError> {
    // Integrity, a known schema version, readable tables: before touching the target.
    sqlite_backup::verify(source).map_err(|e| source_err(source, e))?;
    let shown = redact_url(url);
    let target_err = |e: &dyn std::fmt::Display| MigrateError::Target { url: shown.clone(), why: e.to_string() };
    let store = PgStore::connect(url).await.map_err(|e| target_err(&e))?;
    let mut conn = store.conn().await.map_err(|e| target_err(&e))?;
    let tx = conn.transaction().await.map_err(|e| target_err(&pg_why(&e)))?;
    // Brokers on this database wait until the copy commits (or rolls back).
    tx.batch_execute(&format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", TABLES.join(", ")))
        .await
        .map_err(|e| target_err(&pg_why(&e)))?;
    let before = pg_figures(&tx).await.map_err(|e| target_err(&pg_why(&e)))?;
    let replaced = if before.tables.iter().any(|(_, n, _, _)| *n > 0) {
        if !replace {
            return Err(MigrateError::NotEmpty { url: shown.clone(), counts: before.counts() });
        }
        tx.batch_execute(&format!("TRUNCATE {} RESTART IDENTITY", TABLES.join(", "))).await.map_err(|e| target_err(&pg_why(&e)))?;
        Some(before.counts())
    } else {
        None
    };

    let (send, mut recv) = tokio::sync::mpsc::channel::<Batch>(IN_FLIGHT);
    let path = source.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || read_source(&path, send));
    let written: Result<(), tokio_postgres::Error> = async {
        let mut open: Option<(usize, std::pin::Pin<Box<BinaryCopyInWriter>>)> = None;
        while let Some(batch) = recv.recv().await {
            if open.as_ref().map(|(t, _)| *t) != Some(batch.table) {
                if let Some((_, mut w)) = open.take() {
                    w.as_mut().finish().await?;
                }
                let s = &SPECS[batch.table];
                let sink = tx.copy_in(&format!("COPY {} ({}) FROM STDIN BINARY", s.table, cols(s))).await?;
                let types: Vec<Type> = s.cols.iter().map(|(_, c)| c.pg()).collect();
                open = Some((batch.table, Box::pin(BinaryCopyInWriter::new(sink, &types))));
            }
            let (_, w) = open.as_mut().expect("opened above");
            for row in &batch.rows {
                let values: Vec<&(dyn ToSql + Sync)> = row.iter().map(Val::sql).collect();
                w.as_mut().write(&values).await?;
            }
        }
        if let Some((_, mut w)) = open.take() {
            w.as_mut().finish().await?;
        }
        Ok(())
    }
    .await;
    drop(recv);
    let read = reader.await.map_err(|e| source_err(source, e))?;
    // A failed reader only closes the channel (the writer then ends normally),
    // while a failed writer makes the reader stop with "the writer stopped":
    // the writer's error is the cause when there is one.
    written.map_err(|e| target_err(&pg_why(&e)))?;
    let end = read?;

    // Identity ids continue after the copied ones (and after pruned ones SQLite never reuses).
    let max_id = end.figures.tables.iter().find(|(t, ..)| *t == "audit_events").map(|(.., v)| *v).unwrap_or(0);
    let next_after = max_id.max(end.audit_seq);
    if next_after >= 1 {
        tx.query_one("SELECT setval(pg_get_serial_sequence('audit_events', 'id'), $1, true)", &[&next_after])
            .await
            .map_err(|e| target_err(&pg_why(&e)))?;
    }
    // Revocation sequences continue after the copied ones (readers page by sequence).
    let max_seq = end.figures.tables.iter().find(|(t, ..)| *t == "revocations").map(|(.., v)| *v).unwrap_or(0);
    if max_seq >= 1 {
        tx.query_one("SELECT setval(pg_get_serial_sequence('revocations', 'seq'), $1, true)", &[&max_seq])
            .await
            .map_err(|e| target_err(&pg_why(&e)))?;
    }
    let target = pg_figures(&tx).await.map_err(|e| target_err(&pg_why(&e)))?;
    end.figures.compare(&target)?;
    let dev_admin_instances_dropped = if source_is_production(source) {
        0
    } else {
        tx.execute("DELETE FROM bot_instances WHERE bot = $1", &[&crate::bootstrap::ADMIN])
            .await
            .map_err(|e| target_err(&pg_why(&e)))?
    };
    // Caches of brokers already running on this database learn of the change.
    tx.execute("UPDATE store_version SET version = version + 1 WHERE id = 1", &[]).await.map_err(|e| target_err(&pg_why(&e)))?;
    tx.commit().await.map_err(|e| target_err(&pg_why(&e)))?;
    Ok(Report { source: end.figures, target, audit_sequence: next_after, replaced, dev_admin_instances_dropped })
}

async fn pg_figures(tx: &tokio_postgres::Transaction<'_>) -> Result<Figures, tokio_postgres::Error> {
    let mut tables = Vec::with_capacity(TABLES.len());
    for t in TABLES {
        let row = tx.query_one(&figures_sql(t), &[]).await?;
        tables.push((*t, row.get::<_, i64>(0), spec(t).check.0, row.get::<_, i64>(1)));
    }
    Ok(Figures { tables })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{pg_harness, AuditRecord, BotInstance, CaKeyRecord, Doc, InstanceHeartbeat, Kind, Revocation, Store, TokenState};
    use serde_json::json;

    fn audit(i: i64) -> AuditRecord {
        AuditRecord {
            id: 0,
            time: 1000 + i,
            kind: "svid.issue".into(),
            actor: format!("spiffe://example.org/bot/b{i}"),
            resource: "r".into(),
            outcome: "ok".into(),
            detail: json!({"n": i}),
        }
    }

    /// A store with every kind of row, in SQLite, last served by a production broker.
    async fn populated(path: &Path) {
        std::fs::write(path.parent().unwrap().join("mode"), "production\n").unwrap();
        let s = SqliteStore::open(path).unwrap();
        for i in 0..5 {
            let doc = Doc { name: format!("role{i}"), revision: 0, spec: json!({"allow": [i]}) };
            let rev = s.create(Kind::Role, &doc, None).await.unwrap();
            s.update(Kind::Role, &Doc { revision: rev, ..doc }, None).await.unwrap();
        }
        let tok = |name: &str, method: &str| TokenState {
            name: name.into(),
            bot: "b".into(),
            method: method.into(),
            uses: 0,
            max_uses: 3,
            expires_at: i64::MAX / 2,
        };
        let doc = |name: &str| Doc { name: name.into(), revision: 0, spec: json!({}) };
        s.create(Kind::JoinToken, &doc("t1"), Some((&tok("t1", "token"), Some("hash-one")))).await.unwrap();
        s.create(Kind::JoinToken, &doc("t2"), Some((&tok("t2", "bound_keypair"), Some("reg-hash")))).await.unwrap();
        s.consume_token("hash-one", 1).await.unwrap();
        s.bind_keypair("t2", "K1", Some("reg-hash"), 1).await.unwrap();
        s.advance_keypair("t2", "K1", 0, "attempt-1", 2).await.unwrap();
        let inst = BotInstance {
            id: "i1".into(),
            bot: "b".into(),
            generation: 1,
            pending: 0,
            locked: false,
            join_attributes: json!({"method": "token"}),
            created_at: 5,
            identity_expires_at: 100,
        };
        s.create_instance(&inst).await.unwrap();
        s.advance_generation("i1", 1, "", "key-2").await.unwrap();
        s.create_bound_instance(&BotInstance { id: "i2".into(), ..inst.clone() }, "ec2:1:i-1", false).await.unwrap();
        let rev = Revocation {
            seq: 0,
            serial: "0a".into(),
            ca_key: "k".into(),
            not_after: i64::MAX / 2,
            revoked_at: 3,
            reason: "keyCompromise".into(),
            actor: "admin".into(),
        };
        s.insert_revocations(&[rev], 3).await.unwrap();
        let hb = InstanceHeartbeat { host_name: "h".into(), outputs: vec!["o".into()], last_renewal: 6, ..Default::default() };
        assert!(s.record_heartbeat("i1", &hb, 7, 0).await.unwrap());
        let key = |id: &str, cert: Option<Vec<u8>>| CaKeyRecord {
            id: id.into(),
            purpose: "x509".into(),
            alg: "ES256".into(),
            sealed_key: vec![7; 80],
            key_ref: String::new(),
            cert_der: cert,
            created_at: 1,
            not_after: 2,
            state: "active".into(),
            activated_at: 0,
            deactivated_at: 0,
        };
        s.insert_ca_key(&key("k1", Some(vec![1, 2, 3]))).await.unwrap();
        let mut k2 = key("k2", None);
        k2.state = "retired".into();
        s.insert_ca_key(&k2).await.unwrap();
        let events: Vec<AuditRecord> = (0..2500).map(audit).collect();
        s.append_audit_batch(&events).await.unwrap();
        // Pruned ids are never reused: the target's sequence continues after them too.
        s.prune_audit(100, 0).await.unwrap();
    }

    async fn everything(s: &dyn Store) -> String {
        let mut out = String::new();
        for k in [Kind::Role, Kind::JoinToken] {
            out += &format!("{:?}\n", s.list(k, "", 1000).await.unwrap());
        }
        for t in ["t1", "t2"] {
            out += &format!("{:?}\n{:?}\n", s.token_state(t).await.unwrap(), s.keypair_binding(t).await.unwrap());
        }
        out += &format!("{:?}\n{:?}\n", s.instance_record("i1").await.unwrap(), s.list_ca_keys().await.unwrap());
        out += &format!("{:?}\n", s.list_audit(0, 10_000).await.unwrap());
        out += &format!("{:?}\n", s.list_revocations(0, 0, 100).await.unwrap());
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_populated_sqlite_store_moves_to_postgres_row_for_row_and_the_source_is_untouched() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("sigil.db");
        populated(&db).await;
        let want = everything(&SqliteStore::open(&db).unwrap()).await;
        // Let the closed stores' checkpointer threads finish (they stop within one period).
        std::thread::sleep(std::time::Duration::from_millis(600));
        let files = || ["sigil.db", "sigil.db-wal"].map(|f| std::fs::read(d.path().join(f)).unwrap_or_default());
        let before = files();
        let url = pg_harness::shared().fresh_database().await;

        let report = migrate(&db, &url, false).await.unwrap();
        assert_eq!(report.source, report.target);
        let counts = report.target.counts().to_string();
        assert_eq!(
            counts,
            "resources=7 join_tokens=2 bot_instances=2 ca_keys=2 keypair_bindings=1 audit_events=100 revocations=1 instance_bindings=1",
            "{report:?}"
        );
        assert_eq!(files(), before, "the source database (and its WAL) is not changed");

        let pg = PgStore::connect(&url).await.unwrap();
        assert_eq!(everything(&pg).await, want, "every record reads back the same through the PostgreSQL store");
        // Stored state keeps working: the spent secret stays spent, uses continue, ids continue.
        assert!(pg.consume_token("hash-one", 2).await.is_ok(), "a 3-use token has 2 uses left");
        assert_eq!(pg.token_state("t1").await.unwrap().uses, 2);
        let _ = pg.bind_keypair("t2", "OTHER", Some("reg-hash"), 3).await;
        let bound = pg.keypair_binding("t2").await.unwrap().unwrap();
        assert_eq!((bound.public_key.as_str(), bound.sequence), ("K1", 1), "the bound key and its sequence stay");
        assert_eq!(pg.advance_generation("i1", 2, "key-2", "key-3").await.unwrap(), 3, "the generation continues");
        let next = pg.append_audit(&audit(9999)).await.unwrap();
        assert_eq!(next, 2501, "audit ids continue after the copied and the pruned ones");
        assert_eq!(report.audit_sequence, 2500);
        let r = Revocation { seq: 0, serial: "0b".into(), ca_key: "k".into(), not_after: i64::MAX / 2, revoked_at: 4, reason: String::new(), actor: "a".into() };
        pg.insert_revocations(&[r], 4).await.unwrap();
        let seqs: Vec<i64> = pg.list_revocations(0, 0, 10).await.unwrap().iter().map(|r| r.seq).collect();
        assert!(seqs.len() == 2 && seqs[1] > seqs[0], "revocation sequences continue: {seqs:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_non_empty_target_is_refused_unless_replace_and_a_refusal_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("sigil.db");
        populated(&db).await;
        let url = pg_harness::shared().fresh_database().await;
        let pg = PgStore::connect(&url).await.unwrap();
        pg.create(Kind::Role, &Doc { name: "already".into(), revision: 0, spec: json!({}) }, None).await.unwrap();

        let e = migrate(&db, &url, false).await.unwrap_err();
        assert!(matches!(e, MigrateError::NotEmpty { .. }), "{e}");
        assert!(e.to_string().contains("--replace"), "{e}");
        assert!(pg.get(Kind::Role, "already").await.is_ok(), "a refusal changes nothing");

        let report = migrate(&db, &url, true).await.unwrap();
        assert_eq!(report.replaced.unwrap().to_string(), "resources=1 join_tokens=0 bot_instances=0 ca_keys=0 keypair_bindings=0 audit_events=0 revocations=0 instance_bindings=0");
        assert!(pg.get(Kind::Role, "already").await.is_err(), "replaced");
        assert_eq!(report.source, report.target);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_dev_admin_identity_of_a_dev_store_does_not_survive_the_move() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("sigil.db");
        populated(&db).await;
        std::fs::write(d.path().join("mode"), "dev\n").unwrap();
        let s = SqliteStore::open(&db).unwrap();
        let admin = BotInstance {
            id: "dev-admin".into(),
            bot: "admin".into(),
            generation: 1,
            pending: 0,
            locked: false,
            join_attributes: json!({}),
            created_at: 1,
            identity_expires_at: 100,
        };
        s.create_instance(&admin).await.unwrap();
        drop(s);
        let url = pg_harness::shared().fresh_database().await;
        let report = migrate(&db, &url, false).await.unwrap();
        assert_eq!(report.dev_admin_instances_dropped, 1);
        let pg = PgStore::connect(&url).await.unwrap();
        assert!(pg.instance("dev-admin").await.is_err(), "the dev admin identity's instance is gone");
        assert!(pg.instance("i1").await.is_ok(), "other bots' instances stay");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_that_fails_half_way_commits_nothing() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("sigil.db");
        populated(&db).await;
        // SQLite keeps no foreign key here: a binding whose token is gone (hand-edited, or an old bug)
        // is refused by PostgreSQL after resources and join tokens were already copied.
        let c = Connection::open(&db).unwrap();
        c.execute("INSERT INTO keypair_bindings (token, public_key, sequence, locked, updated_at) VALUES ('gone', 'K', 0, 0, 1)", [])
            .unwrap();
        // Many more batches behind it than the channel holds: the reader is still sending when the writer fails.
        c.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO audit_events (time, kind, actor, resource, outcome, detail) SELECT i, 'k', 'a', 'r', 'ok', '{}' FROM n;",
        )
        .unwrap();
        drop(c);
        let url = pg_harness::shared().fresh_database().await;
        let e = migrate(&db, &url, false).await.unwrap_err();
        assert!(matches!(e, MigrateError::Target { .. }), "the cause is named, not the stopped reader: {e}");
        assert!(e.to_string().contains("keypair_bindings"), "{e}");
        let pg = PgStore::connect(&url).await.unwrap();
        assert!(pg.list(Kind::Role, "", 10).await.unwrap().is_empty(), "nothing of the failed copy is committed");
        assert!(pg.list_ca_keys().await.unwrap().is_empty());
        // And the target is still empty: a corrected source then goes in without --replace.
        let c = Connection::open(&db).unwrap();
        c.execute("DELETE FROM keypair_bindings WHERE token = 'gone'", []).unwrap();
        drop(c);
        migrate(&db, &url, false).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_target_password_never_appears_in_an_error() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("sigil.db");
        populated(&db).await;
        let port = pg_harness::shared().port;
        // A database that does not exist: the connection fails after authentication.
        let url = format!("postgres://postgres:hunter2-secret@127.0.0.1:{port}/no_such_db");
        let e = migrate(&db, &url, false).await.unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("postgres://postgres@127.0.0.1"), "{e}");
    }

    #[test]
    fn figures_that_differ_in_rows_or_checks_fail_loudly() {
        let a = Figures { tables: vec![("resources", 3, "revision sum", 9), ("audit_events", 5, "max id", 5)] };
        assert!(a.compare(&a.clone()).is_ok());
        let mut b = a.clone();
        b.tables[1].1 = 4;
        let e = a.compare(&b).unwrap_err().to_string();
        assert!(e.contains("audit_events rows: source 5, target 4"), "{e}");
        let mut c = a.clone();
        c.tables[0].3 = 8;
        assert!(a.compare(&c).unwrap_err().to_string().contains("resources revision sum"));
    }
}
