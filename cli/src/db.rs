//! `sigil db cert` (a database client certificate and the client config files,
//! the same as the agent's `database` output) and `sigil db server-cert` (a
//! database server certificate and the CA bundle that verifies clients).

use super::Ctx;
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use sigil_agent::config::{resolve_access, ConfigError, DatabaseOutput, DbProtocol, Dur, FileMode};
use sigil_agent::outputs::database;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(crate) enum DbCmd {
    /// Issue a client certificate (CN = database user) and write tls.crt, tls.key,
    /// ca.pem and pg_service.conf + conninfo (postgres) or my.cnf (mysql) into --dir.
    Cert(CertArgs),
    /// Issue a server certificate for --names and write server.crt, server.key and
    /// client-ca.pem (the database CA bundle for ssl_ca_file / ssl-ca) into --dir.
    #[command(name = "server-cert")]
    ServerCert(ServerCertArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Protocol {
    Postgres,
    Mysql,
}

/// `--owner`, `--group`, `--mode` of the one-shots that write a directory
/// (shared with `sigil app cert`).
#[derive(Debug, Args)]
pub(crate) struct FileArgs {
    /// Owner of the written files (user name or uid; default: this user).
    #[arg(long)]
    owner: Option<String>,
    /// Group of the written files (group name or gid).
    #[arg(long)]
    group: Option<String>,
    /// Mode of the files, octal ("0600" default, "0640" with --group).
    #[arg(long, value_parser = parse_mode)]
    mode: Option<FileMode>,
}

impl FileArgs {
    /// The owner, group and mode, names looked up now.
    pub(crate) fn access(&self) -> Result<sigil_core::safe_fs::Access> {
        resolve_access("--", &self.owner, &self.group, self.mode).map_err(plain)
    }
}

fn parse_mode(s: &str) -> Result<FileMode, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub(crate) struct CertArgs {
    /// Database user: the certificate's CN (a role's database.users must allow it).
    #[arg(long)]
    user: String,
    /// Which client files to write.
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// Server host name or address (checked against the server certificate).
    #[arg(long)]
    host: String,
    /// Server port (default 5432 / 3306).
    #[arg(long)]
    port: Option<u16>,
    /// Database to connect to.
    #[arg(long)]
    database: Option<String>,
    /// PostgreSQL service name in pg_service.conf.
    #[arg(long, default_value = "sigil")]
    service: String,
    /// CA (PEM) of the server certificate when it is not a Sigil database-server one.
    #[arg(long)]
    server_ca_file: Option<PathBuf>,
    /// Lifetime, e.g. 1h (default: broker default, capped by the role).
    #[arg(long)]
    ttl: Option<humantime::Duration>,
    /// Output directory (created 0700 if missing).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    files: FileArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ServerCertArgs {
    /// DNS names and IP addresses of the server (comma-separated or repeated); a role's
    /// database.server_names must allow each.
    #[arg(long, value_delimiter = ',', required = true)]
    names: Vec<String>,
    /// Lifetime, e.g. 24h (default: broker default, capped by the role).
    #[arg(long)]
    ttl: Option<humantime::Duration>,
    /// Output directory (created 0700 if missing).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    files: FileArgs,
}

/// A config error worded for the command line (not "invalid agent config").
fn plain(e: ConfigError) -> anyhow::Error {
    match e {
        ConfigError::Invalid { field, message } => anyhow::anyhow!("{}: {message}", field.replace("--.", "--")),
        other => other.into(),
    }
}

fn dur(t: Option<humantime::Duration>) -> Option<Dur> {
    t.map(|d| Dur(d.into()))
}

pub(crate) async fn run(ctx: &Ctx, c: DbCmd) -> Result<()> {
    match c {
        DbCmd::Cert(a) => {
            let cfg = DatabaseOutput {
                dir: a.dir,
                protocol: match a.protocol {
                    Protocol::Postgres => DbProtocol::Postgres,
                    Protocol::Mysql => DbProtocol::Mysql,
                },
                user: a.user,
                host: a.host,
                port: a.port,
                database: a.database,
                service: a.service,
                server_ca_file: a.server_ca_file,
                ttl: dur(a.ttl),
                owner: a.files.owner,
                group: a.files.group,
                mode: a.files.mode,
            };
            cfg.validate("").map_err(plain)?;
            let access = resolve_access("--", &cfg.owner, &cfg.group, cfg.mode).map_err(plain)?;
            let mut client = ctx.client().await?;
            let cert = database::write_client_dir(&mut client, &cfg, access).await?;
            eprintln!(
                "database client certificate for user {} (expires at {}) written to {}",
                cfg.user,
                super::when::rfc3339(cert.expires_at),
                cfg.dir.display()
            );
            Ok(())
        }
        DbCmd::ServerCert(a) => {
            let access = resolve_access("--", &a.files.owner, &a.files.group, a.files.mode).map_err(plain)?;
            let mut client = ctx.client().await?;
            let cert = database::write_server_dir(&mut client, &a.names, dur(a.ttl), &a.dir, access).await?;
            eprintln!(
                "database server certificate for {} (expires at {}) written to {}",
                a.names.join(", "),
                super::when::rfc3339(cert.expires_at),
                a.dir.display()
            );
            Ok(())
        }
    }
}
