//! `ssh` and `ssh-host`: OpenSSH certificates for keys generated here, written
//! with the files OpenSSH reads around them ([`super::ssh_files`]).
//!
//! Each generation is written whole and switched with one rename
//! ([`crate::atomic_dir`]), so a key never sits beside another key's
//! certificate. Renewed at half-life like SVIDs, and when a CA key is
//! published or retired (the outputs carry the CA keys).
//!
//! File modes: the `ssh` output writes every file with the output's access
//! (default 0600 in a 0700 directory). The `ssh-host` output is laid out like
//! /etc/ssh: the host private key with the output's mode (default 0600; sshd
//! refuses a host key others can read), the public files 0644 in 0755
//! directories, because sshd opens `AuthorizedPrincipalsFile` as the user
//! logging in.

use super::cloud_files::blocking;
use super::ssh_files::{self, File, PRINCIPALS_DIR};
use super::ssh_key::{self, SshKey};
use super::{broker_err, Output, OutputError};
use crate::atomic_dir;
use crate::config::Dur;
use crate::config_ssh::{SshHostOutput, SshKeyType, SshOutput};
use crate::schedule::Lifetime;
use crate::session::Session;
use async_trait::async_trait;
use sigil_core::safe_fs::Access;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// What a user certificate is asked for.
#[derive(Debug, Clone)]
pub struct UserCertRequest {
    /// Login names.
    pub principals: Vec<String>,
    /// Extensions (empty: every extension the roles allow).
    pub extensions: Vec<String>,
    /// Key type to generate.
    pub key_type: SshKeyType,
    /// Requested lifetime in seconds (0: role / broker maximum).
    pub ttl_seconds: i64,
}

/// What a host certificate is asked for.
#[derive(Debug, Clone)]
pub struct HostCertRequest {
    /// Host names / addresses.
    pub names: Vec<String>,
    /// Key type to generate.
    pub key_type: SshKeyType,
    /// Requested lifetime in seconds (0: role / broker maximum).
    pub ttl_seconds: i64,
}

/// A certificate with its key, as issued.
#[derive(Debug)]
pub struct Issued {
    /// The generated key.
    pub key: SshKey,
    /// The broker's answer (certificate line, validity, CA keys).
    pub cert: pb::SshCertificate,
}

async fn issue(client: &mut SigilClient<Channel>, cert_type: &str, t: SshKeyType, principals: Vec<String>, extensions: Vec<String>, ttl_seconds: i64) -> Result<Issued, OutputError> {
    let key = blocking_key(t).await?;
    let what = format!("SSH {cert_type} certificate for {}", principals.join(","));
    let cert = client
        .issue_ssh_certificate(pb::IssueSshCertificateRequest {
            cert_type: cert_type.into(),
            public_key: key.public.to_line(""),
            principals,
            extensions,
            ttl_seconds,
        })
        .await
        .map_err(|s| broker_err(what, s))?
        .into_inner();
    Ok(Issued { key, cert })
}

/// Key generation (RSA takes a while) off the async workers.
async fn blocking_key(t: SshKeyType) -> Result<SshKey, OutputError> {
    match tokio::task::spawn_blocking(move || ssh_key::generate(t, "sigil")).await {
        Ok(r) => r.map_err(|e| OutputError::Key(e.to_string())),
        Err(e) => Err(OutputError::Key(format!("key task failed: {e}"))),
    }
}

/// Issues a user certificate for a new key.
pub async fn issue_user(client: &mut SigilClient<Channel>, r: &UserCertRequest) -> Result<Issued, OutputError> {
    issue(client, "user", r.key_type, r.principals.clone(), r.extensions.clone(), r.ttl_seconds).await
}

/// Issues a host certificate for a new key.
pub async fn issue_host(client: &mut SigilClient<Channel>, r: &HostCertRequest) -> Result<Issued, OutputError> {
    issue(client, "host", r.key_type, r.names.clone(), Vec::new(), r.ttl_seconds).await
}

fn borrow(files: &[File]) -> Vec<(&str, &[u8])> {
    files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect()
}

/// Writes the `ssh` output files of `issued` into `dir` (absolute) with `access`.
pub async fn write_user(dir: &Path, hosts: &[String], t: SshKeyType, issued: &Issued, access: Access) -> Result<(), OutputError> {
    let files = ssh_files::user_files(dir, t, hosts, &issued.key.private_pem, &issued.cert.certificate, &issued.cert.host_ca_public_keys);
    let dir = dir.to_path_buf();
    blocking(move || atomic_dir::write_with(&dir, &borrow(&files), &access)).await
}

/// Access of the public `ssh-host` files: readable by all, like /etc/ssh/*.pub.
fn public_access(a: Access) -> Access {
    Access { mode: 0o644, ..a }
}

/// Writes the `ssh-host` output files of `issued` into `dir` (absolute); the
/// host key gets `access`, the rest [`public_access`].
pub async fn write_host(dir: &Path, t: SshKeyType, issued: &Issued, principals: Option<&std::collections::BTreeMap<String, Vec<String>>>, access: Access) -> Result<(), OutputError> {
    let (key, cert) = ssh_files::host_key_names(t);
    let public = public_access(access);
    let main: Vec<(String, Vec<u8>, Access)> = vec![
        (key, issued.key.private_pem.as_bytes().to_vec(), access),
        (cert, format!("{}\n", issued.cert.certificate.trim()).into_bytes(), public),
        ("user_ca.pub".into(), ssh_files::user_ca(&issued.cert.user_ca_public_keys).into_bytes(), public),
        ("sshd_config.snippet".into(), ssh_files::sshd_snippet(dir, t, principals.is_some()).into_bytes(), public),
    ];
    let logins: Option<Vec<(String, Vec<u8>, Access)>> =
        principals.map(|m| m.iter().map(|(login, p)| (login.clone(), ssh_files::principals_file(p).into_bytes(), public)).collect());
    let dir: PathBuf = dir.to_path_buf();
    blocking(move || {
        // The principals first: the snippet that names them switches in last.
        if let Some(files) = &logins {
            atomic_dir::write_each(&dir.join(PRINCIPALS_DIR), &each(files), &public)?;
        }
        atomic_dir::write_each(&dir, &each(&main), &public)
    })
    .await
}

fn each(files: &[(String, Vec<u8>, Access)]) -> Vec<(&str, &[u8], Access)> {
    files.iter().map(|(n, d, a)| (n.as_str(), d.as_slice(), *a)).collect()
}

fn lifetime(session: &Session, c: &pb::SshCertificate) -> Lifetime {
    Lifetime { received_at: session.now(), expires_at: c.valid_before }
}

/// The `ssh` output.
#[derive(Debug, Clone)]
pub struct SshDir {
    cfg: SshOutput,
    access: Access,
}

impl SshDir {
    /// From config.
    pub fn new(cfg: SshOutput, access: Access) -> Self {
        Self { cfg, access }
    }
}

#[async_trait]
impl Output for SshDir {
    fn name(&self) -> String {
        format!("ssh:{}", self.cfg.dir.display())
    }

    fn carries_bundle(&self) -> bool {
        true
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let c = &self.cfg;
        let r = UserCertRequest { principals: c.principals.clone(), extensions: c.extensions.clone(), key_type: c.key_type, ttl_seconds: Dur::secs(c.ttl) };
        let issued = issue_user(&mut session.client().await?, &r).await?;
        write_user(&c.dir, &c.hosts, c.key_type, &issued, self.access).await?;
        Ok(lifetime(session, &issued.cert))
    }
}

/// The `ssh-host` output.
#[derive(Debug, Clone)]
pub struct SshHostDir {
    cfg: SshHostOutput,
    access: Access,
}

impl SshHostDir {
    /// From config.
    pub fn new(cfg: SshHostOutput, access: Access) -> Self {
        Self { cfg, access }
    }
}

#[async_trait]
impl Output for SshHostDir {
    fn name(&self) -> String {
        format!("ssh-host:{}", self.cfg.dir.display())
    }

    fn carries_bundle(&self) -> bool {
        true
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let c = &self.cfg;
        let r = HostCertRequest { names: c.names.clone(), key_type: c.key_type, ttl_seconds: Dur::secs(c.ttl) };
        let issued = issue_host(&mut session.client().await?, &r).await?;
        write_host(&c.dir, c.key_type, &issued, c.authorized_principals.as_ref(), self.access).await?;
        Ok(lifetime(session, &issued.cert))
    }
}
