//! Config of the SSH outputs (`ssh`, `ssh-host`): an OpenSSH user certificate
//! with the `ssh_config` and `known_hosts` that make `ssh -F` and Ansible verify
//! hosts by the Sigil host CA, and a host certificate with the `sshd_config`
//! lines that make sshd trust the Sigil user CA. See docs/access/ssh.md.
//!
//! Every value here ends up in a file OpenSSH parses (`ssh_config`,
//! `known_hosts`, `sshd_config`, principals files), so each is checked for the
//! characters that would end or split an entry there: whitespace, commas,
//! quotes, `#`, control characters. A directory with `%` is refused, as ssh
//! and sshd expand `%` tokens in some file names and not in others.

use super::config::{ConfigError, Dur, FileMode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// Most principals, host names or host patterns in one output.
pub const MAX_NAMES: usize = 256;
/// Longest principal, host name or pattern.
pub const MAX_NAME_LEN: usize = 255;
/// Most logins in `authorized_principals`.
pub const MAX_LOGINS: usize = 256;

/// The key the agent generates for a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SshKeyType {
    /// Ed25519 (default).
    #[default]
    Ed25519,
    /// ECDSA P-256.
    Ecdsa,
    /// RSA 3072 bits (certificates signed with SHA-2 for old servers).
    Rsa,
}

impl SshKeyType {
    /// The name in file names (`id_<name>`, `ssh_host_<name>_key`), as ssh-keygen names them.
    pub fn file_name(self) -> &'static str {
        match self {
            SshKeyType::Ed25519 => "ed25519",
            SshKeyType::Ecdsa => "ecdsa",
            SshKeyType::Rsa => "rsa",
        }
    }

    /// From the name given on the command line.
    pub fn parse(s: &str) -> Option<Self> {
        [SshKeyType::Ed25519, SshKeyType::Ecdsa, SshKeyType::Rsa].into_iter().find(|t| t.file_name() == s)
    }
}

fn default_hosts() -> Vec<String> {
    vec!["*".into()]
}

/// `type: ssh`: a user certificate and the client files around it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshOutput {
    /// Directory receiving `id_<type>`, `id_<type>-cert.pub`, `known_hosts`, `ssh_config`.
    pub dir: PathBuf,
    /// Login names the certificate carries (each allowed by a role's `ssh.principals`).
    pub principals: Vec<String>,
    /// Host patterns of the `Host` block in `ssh_config` and of the
    /// `@cert-authority` lines in `known_hosts` (default `*`).
    #[serde(default = "default_hosts")]
    pub hosts: Vec<String>,
    /// Key type (default ed25519).
    #[serde(default)]
    pub key_type: SshKeyType,
    /// Extensions to ask for (default: every extension the roles allow).
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Requested lifetime (default: the role / broker maximum).
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

/// `type: ssh-host`: a host certificate and the sshd files around it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshHostOutput {
    /// Directory receiving `ssh_host_<type>_key`, `ssh_host_<type>_key-cert.pub`,
    /// `user_ca.pub`, `sshd_config.snippet` (and `principals/`).
    pub dir: PathBuf,
    /// Host names / addresses the certificate carries (each allowed by a role's `ssh.host_names`).
    pub names: Vec<String>,
    /// Key type (default ed25519).
    #[serde(default)]
    pub key_type: SshKeyType,
    /// Requested lifetime (default: the role / broker maximum).
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Login -> certificate principals accepted for it: written as
    /// `principals/<login>` and named by `AuthorizedPrincipalsFile`. Without it
    /// sshd accepts a certificate for a login named among its principals.
    #[serde(default)]
    pub authorized_principals: Option<BTreeMap<String, Vec<String>>>,
    /// Owner of the written files (default the agent's user; sshd reads them as root).
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the written files.
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the host private key (default "0600"; sshd refuses a host key others can read).
    #[serde(default)]
    pub mode: Option<FileMode>,
}

/// A principal, host name or pattern: what OpenSSH files can carry unsplit.
pub fn check_name(field: &str, what: &str, s: &str) -> Result<(), ConfigError> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(invalid(field, format!("{what} {s:?} must be 1 to {MAX_NAME_LEN} bytes")));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '"' | '\'' | '#' | '\\')) {
        return Err(invalid(field, format!("{what} {s:?} contains {c:?}, which would split or end an entry in ssh_config / known_hosts / sshd_config")));
    }
    Ok(())
}

fn check_names(field: &str, what: &str, names: &[String], required: bool) -> Result<(), ConfigError> {
    if required && names.is_empty() {
        return Err(invalid(field, format!("list at least one {what}")));
    }
    if names.len() > MAX_NAMES {
        return Err(invalid(field, format!("at most {MAX_NAMES} entries")));
    }
    names.iter().try_for_each(|n| check_name(field, what, n))
}

/// A directory OpenSSH files will name by absolute path: absolute, UTF-8,
/// nothing that ends a quoted `ssh_config` / `sshd_config` argument.
pub fn check_dir(field: &str, dir: &Path) -> Result<(), ConfigError> {
    let s = dir.to_str().ok_or_else(|| invalid(field, "must be valid UTF-8 (it is written into ssh_config / sshd_config)"))?;
    if !dir.is_absolute() {
        return Err(invalid(field, format!("{s:?} must be an absolute path (ssh_config / sshd_config name the files by absolute path)")));
    }
    if s.chars().any(|c| c.is_control() || matches!(c, '"' | '\\' | '%' | '#')) {
        return Err(invalid(field, format!("{s:?} contains a quote, backslash, %, # or control character (ssh expands % in file names)")));
    }
    Ok(())
}

/// A Unix login name (the `%u` of `AuthorizedPrincipalsFile`, a file name).
fn check_login(field: &str, login: &str) -> Result<(), ConfigError> {
    let ok = !login.is_empty()
        && login.len() <= 32
        && !login.starts_with(['-', '.'])
        && login.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("login {login:?} is not a Unix user name (letters, digits, _ - .; at most 32)")))
    }
}

impl SshOutput {
    /// Checks the fields; returns the paths the output owns.
    pub fn validate(&self, field: &str) -> Result<Vec<String>, ConfigError> {
        check_dir(&format!("{field}.dir"), &self.dir)?;
        check_names(&format!("{field}.principals"), "principal", &self.principals, true)?;
        check_names(&format!("{field}.hosts"), "host pattern", &self.hosts, true)?;
        check_names(&format!("{field}.extensions"), "extension", &self.extensions, false)?;
        Ok(vec![self.dir.display().to_string()])
    }
}

impl SshHostOutput {
    /// Checks the fields; returns the paths the output owns.
    pub fn validate(&self, field: &str) -> Result<Vec<String>, ConfigError> {
        check_dir(&format!("{field}.dir"), &self.dir)?;
        check_names(&format!("{field}.names"), "host name", &self.names, true)?;
        if let Some(map) = &self.authorized_principals {
            let f = format!("{field}.authorized_principals");
            if map.is_empty() || map.len() > MAX_LOGINS {
                return Err(invalid(&f, format!("list 1 to {MAX_LOGINS} logins, or leave it out")));
            }
            for (login, principals) in map {
                check_login(&f, login)?;
                check_names(&format!("{f}.{login}"), "principal", principals, true)?;
            }
        }
        Ok(vec![self.dir.display().to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(yaml: &str) -> Result<Vec<String>, ConfigError> {
        let o: SshOutput = serde_norway::from_str(yaml).map_err(|e| ConfigError::Parse(e.to_string()))?;
        o.validate("outputs[0]")
    }

    fn host(yaml: &str) -> Result<Vec<String>, ConfigError> {
        let o: SshHostOutput = serde_norway::from_str(yaml).map_err(|e| ConfigError::Parse(e.to_string()))?;
        o.validate("outputs[0]")
    }

    #[test]
    fn defaults_are_ed25519_and_every_host() {
        let o: SshOutput = serde_norway::from_str("dir: /run/ssh\nprincipals: [deploy]\n").unwrap();
        assert_eq!((o.key_type, o.hosts.clone()), (SshKeyType::Ed25519, vec!["*".to_string()]));
        assert_eq!(o.validate("o").unwrap(), vec!["/run/ssh".to_string()]);
    }

    #[test]
    fn values_that_would_split_an_openssh_entry_are_refused() {
        for (yaml, want) in [
            ("dir: /run/ssh\nprincipals: ['a b']\n", "principal"),
            ("dir: /run/ssh\nprincipals: ['a,b']\n", "principal"),
            ("dir: /run/ssh\nprincipals: [a]\nhosts: ['x\\ny']\n", "host pattern"),
            ("dir: /run/ssh\nprincipals: [a]\nhosts: ['#x']\n", "host pattern"),
            ("dir: /run/ssh\nprincipals: []\n", "at least one"),
            ("dir: run/ssh\nprincipals: [a]\n", "absolute"),
            ("dir: '/run/s\"sh'\nprincipals: [a]\n", "quote"),
            ("dir: /run/ssh\nprincipals: [a]\nkey_type: dsa\n", "dsa"),
        ] {
            let e = user(yaml).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn authorized_principals_need_unix_logins_and_principals() {
        assert!(host("dir: /etc/ssh/sigil\nnames: [web1]\nauthorized_principals: {deploy: [deploy, ops]}\n").is_ok());
        for (yaml, want) in [
            ("dir: /etc/ssh/sigil\nnames: []\n", "at least one"),
            ("dir: /etc/ssh/sigil\nnames: [web1]\nauthorized_principals: {'../etc': [a]}\n", "not a Unix user"),
            ("dir: /etc/ssh/sigil\nnames: [web1]\nauthorized_principals: {deploy: []}\n", "at least one"),
            ("dir: /etc/ssh/sigil\nnames: [web1]\nauthorized_principals: {}\n", "1 to"),
        ] {
            let e = host(yaml).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
