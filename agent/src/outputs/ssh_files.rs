//! The text of the files the SSH outputs write: pure functions, no I/O.
//!
//! `ssh` (client side):
//! ```text
//! DIR/id_ed25519            private key (OpenSSH format)
//! DIR/id_ed25519-cert.pub   user certificate
//! DIR/known_hosts           @cert-authority HOSTS <host CA key>, one line per published key
//! DIR/ssh_config            Host HOSTS: IdentityFile, CertificateFile, UserKnownHostsFile, ...
//! ```
//! `ssh-host` (server side):
//! ```text
//! DIR/ssh_host_ed25519_key           host private key
//! DIR/ssh_host_ed25519_key-cert.pub  host certificate
//! DIR/user_ca.pub                    every published user CA key (TrustedUserCAKeys)
//! DIR/sshd_config.snippet            HostKey, HostCertificate, TrustedUserCAKeys [, AuthorizedPrincipalsFile]
//! DIR/principals/LOGIN               principals accepted for LOGIN (optional)
//! ```
//!
//! Host trust is never trust-on-first-use: `StrictHostKeyChecking yes` and a
//! `known_hosts` holding only the Sigil host CA keys, so a host is accepted
//! only with a certificate from that CA naming the host, and nothing is ever
//! added to the file. Paths are absolute (checked in `config_ssh`), so the
//! files work from any working directory (Ansible runs ssh from its own).

use crate::config_ssh::SshKeyType;
use std::path::Path;

/// One file of a generation: name and content.
pub type File = (String, Vec<u8>);

/// Client file names for a key type: (private key, certificate).
pub fn user_key_names(t: SshKeyType) -> (String, String) {
    let key = format!("id_{}", t.file_name());
    let cert = format!("{key}-cert.pub");
    (key, cert)
}

/// Host file names for a key type: (private key, certificate).
pub fn host_key_names(t: SshKeyType) -> (String, String) {
    let key = format!("ssh_host_{}_key", t.file_name());
    let cert = format!("{key}-cert.pub");
    (key, cert)
}

/// Name of the principals subdirectory of `ssh-host`.
pub const PRINCIPALS_DIR: &str = "principals";

/// The KRL file of an `ssh-host` directory (sshd `RevokedKeys`).
pub const KRL_FILE: &str = "revoked_keys.krl";

/// A path as one `ssh_config` / `sshd_config` argument (quoted if it has spaces;
/// quotes, `%` and control characters were refused by the config check).
fn arg(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s
    }
}

/// `known_hosts`: one `@cert-authority` line per host CA key. Each pattern is
/// also given in the `[HOST]:*` form ssh looks up for a non-default port.
pub fn known_hosts(hosts: &[String], host_ca_keys: &[String]) -> String {
    let mut patterns: Vec<String> = Vec::new();
    for h in hosts {
        patterns.push(h.clone());
        if h != "*" {
            patterns.push(format!("[{h}]:*"));
        }
    }
    let patterns = patterns.join(",");
    let mut out = String::from("# Sigil SSH host CA keys (sigil agent output ssh); rewritten at each renewal.\n");
    for key in host_ca_keys {
        out.push_str(&format!("@cert-authority {patterns} {}\n", key.trim()));
    }
    out
}

/// `ssh_config` for `ssh -F`: the key, the certificate and the known_hosts
/// of `dir`, and no other identity or host key source.
pub fn ssh_config(dir: &Path, t: SshKeyType, hosts: &[String]) -> String {
    let (key, cert) = user_key_names(t);
    format!(
        "# Written by the sigil agent (output ssh); rewritten at each renewal.\n\
         # Use: ssh -F {cfg} USER@HOST, or Ansible ansible_ssh_common_args: -F {cfg}\n\
         Host {hosts}\n\
         \x20   IdentityFile {key}\n\
         \x20   CertificateFile {cert}\n\
         \x20   IdentitiesOnly yes\n\
         \x20   UserKnownHostsFile {kh}\n\
         \x20   StrictHostKeyChecking yes\n\
         \x20   UpdateHostKeys no\n\
         \x20   PasswordAuthentication no\n\
         \x20   KbdInteractiveAuthentication no\n",
        cfg = arg(&dir.join("ssh_config")),
        hosts = hosts.join(" "),
        key = arg(&dir.join(key)),
        cert = arg(&dir.join(cert)),
        kh = arg(&dir.join("known_hosts")),
    )
}

/// The files of one `ssh` generation.
pub fn user_files(dir: &Path, t: SshKeyType, hosts: &[String], private_pem: &str, certificate: &str, host_ca_keys: &[String]) -> Vec<File> {
    let (key, cert) = user_key_names(t);
    vec![
        (key, private_pem.as_bytes().to_vec()),
        (cert, line(certificate).into_bytes()),
        ("known_hosts".into(), known_hosts(hosts, host_ca_keys).into_bytes()),
        ("ssh_config".into(), ssh_config(dir, t, hosts).into_bytes()),
    ]
}

fn line(s: &str) -> String {
    format!("{}\n", s.trim())
}

/// `user_ca.pub`: every published user CA key, one per line (`TrustedUserCAKeys`).
pub fn user_ca(user_ca_keys: &[String]) -> String {
    user_ca_keys.iter().map(|k| line(k)).collect()
}

/// `sshd_config.snippet`: what to `Include` in sshd_config (before any `Match`).
pub fn sshd_snippet(dir: &Path, t: SshKeyType, with_principals: bool) -> String {
    let (key, cert) = host_key_names(t);
    let mut s = format!(
        "# Written by the sigil agent (output ssh-host); rewritten at each renewal.\n\
         # Include it from /etc/ssh/sshd_config before any Match block:\n\
         #   Include {me}\n\
         HostKey {key}\n\
         HostCertificate {cert}\n\
         TrustedUserCAKeys {ca}\n",
        me = arg(&dir.join("sshd_config.snippet")),
        key = arg(&dir.join(key)),
        cert = arg(&dir.join(cert)),
        ca = arg(&dir.join("user_ca.pub")),
    );
    if with_principals {
        s.push_str(&format!("AuthorizedPrincipalsFile {}\n", arg(&dir.join(PRINCIPALS_DIR).join("%u"))));
    }
    // Always written beside it (empty until the broker sends one); kept
    // current by a running agent within a bundle poll of a revocation.
    s.push_str(&format!("RevokedKeys {}\n", arg(&dir.join(KRL_FILE))));
    s
}

/// A `principals/LOGIN` file: one principal per line.
pub fn principals_file(principals: &[String]) -> String {
    principals.iter().map(|p| format!("{p}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0000000000000000000000000000000000000000000 sigil-host-ca";

    #[test]
    fn known_hosts_trusts_only_the_host_ca_for_the_patterns_on_any_port() {
        let kh = known_hosts(&["*.example.org".into(), "127.0.0.1".into()], &[CA.into(), "ecdsa-sha2-nistp256 AAAA second".into()]);
        let lines: Vec<&str> = kh.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], format!("@cert-authority *.example.org,[*.example.org]:*,127.0.0.1,[127.0.0.1]:* {CA}"));
        assert!(known_hosts(&["*".into()], &[CA.into()]).contains(&format!("@cert-authority * {CA}")));
    }

    #[test]
    fn no_host_ca_key_means_no_host_is_trusted() {
        let kh = known_hosts(&["*".into()], &[]);
        assert!(kh.lines().all(|l| l.starts_with('#')), "{kh}");
    }

    #[test]
    fn ssh_config_names_absolute_files_and_never_learns_host_keys() {
        let c = ssh_config(Path::new("/run/sigil ssh"), SshKeyType::Ecdsa, &["web*".into(), "db1".into()]);
        assert!(c.contains("Host web* db1\n"), "{c}");
        assert!(c.contains("IdentityFile \"/run/sigil ssh/id_ecdsa\"\n"), "{c}");
        assert!(c.contains("CertificateFile \"/run/sigil ssh/id_ecdsa-cert.pub\"\n"), "{c}");
        assert!(c.contains("UserKnownHostsFile \"/run/sigil ssh/known_hosts\"\n"), "{c}");
        for must in ["IdentitiesOnly yes", "StrictHostKeyChecking yes", "UpdateHostKeys no"] {
            assert!(c.contains(must), "{must}: {c}");
        }
    }

    #[test]
    fn user_files_are_key_certificate_known_hosts_and_config() {
        let f = user_files(Path::new("/d"), SshKeyType::Ed25519, &["*".into()], "PEM", "ssh-ed25519-cert-v01@openssh.com AAAA", &[CA.into()]);
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["id_ed25519", "id_ed25519-cert.pub", "known_hosts", "ssh_config"]);
        assert_eq!(f[1].1, b"ssh-ed25519-cert-v01@openssh.com AAAA\n");
    }

    #[test]
    fn sshd_snippet_names_host_key_certificate_user_ca_and_principals() {
        let s = sshd_snippet(Path::new("/etc/ssh/sigil"), SshKeyType::Ed25519, true);
        for l in [
            "HostKey /etc/ssh/sigil/ssh_host_ed25519_key\n",
            "HostCertificate /etc/ssh/sigil/ssh_host_ed25519_key-cert.pub\n",
            "TrustedUserCAKeys /etc/ssh/sigil/user_ca.pub\n",
            "AuthorizedPrincipalsFile /etc/ssh/sigil/principals/%u\n",
            "RevokedKeys /etc/ssh/sigil/revoked_keys.krl\n",
        ] {
            assert!(s.contains(l), "{l}: {s}");
        }
        let without = sshd_snippet(Path::new("/e"), SshKeyType::Rsa, false);
        assert!(!without.contains("AuthorizedPrincipalsFile") && without.contains("RevokedKeys /e/revoked_keys.krl\n"), "{without}");
        assert_eq!(user_ca(&[" a b \n".into(), "c d".into()]), "a b\nc d\n");
    }
}
