//! Backup and restore of the embedded SQLite store.
//!
//! A backup is a consistent copy of a live database (`VACUUM INTO`: one read
//! transaction, so a broker may keep serving meanwhile), written to a new 0600
//! file that must not exist yet, then checked. A restore checks the copy first
//! (`integrity_check`, a schema version this broker knows, row counts) and only
//! then puts it in place: the database it replaces is kept beside it, with its
//! WAL, as `sigil.db.before-restore-UNIX`. CA keys stay sealed in both: the seal
//! key is not in the database and must be kept (and restored) with it.

use super::sqlite::MIGRATIONS;
use rusqlite::{Connection, OpenFlags};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The tables a Sigil store has, in the order counts are reported.
pub const TABLES: &[&str] = &["resources", "join_tokens", "bot_instances", "ca_keys", "keypair_bindings", "audit_events", "revocations", "instance_bindings"];

/// Rows per table of a checked database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub Vec<(&'static str, i64)>);

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(t, n)| format!("{t}={n}")).collect();
        f.write_str(&parts.join(" "))
    }
}

/// Backup and restore failures. Nothing is replaced when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A file could not be created, read or moved.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The file is not a usable Sigil store.
    #[error("{path} is not a usable Sigil store: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The restore target already holds a database.
    #[error("{0} exists: stop the broker, then pass --force to replace it (it is kept as {0}.before-restore-UNIX)")]
    Exists(PathBuf),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError::File { path: path.to_path_buf(), why: e.to_string() }
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError::Invalid { path: path.to_path_buf(), why: e.to_string() }
}

/// Writes a consistent copy of the database at `db` to `out` (a new file,
/// 0600; an existing file or symlink there is refused) and checks it.
pub fn backup(db: &Path, out: &Path) -> Result<Counts, BackupError> {
    if !db.is_file() {
        return Err(file_err(db, "no database here (is --data-dir right?)"));
    }
    verify(db)?;
    // create_new = O_CREAT|O_EXCL: never opens an existing file, nor follows a symlink.
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(out).map_err(|e| file_err(out, e))?;
    let result = (|| {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|e| file_err(db, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| file_err(db, e))?;
        let target = out.to_str().ok_or_else(|| file_err(out, "path is not UTF-8"))?;
        conn.execute("VACUUM INTO ?1", [target]).map_err(|e| file_err(out, e))?;
        OpenOptions::new().write(true).open(out).and_then(|f| f.sync_all()).map_err(|e| file_err(out, e))?;
        verify(out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

/// Checks that `path` is an intact Sigil store this broker can open, and counts its rows.
pub fn verify(path: &Path) -> Result<Counts, BackupError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| file_err(path, e))?;
    if !meta.file_type().is_file() {
        return Err(invalid(path, "not a regular file"));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(|e| invalid(path, e))?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| invalid(path, e))?;
    if check != "ok" {
        return Err(invalid(path, format!("integrity check: {check}")));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| invalid(path, e))?;
    if version < 1 || version as usize > MIGRATIONS.len() {
        return Err(invalid(path, format!("schema version {version}, this broker knows 1..={}", MIGRATIONS.len())));
    }
    let mut counts = Vec::with_capacity(TABLES.len());
    for t in TABLES {
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0)).map_err(|e| invalid(path, format!("table {t}: {e}")))?;
        counts.push((*t, n));
    }
    Ok(Counts(counts))
}

/// Puts the backup `from` in place as the database `db`, after checking it.
/// An existing `db` is replaced only with `force` (the broker must be stopped)
/// and kept, with its WAL, as `DB.before-restore-{now}`. Returns the restored counts.
pub fn restore(from: &Path, db: &Path, force: bool, now: i64) -> Result<Counts, BackupError> {
    let counts = verify(from)?;
    let exists = std::fs::symlink_metadata(db).is_ok();
    if exists && !force {
        return Err(BackupError::Exists(db.to_path_buf()));
    }
    let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = db.file_name().ok_or_else(|| file_err(db, "no file name"))?.to_string_lossy().into_owned();
    let tmp = dir.join(format!(".{name}.restore-{now}"));
    let data = std::fs::read(from).map_err(|e| file_err(from, e))?;
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(|e| file_err(&tmp, e))?;
    let written = f.write_all(&data).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_err(&tmp, e));
    }
    if let Err(e) = verify(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if exists {
        let kept = dir.join(format!("{name}.before-restore-{now}"));
        // The WAL and shared-memory files belong to the old database: they move with it.
        for suffix in ["-wal", "-shm"] {
            let from_side = dir.join(format!("{name}{suffix}"));
            if std::fs::symlink_metadata(&from_side).is_ok() {
                let to_side = dir.join(format!("{name}.before-restore-{now}{suffix}"));
                std::fs::rename(&from_side, &to_side).map_err(|e| file_err(&from_side, e))?;
            }
        }
        std::fs::rename(db, &kept).map_err(|e| file_err(db, e))?;
    }
    std::fs::rename(&tmp, db).map_err(|e| file_err(db, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| file_err(dir, e))?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn populated(dir: &Path) -> PathBuf {
        let db = dir.join("sigil.db");
        let store = SqliteStore::open(&db).unwrap();
        drop(store);
        let conn = Connection::open(&db).unwrap();
        conn.execute("INSERT INTO audit_events (time, kind, actor, resource, outcome, detail) VALUES (1, 'test', 'a', 'r', 'ok', '{}')", []).unwrap();
        db
    }

    #[test]
    fn a_backup_is_a_new_private_file_that_verifies_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let db = populated(d.path());
        let out = d.path().join("backup.db");
        let counts = backup(&db, &out).unwrap();
        assert_eq!(counts, verify(&db).unwrap());
        assert!(counts.0.contains(&("audit_events", 1)), "{counts}");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(backup(&db, &out), Err(BackupError::File { .. })), "an existing file is never overwritten");
        let link = d.path().join("link.db");
        std::os::unix::fs::symlink(d.path().join("victim"), &link).unwrap();
        assert!(backup(&db, &link).is_err());
        assert!(!d.path().join("victim").exists(), "a symlink is not followed");
    }

    #[test]
    fn a_damaged_backup_is_refused_and_the_database_is_left_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        let db = populated(d.path());
        let out = d.path().join("backup.db");
        backup(&db, &out).unwrap();
        let mut bytes = std::fs::read(&out).unwrap();
        bytes.truncate(bytes.len() / 2);
        let bad = d.path().join("bad.db");
        std::fs::write(&bad, &bytes).unwrap();
        let before = std::fs::read(&db).unwrap();
        assert!(matches!(restore(&bad, &db, true, 7), Err(BackupError::Invalid { .. })));
        assert_eq!(std::fs::read(&db).unwrap(), before);
        assert!(matches!(restore(&out, &db, false, 7), Err(BackupError::Exists(_))), "no --force: refused");
        let counts = restore(&out, &db, true, 7).unwrap();
        assert_eq!(counts, verify(&db).unwrap());
        assert!(d.path().join("sigil.db.before-restore-7").exists(), "the replaced database is kept");
    }
}
