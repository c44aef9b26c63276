//! `sigil store backup|restore|verify`: the embedded SQLite store, offline tools.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sigil_broker::data_dir::DATABASE;
use sigil_broker::store::sqlite_backup;
use std::path::PathBuf;

/// Store maintenance (SQLite).
#[derive(Debug, Subcommand)]
pub(crate) enum StoreCmd {
    /// Write a consistent copy of the store to a new 0600 file (the broker may keep running).
    Backup(BackupArgs),
    /// Put a backup in place (stop the broker first); the replaced database is kept.
    Restore(RestoreArgs),
    /// Check a store or backup file: integrity, schema version, row counts.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// The broker's data directory (holds sigil.db).
    #[arg(long, default_value = ".data/sigil")]
    data_dir: PathBuf,
    /// The backup file to create (must not exist).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    from: PathBuf,
    /// The broker's data directory to restore into.
    #[arg(long, default_value = ".data/sigil")]
    data_dir: PathBuf,
    /// Replace an existing database (kept as sigil.db.before-restore-UNIX).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The store or backup file.
    file: PathBuf,
}

pub(crate) fn run(cmd: StoreCmd) -> Result<()> {
    match cmd {
        StoreCmd::Backup(a) => {
            let counts = sqlite_backup::backup(&a.data_dir.join(DATABASE), &a.out).context("backup failed")?;
            println!("backup {}: {counts}", a.out.display());
            eprintln!("the CA keys in it are sealed: keep the seal key (not in the backup) with it");
        }
        StoreCmd::Restore(a) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let counts = sqlite_backup::restore(&a.from, &a.data_dir.join(DATABASE), a.force, now).context("restore failed")?;
            println!("restored {} into {}: {counts}", a.from.display(), a.data_dir.display());
        }
        StoreCmd::Verify(a) => {
            let counts = sqlite_backup::verify(&a.file)?;
            println!("{}: ok {counts}", a.file.display());
        }
    }
    Ok(())
}
