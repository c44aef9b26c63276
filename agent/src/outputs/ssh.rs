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
use super::ssh_files::{self, File, KRL_FILE, PRINCIPALS_DIR};
use super::ssh_key::{self, SshKey};
use super::{broker_err, KrlRewrite, Output, OutputError};
use crate::atomic_dir;
use crate::bundle::SshKrl;
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
use zeroize::Zeroizing;

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

/// The KRL to write now: the broker's (checked, [`SshKrl::new`]) unless it is
/// older than `held`; `held` when the broker has none or its answer is
/// unusable (the problem is logged: a KRL never stops a host certificate);
/// without either, [`SshKrl::empty`], so that the file the snippet names
/// always exists.
pub async fn current_krl(client: &mut SigilClient<Channel>, held: Option<&SshKrl>, what: &str) -> SshKrl {
    let asked = client.get_ssh_ca_public_keys(pb::GetSshCaPublicKeysRequest { include_krl: true, known_krl_sha256: Vec::new() }).await;
    let chosen = match asked {
        Ok(k) => {
            let k = k.into_inner();
            if k.krl_sha256.is_empty() {
                tracing::warn!(output = %what, "the broker sent no SSH KRL; keeping the list held (an empty one at first)");
            }
            let (chosen, problem) = SshKrl::choose(&k, held);
            if let Some(e) = problem {
                tracing::warn!(output = %what, error = %e, "keeping the SSH KRL held");
            }
            chosen
        }
        Err(s) => {
            tracing::warn!(output = %what, error = %broker_err("SSH KRL", s), "keeping the SSH KRL held");
            held.cloned()
        }
    };
    chosen.unwrap_or_else(SshKrl::empty)
}

/// The files of an `ssh-host` directory (not its `principals/`), each with
/// its access; the host private key among them, so never printed.
#[derive(Clone)]
pub struct HostFiles {
    dir: PathBuf,
    files: Vec<(String, Zeroizing<Vec<u8>>, Access)>,
    directory_access: Access,
    krl: SshKrl,
}

impl std::fmt::Debug for HostFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.files.iter().map(|(n, _, _)| n.as_str()).collect();
        f.debug_struct("HostFiles").field("dir", &self.dir).field("files", &names).field("krl", &self.krl).finish_non_exhaustive()
    }
}

impl HostFiles {
    /// The KRL these files hold.
    pub fn krl(&self) -> &SshKrl {
        &self.krl
    }

    /// The same files with `krl` as the KRL file; `None` unless it replaces
    /// the one they hold ([`SshKrl::replaces`]: another list, not older).
    pub fn with_krl(&self, krl: &SshKrl) -> Option<HostFiles> {
        if !krl.replaces(&self.krl) {
            return None;
        }
        let mut next = self.clone();
        let slot = next.files.iter_mut().find(|(n, _, _)| n == KRL_FILE)?;
        slot.1 = Zeroizing::new(krl.bytes.to_vec());
        next.krl = krl.clone();
        Some(next)
    }

    /// Writes them as the directory's new generation.
    pub async fn write(&self) -> Result<(), OutputError> {
        let me = self.clone();
        blocking(move || {
            let files: Vec<(&str, &[u8], Access)> = me.files.iter().map(|(n, d, a)| (n.as_str(), d.as_slice(), *a)).collect();
            atomic_dir::write_each(&me.dir, &files, &me.directory_access)
        })
        .await
    }
}

/// Writes the `ssh-host` output files of `issued` into `dir` (absolute); the
/// host key gets `access`, the rest [`public_access`]. The KRL is written in
/// the same generation as the snippet naming it (`RevokedKeys`: sshd refuses
/// every key while that file is missing). Returns what it wrote.
pub async fn write_host(
    dir: &Path,
    t: SshKeyType,
    issued: &Issued,
    principals: Option<&std::collections::BTreeMap<String, Vec<String>>>,
    krl: &SshKrl,
    access: Access,
) -> Result<HostFiles, OutputError> {
    let (key, cert) = ssh_files::host_key_names(t);
    let public = public_access(access);
    let main: Vec<(String, Vec<u8>, Access)> = vec![
        (key, issued.key.private_pem.as_bytes().to_vec(), access),
        (cert, format!("{}\n", issued.cert.certificate.trim()).into_bytes(), public),
        ("user_ca.pub".into(), ssh_files::user_ca(&issued.cert.user_ca_public_keys).into_bytes(), public),
        (KRL_FILE.into(), krl.bytes.to_vec(), public),
        ("sshd_config.snippet".into(), ssh_files::sshd_snippet(dir, t, principals.is_some()).into_bytes(), public),
    ];
    let logins: Option<Vec<(String, Vec<u8>, Access)>> =
        principals.map(|m| m.iter().map(|(login, p)| (login.clone(), ssh_files::principals_file(p).into_bytes(), public)).collect());
    let files = main.into_iter().map(|(n, d, a)| (n, Zeroizing::new(d), a)).collect();
    let written = HostFiles { dir: dir.to_path_buf(), files, directory_access: public, krl: krl.clone() };
    if let Some(files) = logins {
        // The principals first: the snippet that names them switches in last.
        let d = dir.join(PRINCIPALS_DIR);
        blocking(move || atomic_dir::write_each(&d, &each(&files), &public)).await?;
    }
    written.write().await?;
    Ok(written)
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
#[derive(Debug)]
pub struct SshHostDir {
    cfg: SshHostOutput,
    access: Access,
    /// What the last refresh wrote, so that a KRL change rewrites the
    /// directory without a new certificate.
    last: std::sync::Mutex<Option<HostFiles>>,
}

impl SshHostDir {
    /// From config.
    pub fn new(cfg: SshHostOutput, access: Access) -> Self {
        Self { cfg, access, last: std::sync::Mutex::new(None) }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<HostFiles>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut client = session.client().await?;
        let issued = issue_host(&mut client, &r).await?;
        let held = self.last().as_ref().map(|h| h.krl().clone());
        let krl = current_krl(&mut client, held.as_ref(), &self.name()).await;
        let written = write_host(&c.dir, c.key_type, &issued, c.authorized_principals.as_ref(), &krl, self.access).await?;
        *self.last() = Some(written);
        Ok(lifetime(session, &issued.cert))
    }

    fn follows_krl(&self) -> bool {
        true
    }

    async fn rewrite_krl(&self, krl: &SshKrl) -> Result<KrlRewrite, OutputError> {
        let Some(held) = self.last().clone() else { return Ok(KrlRewrite::Refresh) };
        // This list or a newer one is written already: nothing to do.
        let Some(next) = held.with_krl(krl) else { return Ok(KrlRewrite::Unchanged) };
        next.write().await?;
        tracing::info!(output = %self.name(), version = krl.version, bytes = krl.bytes.len(), "SSH KRL rewritten, host certificate kept");
        *self.last() = Some(next);
        Ok(KrlRewrite::Written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_core::ssh::krl::{digest, Krl};

    fn krl(version: u64) -> SshKrl {
        let bytes = Krl::new(version, 0, "test").encode();
        debug_assert!(version > 0, "0 is the empty list's");
        let sha = digest(&bytes);
        SshKrl::new(bytes, &sha).unwrap()
    }

    fn issued() -> Issued {
        let key = ssh_key::generate(SshKeyType::Ed25519, "t").unwrap();
        let cert = pb::SshCertificate {
            certificate: "ssh-ed25519-cert-v01@openssh.com AAAAtest host".into(),
            user_ca_public_keys: vec!["ssh-ed25519 AAAAuser sigil".into()],
            ..Default::default()
        };
        Issued { key, cert }
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    #[tokio::test]
    async fn a_new_krl_rewrites_only_the_list_and_keeps_the_host_key_and_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("host");
        let (one, two) = (krl(1), krl(2));
        let written = write_host(&dir, SshKeyType::Ed25519, &issued(), None, &one, Access::PRIVATE).await.unwrap();
        assert_eq!(read(&dir, KRL_FILE), *one.bytes);
        let snippet = String::from_utf8(read(&dir, "sshd_config.snippet")).unwrap();
        assert!(snippet.contains(&format!("RevokedKeys {}\n", dir.join(KRL_FILE).display())), "{snippet}");
        let key = read(&dir, "ssh_host_ed25519_key");
        let cert = read(&dir, "ssh_host_ed25519_key-cert.pub");

        assert!(written.with_krl(&one).is_none(), "the list it holds is not written again");
        let next = written.with_krl(&two).unwrap();
        assert!(next.with_krl(&one).is_none(), "an older list never replaces a newer one");
        next.write().await.unwrap();
        assert_eq!(read(&dir, KRL_FILE), *two.bytes);
        assert_eq!(read(&dir, "ssh_host_ed25519_key"), key);
        assert_eq!(read(&dir, "ssh_host_ed25519_key-cert.pub"), cert);
        assert_eq!(read(&dir, "sshd_config.snippet"), snippet.as_bytes());
        let debug = format!("{next:?}");
        assert!(!debug.contains("PRIVATE KEY") && debug.contains(KRL_FILE), "{debug}");
    }

    #[tokio::test]
    async fn before_any_broker_list_an_empty_one_is_written_so_sshd_never_misses_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("host");
        let written = write_host(&dir, SshKeyType::Ed25519, &issued(), None, &SshKrl::empty(), Access::PRIVATE).await.unwrap();
        let on_disk = Krl::decode(&read(&dir, KRL_FILE)).unwrap();
        assert!(on_disk.is_empty());
        assert!(String::from_utf8(read(&dir, "sshd_config.snippet")).unwrap().contains("RevokedKeys"));
        assert!(written.with_krl(&krl(1)).is_some(), "the broker's list replaces the empty one");
    }

    #[tokio::test]
    async fn the_output_asks_for_a_full_write_until_it_wrote_once() {
        let cfg: SshHostOutput = serde_norway::from_str("dir: /nonexistent/sigil-test\nnames: [h]\n").unwrap();
        let out = SshHostDir::new(cfg, Access::PRIVATE);
        assert!(out.follows_krl());
        assert_eq!(out.rewrite_krl(&krl(1)).await.unwrap(), KrlRewrite::Refresh);
    }
}
