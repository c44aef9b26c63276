//! `database`: a client certificate for a database user (CN = user, signed by
//! the broker's database CA) with the files PostgreSQL and MySQL/MariaDB
//! clients read, in one directory switched atomically ([`crate::atomic_dir`]):
//!
//! ```text
//! dir/
//!   tls.crt          client certificate (CN = user)
//!   tls.key          its private key, PKCS#8 PEM, generated here, never sent
//!   ca.pem           what verifies the server: the database CA bundle, or server_ca_file
//!   pg_service.conf  postgres: [service] with sslmode=verify-full and absolute paths
//!   conninfo         postgres: the same as one connection string
//!   my.cnf           mysql: [client] ssl-ca / ssl-cert / ssl-key, server verification
//! ```
//!
//! The config files name `dir/tls.crt` etc. (the stable symlinks), so they
//! never change between renewals except when the settings do. When the
//! database CA is rotated, `ca.pem` (the database CA bundle) follows the
//! broker within one bundle poll ([`crate::bundle::AccessCa`]). The one-shot
//! commands `sigil db cert` and `sigil db server-cert` call the same functions
//! with the admin CLI's connection.

use super::ca_file::LastFiles;
use super::cloud_files::blocking;
use super::database_conf::{self, Target, CA, CERT, KEY};
use super::{broker_err, Output, OutputError};
use crate::atomic_dir;
use crate::bundle::AccessPurpose;
use crate::config::{DatabaseOutput, Dur};
use crate::schedule::Lifetime;
use crate::session::Session;
use async_trait::async_trait;
use sigil_core::safe_fs::Access;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// `IssueTlsCertificateRequest.kind` of a database client certificate.
pub const KIND_CLIENT: &str = "database-client";
/// `IssueTlsCertificateRequest.kind` of a database server certificate.
pub const KIND_SERVER: &str = "database-server";

/// Files of `sigil db server-cert`: `ssl_cert_file` / `ssl-cert`.
pub const SERVER_CERT: &str = "server.crt";
/// `ssl_key_file` / `ssl-key`.
pub const SERVER_KEY: &str = "server.key";
/// `ssl_ca_file` / `ssl-ca`: the database CA bundle that verifies client certificates.
pub const CLIENT_CA: &str = "client-ca.pem";

/// The database output.
#[derive(Debug)]
pub struct DatabaseDir {
    cfg: DatabaseOutput,
    access: Access,
    last: LastFiles,
}

impl DatabaseDir {
    /// From config.
    pub fn new(cfg: DatabaseOutput, access: Access) -> Self {
        Self { cfg, access, last: LastFiles::default() }
    }
}

#[async_trait]
impl Output for DatabaseDir {
    fn name(&self) -> String {
        format!("database:{}", self.cfg.dir.display())
    }

    /// `ca.pem` is the database CA bundle unless `server_ca_file` replaces it.
    fn access_ca(&self) -> Option<AccessPurpose> {
        self.cfg.server_ca_file.is_none().then_some(AccessPurpose::Database)
    }

    async fn rewrite_ca(&self, bundle_pem: &str) -> Result<bool, OutputError> {
        let Some((dir, files)) = self.last.with_ca(CA, bundle_pem) else { return Ok(false) };
        write_dir(dir, files, self.access).await?;
        Ok(true)
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let mut client = session.client().await?;
        let (dir, files, issued) = client_files(&mut client, &self.cfg).await?;
        write_dir(dir.clone(), files.clone(), self.access).await?;
        self.last.remember(dir, files);
        Ok(Lifetime { received_at: session.now(), expires_at: issued.expires_at })
    }
}

/// Generates a key here and asks for a certificate of `kind` for it.
async fn issue(client: &mut SigilClient<Channel>, req: pb::IssueTlsCertificateRequest, what: String) -> Result<(rcgen::KeyPair, pb::TlsCertificate), OutputError> {
    let (kp, csr) = sigil_core::csr::key_and_csr().map_err(|e| OutputError::Key(e.to_string()))?;
    let cert = client
        .issue_tls_certificate(pb::IssueTlsCertificateRequest { csr, ..req })
        .await
        .map_err(|s| broker_err(what.clone(), s))?
        .into_inner();
    if cert.certificate_pem.is_empty() || cert.ca_bundle_pem.is_empty() {
        return Err(OutputError::Invalid(format!("the broker sent no certificate or no CA bundle for the {what}")));
    }
    Ok((kp, cert))
}

/// `dir` made absolute (the config files name the files by absolute path).
fn absolute(dir: &Path) -> Result<PathBuf, OutputError> {
    std::path::absolute(dir).map_err(|e| OutputError::Invalid(format!("cannot make {} absolute: {e}", dir.display())))
}

/// Reads `server_ca_file` (bounded) and checks it holds certificates.
fn read_server_ca(path: &Path) -> Result<String, OutputError> {
    let text = sigil_core::pem::read_file(path).map_err(|source| OutputError::ReadCa { path: path.to_path_buf(), source })?;
    match sigil_core::pem::certificates(&text, &path.display().to_string()) {
        Ok(c) if !c.is_empty() => Ok(text),
        Ok(_) => Err(OutputError::Invalid(format!("server_ca_file {} holds no certificate", path.display()))),
        Err(e) => Err(OutputError::Invalid(e.to_string())),
    }
}

/// Issues a client certificate for `cfg.user` and writes the whole output
/// directory as one generation. Returns what the broker sent.
pub async fn write_client_dir(client: &mut SigilClient<Channel>, cfg: &DatabaseOutput, access: Access) -> Result<pb::TlsCertificate, OutputError> {
    let (dir, files, cert) = client_files(client, cfg).await?;
    write_dir(dir, files, access).await?;
    Ok(cert)
}

/// The files of one generation of the output (a certificate issued now) and
/// its absolute directory.
async fn client_files(client: &mut SigilClient<Channel>, cfg: &DatabaseOutput) -> Result<(PathBuf, Vec<(&'static str, String)>, pb::TlsCertificate), OutputError> {
    let server_ca = match &cfg.server_ca_file {
        Some(p) => {
            let p = p.clone();
            Some(tokio::task::spawn_blocking(move || read_server_ca(&p)).await.map_err(|e| OutputError::Invalid(format!("file task failed: {e}")))??)
        }
        None => None,
    };
    let dir = absolute(&cfg.dir)?;
    let req = pb::IssueTlsCertificateRequest { kind: KIND_CLIENT.into(), user: cfg.user.clone(), ttl_seconds: Dur::secs(cfg.ttl), ..Default::default() };
    let (kp, cert) = issue(client, req, format!("database client certificate for user {}", cfg.user)).await?;
    let target = Target {
        protocol: cfg.protocol,
        host: &cfg.host,
        port: cfg.port(),
        user: &cfg.user,
        database: cfg.database.as_deref(),
        service: &cfg.service,
    };
    let mut files: Vec<(&'static str, String)> = vec![
        (CERT, cert.certificate_pem.clone()),
        (KEY, kp.serialize_pem()),
        (CA, server_ca.unwrap_or_else(|| cert.ca_bundle_pem.clone())),
    ];
    files.extend(database_conf::render(&target, &dir));
    Ok((dir, files, cert))
}

/// Issues a server certificate for `names` (DNS names / IP addresses) and writes
/// `server.crt`, `server.key` and `client-ca.pem` into `dir` as one generation.
pub async fn write_server_dir(client: &mut SigilClient<Channel>, names: &[String], ttl: Option<Dur>, dir: &Path, access: Access) -> Result<pb::TlsCertificate, OutputError> {
    let dir = absolute(dir)?;
    let req = pb::IssueTlsCertificateRequest { kind: KIND_SERVER.into(), server_names: names.to_vec(), ttl_seconds: Dur::secs(ttl), ..Default::default() };
    let (kp, cert) = issue(client, req, format!("database server certificate for {}", names.join(", "))).await?;
    let files = vec![(SERVER_CERT, cert.certificate_pem.clone()), (SERVER_KEY, kp.serialize_pem()), (CLIENT_CA, cert.ca_bundle_pem.clone())];
    write_dir(dir, files, access).await?;
    Ok(cert)
}

async fn write_dir(dir: PathBuf, files: Vec<(&'static str, String)>, access: Access) -> Result<(), OutputError> {
    blocking(move || {
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_bytes())).collect();
        atomic_dir::write_with(&dir, &refs, &access)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_pem_follows_the_database_ca_unless_server_ca_file_replaces_it() {
        let cfg = |extra: &str| -> DatabaseOutput { serde_norway::from_str(&format!("dir: /run/db\nprotocol: postgres\nuser: app\nhost: db\n{extra}")).unwrap() };
        assert_eq!(DatabaseDir::new(cfg(""), Access::PRIVATE).access_ca(), Some(AccessPurpose::Database));
        assert_eq!(DatabaseDir::new(cfg("server_ca_file: /etc/ssl/db-ca.pem\n"), Access::PRIVATE).access_ca(), None);
    }

    #[test]
    fn a_server_ca_file_without_a_certificate_or_too_large_is_refused_with_its_path() {
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("not-a-ca.pem");
        std::fs::write(&empty, "hello\n").unwrap();
        let e = read_server_ca(&empty).unwrap_err().to_string();
        assert!(e.contains("not-a-ca.pem"), "{e}");
        let big = d.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; sigil_core::pem::MAX_PEM_BYTES + 1]).unwrap();
        let e = read_server_ca(&big).unwrap_err().to_string();
        assert!(e.contains("big.pem"), "{e}");
    }
}
