//! `sigil store backup|restore|verify|migrate`: the embedded SQLite store,
//! offline tools, and the move to PostgreSQL.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sigil_broker::data_dir::DATABASE;
use sigil_broker::store::postgres::redact_url;
use sigil_broker::store::{migrate, sqlite_backup};
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
    /// Copy a SQLite store into an empty PostgreSQL database and verify the copy (stop the broker first).
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The source: `sqlite:PATH`, PATH being the database file or the broker's data directory.
    #[arg(long)]
    from: String,
    /// The target: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (the variable keeps a password out of `ps`).
    #[arg(long, env = "SIGIL_MIGRATE_TO", hide_env_values = true)]
    to: String,
    /// Delete everything in a non-empty target first (in the same transaction as the copy).
    #[arg(long)]
    replace: bool,
}

fn sqlite_source(from: &str) -> Result<PathBuf> {
    let path = from.strip_prefix("sqlite:").with_context(|| format!("--from {from}: expected sqlite:PATH"))?;
    let path = PathBuf::from(path.strip_prefix("//").unwrap_or(path));
    Ok(if path.is_dir() { path.join(DATABASE) } else { path })
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

pub(crate) async fn run(cmd: StoreCmd) -> Result<()> {
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
        StoreCmd::Migrate(a) => {
            let source = sqlite_source(&a.from)?;
            if !(a.to.starts_with("postgres://") || a.to.starts_with("postgresql://")) {
                anyhow::bail!("--to: expected postgres://USER@HOST/DB");
            }
            let shown = redact_url(&a.to);
            eprintln!(
                "copying {} into {shown}: stop the broker first; writes it makes after the copy starts are not copied \
                 (or migrate from a `sigil store backup`)",
                source.display()
            );
            let report = migrate::migrate(&source, &a.to, a.replace).await.context("migrate failed")?;
            if let Some(r) = &report.replaced {
                println!("deleted from the target first: {r}");
            }
            println!("source {}: {}", source.display(), report.source);
            println!("target {shown}: {}", report.target);
            println!("verified: every table's rows and check equal; audit ids continue after {}", report.audit_sequence);
            if report.dev_admin_instances_dropped > 0 {
                println!(
                    "dev-mode store: {} admin identity instance(s) not carried over; the PostgreSQL broker issues a new admin identity at start",
                    report.dev_admin_instances_dropped
                );
            }
            eprintln!("the CA keys are copied sealed: start the PostgreSQL brokers with the same seal key (and TLS files)");
        }
    }
    Ok(())
}
