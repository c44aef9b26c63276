//! The client config files of the `database` output, as text (no I/O).
//!
//! PostgreSQL (libpq): `pg_service.conf` (one `[service]` section; libpq takes
//! each value as the rest of its line) and `conninfo` (one line of
//! `key='value'` pairs for `psql "$(cat conninfo)"` or a driver's DSN). Both
//! say `sslmode=verify-full`: the server certificate must chain to `ca.pem`
//! AND name the host, so a stolen server key for another name cannot
//! impersonate this database.
//!
//! MySQL / MariaDB: `my.cnf` for `--defaults-file`: `[client]` (every client
//! program and the C connectors) carries the address, user and the three TLS
//! files; `ssl-verify-server-cert` goes to `[client-mariadb]`, which only
//! MariaDB clients read (MySQL 8 clients refuse the option as unknown; they
//! are given `--ssl-mode=VERIFY_IDENTITY`, docs/access/databases.md); the
//! database goes to `[mysql]`, the command-line client's group (in `[client]`
//! `mysqldump` would read it as its `--databases` flag).
//!
//! Values were checked by [`crate::config_database::unsafe_value`] (no control
//! characters, quotes or backslashes); quoting here is a second line of defence.

use crate::config_database::DbProtocol;
use std::path::Path;

/// File names of the output.
pub const CERT: &str = "tls.crt";
/// Private key (PKCS#8 PEM).
pub const KEY: &str = "tls.key";
/// CA bundle that verifies the server.
pub const CA: &str = "ca.pem";
/// libpq service file.
pub const PG_SERVICE: &str = "pg_service.conf";
/// libpq connection string.
pub const CONNINFO: &str = "conninfo";
/// MySQL / MariaDB option file.
pub const MY_CNF: &str = "my.cnf";

/// Where the client connects, as whom.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `postgres` or `mysql`.
    pub protocol: DbProtocol,
    /// Server host (checked against the server certificate).
    pub host: &'a str,
    /// Server port.
    pub port: u16,
    /// Database user (the certificate's CN).
    pub user: &'a str,
    /// Database, if any.
    pub database: Option<&'a str>,
    /// libpq service name.
    pub service: &'a str,
}

/// The config files for `target`, naming the files in `dir` (absolute).
pub fn render(target: &Target<'_>, dir: &Path) -> Vec<(&'static str, String)> {
    match target.protocol {
        DbProtocol::Postgres => vec![(PG_SERVICE, pg_service(target, dir)), (CONNINFO, conninfo(target, dir))],
        DbProtocol::Mysql => vec![(MY_CNF, my_cnf(target, dir))],
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// libpq keywords and values, in the order written.
fn pg_pairs(t: &Target<'_>, dir: &Path) -> Vec<(&'static str, String)> {
    let mut v = vec![("host", t.host.to_string()), ("port", t.port.to_string()), ("user", t.user.to_string())];
    if let Some(d) = t.database {
        v.push(("dbname", d.to_string()));
    }
    v.extend([
        ("sslmode", "verify-full".to_string()),
        ("sslcert", path(dir, CERT)),
        ("sslkey", path(dir, KEY)),
        ("sslrootcert", path(dir, CA)),
    ]);
    v
}

fn pg_service(t: &Target<'_>, dir: &Path) -> String {
    let mut s = format!(
        "# Written by Sigil (database output); replaced at each renewal.\n# psql: PGSERVICEFILE={} psql service={}\n[{}]\n",
        path(dir, PG_SERVICE),
        t.service,
        t.service
    );
    for (k, v) in pg_pairs(t, dir) {
        s.push_str(&format!("{k}={v}\n"));
    }
    s
}

/// A libpq conninfo value in single quotes (`\` and `'` escaped).
fn pg_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn conninfo(t: &Target<'_>, dir: &Path) -> String {
    let pairs: Vec<String> = pg_pairs(t, dir).into_iter().map(|(k, v)| format!("{k}={}", pg_quote(&v))).collect();
    format!("{}\n", pairs.join(" "))
}

/// A my.cnf value in double quotes (`\` and `"` escaped).
fn my_quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

fn my_cnf(t: &Target<'_>, dir: &Path) -> String {
    let mut s = format!(
        "# Written by Sigil (database output); replaced at each renewal.\n# mariadb --defaults-file={}\n[client]\nhost={}\nport={}\nuser={}\nprotocol=TCP\nssl-ca={}\nssl-cert={}\nssl-key={}\n\n[client-mariadb]\nssl-verify-server-cert\n",
        path(dir, MY_CNF),
        my_quote(t.host),
        t.port,
        my_quote(t.user),
        my_quote(&path(dir, CA)),
        my_quote(&path(dir, CERT)),
        my_quote(&path(dir, KEY)),
    );
    if let Some(d) = t.database {
        s.push_str(&format!("\n[mysql]\ndatabase={}\n", my_quote(d)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(protocol: DbProtocol) -> Target<'static> {
        Target { protocol, host: "db.internal", port: 5433, user: "app", database: Some("orders"), service: "sigil" }
    }

    #[test]
    fn postgres_files_verify_the_server_fully_with_absolute_paths() {
        let files = render(&target(DbProtocol::Postgres), Path::new("/run/sigil/db"));
        let names: Vec<_> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [PG_SERVICE, CONNINFO]);
        let service = &files[0].1;
        assert!(service.contains("\n[sigil]\nhost=db.internal\nport=5433\nuser=app\ndbname=orders\nsslmode=verify-full\n"), "{service}");
        assert!(service.contains("sslcert=/run/sigil/db/tls.crt\nsslkey=/run/sigil/db/tls.key\nsslrootcert=/run/sigil/db/ca.pem\n"), "{service}");
        assert_eq!(
            files[1].1,
            "host='db.internal' port='5433' user='app' dbname='orders' sslmode='verify-full' sslcert='/run/sigil/db/tls.crt' sslkey='/run/sigil/db/tls.key' sslrootcert='/run/sigil/db/ca.pem'\n"
        );
    }

    #[test]
    fn mysql_file_names_the_tls_files_and_verifies_the_server() {
        let files = render(&target(DbProtocol::Mysql), Path::new("/run/sigil/db"));
        assert_eq!(files.len(), 1);
        let (name, cnf) = &files[0];
        assert_eq!(*name, MY_CNF);
        for line in ["[client]\n", "host=\"db.internal\"\n", "port=5433\n", "user=\"app\"\n", "ssl-ca=\"/run/sigil/db/ca.pem\"\n", "ssl-cert=\"/run/sigil/db/tls.crt\"\n", "ssl-key=\"/run/sigil/db/tls.key\"\n", "[client-mariadb]\nssl-verify-server-cert\n", "[mysql]\ndatabase=\"orders\"\n"] {
            assert!(cnf.contains(line), "{line:?} missing from\n{cnf}");
        }
    }

    #[test]
    fn quoting_escapes_what_would_end_a_value() {
        assert_eq!(pg_quote(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(my_quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn without_a_database_none_is_written() {
        let mut t = target(DbProtocol::Postgres);
        t.database = None;
        assert!(!render(&t, Path::new("/d"))[0].1.contains("dbname"));
        t.protocol = DbProtocol::Mysql;
        assert!(!render(&t, Path::new("/d"))[0].1.contains("[mysql]"));
    }
}
