//! A real PostgreSQL 15 for tests: a throwaway cluster in a temp data dir,
//! listening on 127.0.0.1 only at a free port, trust auth (loopback only),
//! run as user `postgres` when the tests run as root (CI). One cluster per
//! test process ([`shared`]); each test takes a fresh database
//! ([`PgCluster::fresh_database`]). The cluster is stopped and its data dir
//! removed when the test process exits, however it exits (a watchdog process
//! waits for it).
//!
//! Missing server binaries are a failure with the install step, never a skip.
//!
//! [`shared_tls`] is a second cluster that accepts TCP connections over TLS
//! only (`ssl=on`, a server certificate for 127.0.0.1 and localhost issued by
//! a CA made here, pg_hba.conf `hostssl ... scram-sha-256` and `hostnossl ...
//! reject`); its URLs log in as `sigil` with a password, `verify-full` and
//! `channel_binding=require`. The superuser reaches it over the Unix socket.

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
    tls: Option<TlsSide>,
}

/// The client's side of a TLS-only cluster.
#[derive(Debug)]
pub struct TlsSide {
    /// The CA that issued the server's certificate (PEM).
    pub ca_file: PathBuf,
    /// Password of role `sigil`.
    pub password: String,
}

/// Role the TLS cluster's URLs log in as.
const TLS_USER: &str = "sigil";

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

fn write_owned_by_postgres(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if running_as_root() {
        let mut c = Command::new("chown");
        c.arg("postgres:postgres").arg(path);
        run(c, "chown to postgres")?;
    }
    Ok(())
}

/// A CA, and a server certificate for 127.0.0.1 and localhost it issued:
/// (CA PEM, server certificate PEM, server key PEM).
fn test_pki() -> Result<(String, String, String), String> {
    let e = |e: rcgen::Error| format!("test certificates: {e}");
    let ca_key = rcgen::KeyPair::generate().map_err(e)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "sigil test PostgreSQL CA");
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(e)?
        .signed_by(&key, &issuer)
        .map_err(e)?;
    Ok((ca.pem(), server.pem(), key.serialize_pem()))
}

impl PgCluster {
    /// initdb + start. Panics-free: the error names what to install or fix.
    pub fn start() -> Result<Self, String> {
        Self::start_with(false)
    }

    /// initdb + start a cluster that takes TCP connections over TLS only.
    pub fn start_tls() -> Result<Self, String> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Self, String> {
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
        let (tls_side, ssl_options) = if tls { Self::configure_tls(&dir, &data)? } else { (None, String::new()) };
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut c = as_postgres(&bin.join("pg_ctl"));
            c.arg("-D").arg(&data).arg("-l").arg(dir.join("log")).args(["-w", "-t", "60", "start", "-o"]).arg(format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=300 -c fsync=off{ssl_options}",
                dir.display()
            ));
            c.stdout(Stdio::null()).stderr(Stdio::null());
            match run(c, "pg_ctl start") {
                Ok(()) => {
                    let cluster = Self { port, dir: dir.clone(), bin: bin.clone(), next_db: AtomicU64::new(0), tls: tls_side };
                    if let Some(t) = &cluster.tls {
                        let made = cluster.psql(&format!("CREATE ROLE {TLS_USER} LOGIN PASSWORD '{}'", t.password));
                        if let Err(e) = made {
                            cluster.stop();
                            return Err(e);
                        }
                    }
                    return Ok(cluster);
                }
                Err(e) => last = format!("{e}; server log: {}", std::fs::read_to_string(dir.join("log")).unwrap_or_default()),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    /// Server certificate, key, CA and a hostssl-only pg_hba.conf in the
    /// data dir; the CA also beside it for clients. Returns the server options.
    fn configure_tls(dir: &Path, data: &Path) -> Result<(Option<TlsSide>, String), String> {
        let (ca, cert, key) = test_pki()?;
        write_owned_by_postgres(&data.join("server.crt"), cert.as_bytes(), 0o644)?;
        write_owned_by_postgres(&data.join("server.key"), key.as_bytes(), 0o600)?;
        let hba = "local all postgres trust\n\
                   hostssl all all 127.0.0.1/32 scram-sha-256\n\
                   hostnossl all all 127.0.0.1/32 reject\n";
        write_owned_by_postgres(&data.join("pg_hba.conf"), hba.as_bytes(), 0o600)?;
        let ca_file = dir.join("ca.pem");
        write_owned_by_postgres(&ca_file, ca.as_bytes(), 0o644)?;
        let password = format!("pw-{}", sigil_core::fsutil::random_hex().map_err(|e| e.to_string())?);
        Ok((Some(TlsSide { ca_file, password }), " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into()))
    }

    /// Runs `sql` as the superuser over the Unix socket.
    fn psql(&self, sql: &str) -> Result<(), String> {
        let mut c = as_postgres(&self.bin.join("psql"));
        c.arg("-h").arg(&self.dir).args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        run(c, "psql")
    }

    /// The TLS side of a cluster from [`PgCluster::start_tls`].
    pub fn tls(&self) -> Option<&TlsSide> {
        self.tls.as_ref()
    }

    /// URL of database `db`: user postgres, no password (trust on loopback);
    /// on a TLS cluster user `sigil` with its password, `sslmode=verify-full`
    /// against the test CA and `channel_binding=require`.
    pub fn url(&self, db: &str) -> String {
        match &self.tls {
            None => format!("postgres://postgres@127.0.0.1:{}/{db}", self.port),
            Some(t) => format!(
                "postgres://{TLS_USER}:{}@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}&channel_binding=require",
                t.password,
                self.port,
                t.ca_file.display()
            ),
        }
    }

    /// A superuser connection (TCP on a plain cluster, the Unix socket on a TLS one).
    pub async fn admin(&self) -> tokio_postgres::Client {
        let conninfo = match &self.tls {
            None => self.url("postgres"),
            Some(_) => format!("host={} port={} user=postgres dbname=postgres", self.dir.display(), self.port),
        };
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the test cluster: {e}"));
        tokio::spawn(conn);
        client
    }

    /// Creates a new, empty database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), self.next_db.fetch_add(1, Ordering::SeqCst));
        let owner = if self.tls.is_some() { format!(" OWNER {TLS_USER}") } else { String::new() };
        let client = self.admin().await;
        client.batch_execute(&format!("CREATE DATABASE {name}{owner}")).await.unwrap_or_else(|e| panic!("create database: {e}"));
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
    CLUSTER.get_or_init(|| watched(PgCluster::start()))
}

/// The test process's TLS-only cluster ([`PgCluster::start_tls`]), as [`shared`].
pub fn shared_tls() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| watched(PgCluster::start_tls()))
}

fn watched(started: Result<PgCluster, String>) -> PgCluster {
    let c = started.unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
    if let Err(e) = c.stop_when_gone(std::process::id()) {
        c.stop();
        panic!("{e}");
    }
    c
}
