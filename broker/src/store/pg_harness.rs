//! A real PostgreSQL 15 for tests: a throwaway cluster in a temp data dir,
//! listening on 127.0.0.1 only at a free port, trust auth (loopback only),
//! run as user `postgres` when the tests run as root (CI). One cluster per
//! test process ([`shared`]); each test takes a fresh database
//! ([`PgCluster::fresh_database`]). The cluster is stopped and its data dir
//! removed when the test process exits, however it exits (a watchdog process
//! waits for it).
//!
//! Missing server binaries are a failure with the install step, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Where Debian's `postgresql-15` puts the server binaries (override with
/// `SIGIL_PG_BIN`).
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running test cluster.
#[derive(Debug)]
pub struct PgCluster {
    /// Loopback port.
    pub port: u16,
    /// Data dir (also the Unix socket dir).
    pub dir: PathBuf,
    bin: PathBuf,
    next_db: AtomicU64,
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `cmd` as user `postgres` when we are root (the server refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl PgCluster {
    /// initdb + start. Panics-free: the error names what to install or fix.
    pub fn start() -> Result<Self, String> {
        let bin = std::env::var_os("SIGIL_PG_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN));
        for b in ["initdb", "pg_ctl", "postgres"] {
            if !bin.join(b).exists() {
                return Err(format!(
                    "PostgreSQL 15 server binary {} not found: install it with `apt-get install postgresql-15` \
                     (scripts/setup.sh does), or point SIGIL_PG_BIN at its bin directory",
                    bin.join(b).display()
                ));
            }
        }
        // Directly under /tmp (world-traversable), owned by postgres.
        let dir = std::env::temp_dir().join(format!("sigil-pg-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        if running_as_root() {
            let mut c = Command::new("chown");
            c.arg("postgres:postgres").arg(&dir);
            run(c, "chown the data dir to postgres (is user postgres there? `apt-get install postgresql-15` creates it)")?;
        }
        let data = dir.join("data");
        let mut c = as_postgres(&bin.join("initdb"));
        c.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
        run(c, "initdb")?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut c = as_postgres(&bin.join("pg_ctl"));
            c.arg("-D").arg(&data).arg("-l").arg(dir.join("log")).args(["-w", "-t", "60", "start", "-o"]).arg(format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=300 -c fsync=off",
                dir.display()
            ));
            c.stdout(Stdio::null()).stderr(Stdio::null());
            match run(c, "pg_ctl start") {
                Ok(()) => {
                    let cluster = Self { port, dir: dir.clone(), bin: bin.clone(), next_db: AtomicU64::new(0) };
                    return Ok(cluster);
                }
                Err(e) => last = format!("{e}; server log: {}", std::fs::read_to_string(dir.join("log")).unwrap_or_default()),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    /// URL of database `db` (user postgres, no password: trust on loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), self.next_db.fetch_add(1, Ordering::SeqCst));
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the test cluster: {e}"));
        let task = tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap_or_else(|e| panic!("create database: {e}"));
        drop(client);
        let _ = task.await;
        self.url(&name)
    }

    /// Stops the cluster now (immediate) and removes its data dir.
    pub fn stop(&self) {
        let mut c = as_postgres(&self.bin.join("pg_ctl"));
        c.arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "stop"]);
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Stops the cluster when process `pid` has exited (statics are never
    /// dropped): a small shell loop outliving the test process.
    fn stop_when_gone(&self, pid: u32) -> Result<(), String> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if running_as_root() {
            format!("runuser -u postgres -- {} -D {}/data -m immediate stop", pg_ctl.display(), self.dir.display())
        } else {
            format!("{} -D {}/data -m immediate stop", pg_ctl.display(), self.dir.display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {}",
            self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| format!("spawn the cluster watchdog: {e}"))
    }
}

/// The test process's cluster, started on first use; stopped and removed when
/// the process exits. Panics (fails the test) when PostgreSQL cannot start.
pub fn shared() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let c = PgCluster::start().unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
        if let Err(e) = c.stop_when_gone(std::process::id()) {
            c.stop();
            panic!("{e}");
        }
        c
    })
}
