//! Config of the `database` output: a client certificate whose CN is a database
//! user, and the files PostgreSQL (`pg_service.conf`, `conninfo`) and
//! MySQL/MariaDB (`my.cnf`) clients read. See docs/access/databases.md.
//!
//! Every value here ends up inside a client config file that has no reliable
//! quoting (`pg_service.conf` takes the rest of the line verbatim, `my.cnf`
//! interprets backslash escapes and `#` comments), so values are refused rather
//! than escaped when they carry control characters, quotes or backslashes: a
//! user name like `app\nsslmode=disable` can never add a line.

use super::config::{ConfigError, Dur, FileMode};
use serde::Deserialize;
use std::path::PathBuf;

/// Longest user, host, database or service name accepted (bytes).
pub const MAX_VALUE_LEN: usize = 255;

/// Which client files to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbProtocol {
    /// PostgreSQL: `pg_service.conf` and `conninfo`.
    Postgres,
    /// MySQL / MariaDB: `my.cnf`.
    Mysql,
}

impl DbProtocol {
    /// The server's usual port.
    pub fn default_port(self) -> u16 {
        match self {
            DbProtocol::Postgres => 5432,
            DbProtocol::Mysql => 3306,
        }
    }

    /// The name used in config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DbProtocol::Postgres => "postgres",
            DbProtocol::Mysql => "mysql",
        }
    }
}

fn default_service() -> String {
    "sigil".into()
}

/// `type: database`: `tls.crt`, `tls.key`, `ca.pem` and the client config files in `dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseOutput {
    /// Directory receiving the files (created 0700; atomic generations).
    pub dir: PathBuf,
    /// `postgres` or `mysql` (MariaDB too).
    pub protocol: DbProtocol,
    /// Database user: the certificate's CN, allowed by a role's `database.users`.
    pub user: String,
    /// Server host name or address the client connects to (verified against the server certificate).
    pub host: String,
    /// Server port (default 5432 / 3306).
    #[serde(default)]
    pub port: Option<u16>,
    /// Database to connect to (PostgreSQL default: the user's name; MySQL: none).
    #[serde(default)]
    pub database: Option<String>,
    /// PostgreSQL service name in `pg_service.conf` (default `sigil`).
    #[serde(default = "default_service")]
    pub service: String,
    /// CA (PEM) of the server certificate when it is not a Sigil database-server
    /// certificate; copied to `ca.pem` at each renewal. Default: the Sigil database CA bundle.
    #[serde(default)]
    pub server_ca_file: Option<PathBuf>,
    /// Requested certificate lifetime (default: the broker's; capped by the role).
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Owner of the written files (user name or uid; default the agent's user).
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the written files (group name or gid; default the agent's group).
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the written files, an octal string (default "0600", "0640" with `group`).
    #[serde(default)]
    pub mode: Option<FileMode>,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// Why a value cannot go into a client config file, if it cannot.
pub fn unsafe_value(v: &str) -> Option<&'static str> {
    if v.is_empty() {
        Some("is empty")
    } else if v.len() > MAX_VALUE_LEN {
        Some("is longer than 255 bytes")
    } else if v.chars().any(|c| c.is_control()) {
        Some("contains a control character")
    } else if v.chars().any(|c| matches!(c, '"' | '\'' | '\\')) {
        Some("contains a quote or backslash (client config files cannot carry them safely)")
    } else if v.trim() != v {
        Some("starts or ends with white space")
    } else {
        None
    }
}

/// `field.name` in agent config errors; `--name` for the one-shot command (`field` empty).
fn at(field: &str, name: &str) -> String {
    if field.is_empty() {
        format!("--{}", name.replace('_', "-"))
    } else {
        format!("{field}.{name}")
    }
}

fn check(field: String, v: &str) -> Result<(), ConfigError> {
    match unsafe_value(v) {
        Some(why) => Err(invalid(field, format!("{v:?} {why}"))),
        None => Ok(()),
    }
}

impl DatabaseOutput {
    /// The port to write.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.protocol.default_port())
    }

    /// Checks what serde cannot; returns the paths the output owns.
    pub fn validate(&self, field: &str) -> Result<Vec<String>, ConfigError> {
        check(at(field, "user"), &self.user)?;
        check(at(field, "host"), &self.host)?;
        if self.host.contains(char::is_whitespace) {
            return Err(invalid(at(field, "host"), format!("{:?} contains white space", self.host)));
        }
        if let Some(d) = &self.database {
            check(at(field, "database"), d)?;
        }
        check(at(field, "service"), &self.service)?;
        if self.service.contains(['[', ']']) {
            return Err(invalid(at(field, "service"), "may not contain [ or ]"));
        }
        if self.port == Some(0) {
            return Err(invalid(at(field, "port"), "must be 1..65535"));
        }
        // The paths of the files are written into the config files too.
        check(at(field, "dir"), &self.dir.to_string_lossy())?;
        if let Some(p) = &self.server_ca_file {
            if p.as_os_str().is_empty() {
                return Err(invalid(at(field, "server_ca_file"), "is empty"));
            }
        }
        Ok(vec![self.dir.display().to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(user: &str) -> DatabaseOutput {
        DatabaseOutput {
            dir: "/run/db".into(),
            protocol: DbProtocol::Postgres,
            user: user.into(),
            host: "db.example.org".into(),
            port: None,
            database: None,
            service: default_service(),
            server_ca_file: None,
            ttl: None,
            owner: None,
            group: None,
            mode: None,
        }
    }

    #[test]
    fn a_value_that_could_add_a_line_or_escape_quoting_is_refused() {
        for bad in ["app\nsslmode=disable", "app\r", "a'b", "a\"b", "a\\b", " app", "", &"x".repeat(256)] {
            let e = out(bad).validate("outputs[0]").unwrap_err().to_string();
            assert!(e.contains("outputs[0].user"), "{bad:?}: {e}");
        }
        assert!(out("app_rw-1@x.y").validate("o").is_ok());
    }

    #[test]
    fn ports_default_per_protocol_and_zero_is_refused() {
        let mut o = out("app");
        assert_eq!(o.port(), 5432);
        o.protocol = DbProtocol::Mysql;
        assert_eq!(o.port(), 3306);
        o.port = Some(0);
        assert!(o.validate("o").unwrap_err().to_string().contains("o.port"));
    }

    #[test]
    fn a_host_with_spaces_and_a_dir_with_a_newline_are_refused() {
        let mut o = out("app");
        o.host = "a b".into();
        assert!(o.validate("o").unwrap_err().to_string().contains("o.host"));
        let mut o = out("app");
        o.dir = "/tmp/x\nsslmode=disable".into();
        assert!(o.validate("o").unwrap_err().to_string().contains("o.dir"));
    }
}
