//! A throwaway PostgreSQL 15 for the PostgreSQL benchmarks, started the way
//! the tests start theirs (`broker/src/store/pg_harness.rs`,
//! `acceptance-tests/sigil_harness.py`): initdb in a temp dir, loopback only,
//! trust auth, run as user `postgres` when this runs as root. Unlike the
//! Rust test harness it keeps PostgreSQL's durability defaults (`fsync=on`,
//! `synchronous_commit=on`): the figures are what an operator's database
//! does. It can be pinned to CPUs (`taskset`), and its CPU time (every
//! server process) is measured like a broker's. Stopped (immediate) and
//! removed when dropped.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's `postgresql-15` puts the server binaries (override with
/// `SIGIL_PG_BIN`, as the tests do).
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running cluster.
#[derive(Debug)]
pub struct PgCluster {
    /// Loopback port.
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    root: bool,
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl PgCluster {
    /// initdb + start, the server pinned to `cpus` (`taskset -c`) if given.
    /// `settings` are extra `-c name=value` server settings.
    pub fn start(cpus: Option<&str>, settings: &[&str]) -> Result<Self> {
        let bin = std::env::var_os("SIGIL_PG_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN));
        for b in ["initdb", "pg_ctl", "postgres"] {
            if !bin.join(b).exists() {
                bail!(
                    "PostgreSQL 15 server binary {} not found: install it with `apt-get install postgresql-15` \
                     (scripts/setup.sh does), or point SIGIL_PG_BIN at its bin directory",
                    bin.join(b).display()
                );
            }
        }
        let root = running_as_root();
        // Directly under /tmp (world-traversable), owned by postgres.
        let dir = std::env::temp_dir().join(format!("sigil-bench-pg-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir)?;
        let mut c = PgCluster { port: 0, dir, bin, root };
        if root {
            c.run(Command::new("chown").arg("postgres:postgres").arg(&c.dir), "chown the data dir to postgres (`apt-get install postgresql-15` creates the user)")?;
        }
        let data = c.dir.join("data");
        let mut init = c.tool("initdb", None);
        init.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
        c.run(&mut init, "initdb")?;
        let extra: String = settings.iter().map(|s| format!(" -c {s}")).collect();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut start = c.tool("pg_ctl", cpus);
            start.arg("-D").arg(&data).arg("-l").arg(c.dir.join("log")).args(["-w", "-t", "120", "start", "-o"]).arg(format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=300{extra}",
                c.dir.display()
            ));
            match c.run(&mut start, "pg_ctl start") {
                Ok(()) => {
                    c.port = port;
                    return Ok(c);
                }
                Err(e) => last = format!("{e:#}; server log: {}", std::fs::read_to_string(c.dir.join("log")).unwrap_or_default()),
            }
        }
        bail!("PostgreSQL did not start: {last}")
    }

    /// `tool` of the server's bin dir, as user postgres when root, pinned to `cpus`.
    fn tool(&self, tool: &str, cpus: Option<&str>) -> Command {
        let mut argv: Vec<String> = Vec::new();
        if self.root {
            argv.extend(["runuser", "-u", "postgres", "--"].map(String::from));
        }
        if let Some(cpus) = cpus {
            argv.extend(["taskset".to_string(), "-c".to_string(), cpus.to_string()]);
        }
        argv.push(self.bin.join(tool).display().to_string());
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    fn run(&self, c: &mut Command, what: &str) -> Result<()> {
        let out = c.stdin(Stdio::null()).output().with_context(|| what.to_string())?;
        if !out.status.success() {
            bail!("{what} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// URL of database `db` (user postgres, trust on loopback, no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name`; returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        let c = self.connect("postgres").await?;
        c.batch_execute(&format!("CREATE DATABASE {name}")).await.context("CREATE DATABASE")?;
        Ok(self.url(name))
    }

    /// A client of database `db` (its connection task spawned).
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls).await.context("connect to the benchmark PostgreSQL")?;
        tokio::spawn(conn);
        Ok(client)
    }

    fn data(&self) -> &Path {
        self.dir.as_path()
    }

    /// The postmaster's pid (first line of `postmaster.pid`).
    fn postmaster(&self) -> Result<u32> {
        let text = std::fs::read_to_string(self.data().join("data/postmaster.pid")).context("postmaster.pid")?;
        text.lines().next().context("empty postmaster.pid")?.trim().parse().context("postmaster.pid")
    }

    /// CPU seconds (user + system) used so far by every server process: the
    /// postmaster, its live children, and the children it has reaped.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let pm = self.postmaster()?;
        let mut total = stat_cpu(pm, true)?;
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if pid != pm && parent(pid) == Some(pm) {
                total += stat_cpu(pid, false).unwrap_or(0.0);
            }
        }
        Ok(total)
    }
}

/// Fields after the command name of /proc/PID/stat.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(text.rsplit_once(')')?.1.split_whitespace().map(String::from).collect())
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// utime + stime (and cutime + cstime of reaped children if `children`), seconds.
fn stat_cpu(pid: u32, children: bool) -> Result<f64> {
    let f = stat_fields(pid).context("/proc/PID/stat (Linux only)")?;
    let n = if children { 4 } else { 2 };
    let mut ticks = 0.0;
    for i in 11..11 + n {
        ticks += f.get(i).context("short stat")?.parse::<f64>()?;
    }
    Ok(ticks / 100.0)
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut stop = self.tool("pg_ctl", None);
        stop.arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "stop"]);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
