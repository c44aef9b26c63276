//! The broker's data directory: who may read it, and which mode last ran on it.
//!
//! ```text
//! DATA_DIR/            0700, owned by the broker's user (another owner is refused)
//!   sigil.db, -wal, -shm   0600 (SQLite gives -wal/-shm the database file's mode)
//!   audit.jsonl            0600 when created; an existing one is narrowed to at most 0640
//!   seal.key               0600, dev mode only
//!   admin.identity, tls-ca.pem, bundle.pem   0600
//!   mode                   `dev` or `production`: the mode that last started here
//! ```
//!
//! The files hold SPIFFE IDs, audiences, rule details and (sealed) CA keys: none
//! is for other local users. Files that already exist with looser modes (made by
//! an older version, or copied in) are narrowed at start rather than refused.
//!
//! `mode` lets production notice a data directory that dev mode prepared: the
//! dev admin identity (a week long, its key in a file beside the data) must not
//! stay valid in production.

use sigil_core::fsutil::{FsError, TrustedDir};
use std::path::Path;

/// The files of the data directory that hold anything private and that the
/// broker reads back or appends to, with the loosest mode each may keep. A
/// symlink (or anything but a regular file) in their place is refused: the
/// broker would read or extend the link's target.
const PRIVATE_FILES: &[(&str, u32)] = &[
    ("sigil.db", 0o600),
    ("sigil.db-wal", 0o600),
    ("sigil.db-shm", 0o600),
    ("seal.key", 0o600),
    (AUDIT_LOG, 0o640),
];

/// Private files the broker writes whole at each start, or whenever they are
/// not a fresh regular file (`admin.identity`): a loose mode is narrowed, and a
/// symlink is left for the writer's rename to replace (never followed).
const REWRITTEN_FILES: &[&str] = &[ADMIN_IDENTITY, "tls-ca.pem", "bundle.pem"];

/// The admin identity file name.
pub const ADMIN_IDENTITY: &str = "admin.identity";

/// The database file name.
pub const DATABASE: &str = "sigil.db";
/// The default audit log file name.
pub const AUDIT_LOG: &str = "audit.jsonl";
const MODE_FILE: &str = "mode";

/// Which mode last started the broker on a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `sigil server --dev`.
    Dev,
    /// `sigil server --config FILE`.
    Production,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Dev => "dev",
            Mode::Production => "production",
        }
    }
}

/// What was found when the data directory was prepared.
#[derive(Debug)]
pub struct DataDir {
    /// The checked directory handle.
    pub dir: TrustedDir,
    /// Files whose mode was narrowed (name, old mode).
    pub narrowed: Vec<String>,
    /// Whether the database existed before this start.
    pub had_database: bool,
    /// The mode recorded by the previous start, if any.
    pub last_mode: Option<Mode>,
}

/// Creates `path` (0700) or checks and narrows it to 0700, and narrows the
/// modes of the private files already in it.
pub fn prepare(path: &Path) -> Result<DataDir, FsError> {
    let dir = TrustedDir::create(path)?;
    dir.restrict(&sigil_core::safe_fs::Access::PRIVATE)?;
    let mut narrowed = Vec::new();
    for (name, max) in PRIVATE_FILES {
        if dir.restrict_existing(name.as_ref(), *max)? {
            narrowed.push((*name).to_string());
        }
    }
    for name in REWRITTEN_FILES {
        match dir.restrict_existing(name.as_ref(), 0o600) {
            Ok(true) => narrowed.push((*name).to_string()),
            Ok(false) | Err(FsError::NotRegular { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let had_database = dir.entry_kind(DATABASE).is_some();
    // Read without following a link: an unknown mode counts as data from elsewhere.
    let recorded = dir.read_file(MODE_FILE, &sigil_core::safe_fs::Trust::process(), 64).ok().flatten().unwrap_or_default();
    let last_mode = match String::from_utf8_lossy(&recorded).trim() {
        "dev" => Some(Mode::Dev),
        "production" => Some(Mode::Production),
        _ => None,
    };
    Ok(DataDir { dir, narrowed, had_database, last_mode })
}

impl DataDir {
    /// Creates the database file 0600 if missing, so SQLite (which gives -wal
    /// and -shm the database's mode) never makes it readable by others.
    pub fn create_database(&self) -> Result<(), FsError> {
        drop(self.dir.open_append(DATABASE.as_ref(), 0o600)?);
        Ok(())
    }

    /// Whether this start moves data prepared elsewhere (dev mode, or a version
    /// that did not record the mode) into production.
    pub fn moves_to_production(&self, mode: Mode) -> bool {
        mode == Mode::Production && self.had_database && self.last_mode != Some(Mode::Production)
    }

    /// Records the mode of this start.
    pub fn record_mode(&self, mode: Mode) -> Result<(), FsError> {
        self.dir.write(MODE_FILE.as_ref(), format!("{}\n", mode.as_str()).as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn loose_files_and_directory_are_narrowed() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, m) in [("sigil.db", 0o644), ("audit.jsonl", 0o664), ("notes.txt", 0o644)] {
            std::fs::write(data.join(name), b"x").unwrap();
            std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(m)).unwrap();
        }
        let dd = prepare(&data).unwrap();
        assert_eq!(mode_of(&data), 0o700);
        assert_eq!(mode_of(&data.join("sigil.db")), 0o600);
        assert_eq!(mode_of(&data.join("audit.jsonl")), 0o640);
        assert_eq!(mode_of(&data.join("notes.txt")), 0o644, "files not ours to manage are left alone");
        assert_eq!(dd.narrowed, vec!["sigil.db".to_string(), "audit.jsonl".to_string()]);
        assert!(dd.had_database && dd.last_mode.is_none());
    }

    #[test]
    fn a_symlink_is_left_for_the_rewrite_where_the_broker_rewrites_and_refused_where_it_reads() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(d.path().join("victim"), b"v").unwrap();
        std::os::unix::fs::symlink(d.path().join("victim"), data.join("tls-ca.pem")).unwrap();
        std::os::unix::fs::symlink(d.path().join("victim"), data.join("mode")).unwrap();
        let dd = prepare(&data).unwrap();
        assert_eq!(dd.last_mode, None, "`mode` is not read through a link");
        std::os::unix::fs::symlink(d.path().join("victim"), data.join("seal.key")).unwrap();
        assert!(matches!(prepare(&data), Err(FsError::NotRegular { .. })));
        assert_eq!(std::fs::read(d.path().join("victim")).unwrap(), b"v");
    }

    #[test]
    fn only_data_from_elsewhere_moves_to_production() {
        let d = tempfile::tempdir().unwrap();
        let fresh = prepare(d.path()).unwrap();
        fresh.create_database().unwrap();
        assert!(!fresh.moves_to_production(Mode::Production), "a new data dir has nothing to move");
        fresh.record_mode(Mode::Dev).unwrap();
        let after_dev = prepare(d.path()).unwrap();
        assert_eq!(after_dev.last_mode, Some(Mode::Dev));
        assert!(after_dev.moves_to_production(Mode::Production));
        assert!(!after_dev.moves_to_production(Mode::Dev));
        after_dev.record_mode(Mode::Production).unwrap();
        assert!(!prepare(d.path()).unwrap().moves_to_production(Mode::Production));
    }
}
