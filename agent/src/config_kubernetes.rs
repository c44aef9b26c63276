//! Config of the `kubernetes` output: a client certificate for the Kubernetes
//! API (CN = user, O = groups, signed by the broker's kubernetes CA) and a
//! kubeconfig that uses it, either by file (`client-certificate`/`client-key`)
//! or through the exec plugin `sigil kube credential` (`exec: true`). See
//! docs/access/kubernetes.md.
//!
//! Mistakes refused here rather than at the first kubectl call: an `http://`
//! server (the client certificate would be offered to nobody and the bearer of
//! the connection unverified), `insecure_skip_tls_verify: true` (kubectl would
//! send the certificate to whoever answers), values with control characters
//! (they end up in a YAML file and in a certificate subject), a relative
//! `sigil_path` (kubectl resolves it against its own working directory).

use super::config::{ConfigError, Dur, FileMode};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Longest context name or server URL accepted (bytes).
pub const MAX_VALUE_LEN: usize = 255;
/// Most groups one certificate may carry (the broker's limit).
pub const MAX_GROUPS: usize = sigil_core::domain::tls_policy::MAX_GROUPS;
/// Longest user or group (characters): the broker's limit, X.520 ub-common-name.
pub const MAX_SUBJECT_VALUE: usize = sigil_core::domain::tls_policy::MAX_SUBJECT_VALUE;

fn default_context() -> String {
    "sigil".into()
}

/// `type: kubernetes`: `tls.crt`, `tls.key`, `kubeconfig` (and `ca.pem` with
/// `cluster_ca_file`) in `dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesOutput {
    /// Directory receiving the files (created 0700; atomic generations).
    pub dir: PathBuf,
    /// API server URL, `https://HOST[:PORT]`.
    pub server: String,
    /// CA (PEM) of the API server's serving certificate, copied to `ca.pem`
    /// (the kubeconfig's `certificate-authority`). Default: none, the client's
    /// system roots verify the server.
    #[serde(default)]
    pub cluster_ca_file: Option<PathBuf>,
    /// Accepted only as `false`: a kubeconfig that skips server verification
    /// hands the client certificate to whoever answers.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// Kubernetes user name: the certificate's CN (a role's `kubernetes.users` must allow it).
    pub user: String,
    /// Kubernetes groups: the certificate's O values (each allowed by a role's `kubernetes.groups`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Name of the cluster, user and context entries in the kubeconfig (default `sigil`).
    #[serde(default = "default_context")]
    pub context_name: String,
    /// `false` (default): the kubeconfig names `tls.crt` and `tls.key`.
    /// `true`: the kubeconfig runs `sigil kube credential --dir DIR`, which
    /// prints an ExecCredential from the current files.
    #[serde(default)]
    pub exec: bool,
    /// Absolute path of the `sigil` binary the exec kubeconfig runs (default:
    /// this binary when it is `sigil`, else `sigil` beside it, else `sigil` on PATH).
    #[serde(default)]
    pub sigil_path: Option<PathBuf>,
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

/// `field.name` in agent config errors; `--name` for the one-shot command (`field` empty).
fn at(field: &str, name: &str) -> String {
    if field.is_empty() {
        format!("--{}", name.replace('_', "-"))
    } else {
        format!("{field}.{name}")
    }
}

/// Why a user, group or context name cannot be used, if it cannot.
pub fn unsafe_value(v: &str) -> Option<&'static str> {
    if v.is_empty() {
        Some("is empty")
    } else if v.len() > MAX_VALUE_LEN {
        Some("is longer than 255 bytes")
    } else if v.chars().any(char::is_control) {
        Some("contains a control character")
    } else if v.trim() != v {
        Some("starts or ends with white space")
    } else {
        None
    }
}

fn check(field: String, v: &str) -> Result<(), ConfigError> {
    match unsafe_value(v) {
        Some(why) => Err(invalid(field, format!("{v:?} {why}"))),
        None => Ok(()),
    }
}

/// A certificate subject value (CN, O): also at most [`MAX_SUBJECT_VALUE`] characters.
fn check_subject(field: String, v: &str) -> Result<(), ConfigError> {
    check(field.clone(), v)?;
    if v.chars().count() > MAX_SUBJECT_VALUE {
        return Err(invalid(field, format!("is longer than {MAX_SUBJECT_VALUE} characters (the certificate subject's limit)")));
    }
    Ok(())
}

/// Why `server` is not an `https://HOST[:PORT][/PATH]` URL, if it is not.
fn bad_server(server: &str) -> Option<String> {
    if let Some(why) = unsafe_value(server) {
        return Some(why.into());
    }
    let Some(rest) = server.strip_prefix("https://") else {
        return Some("must start with https:// (the client certificate is only sent over TLS)".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || server.contains(char::is_whitespace) {
        return Some("must be https://HOST[:PORT] with no user info or white space".into());
    }
    None
}

impl KubernetesOutput {
    /// Checks what serde cannot; returns the paths the output owns.
    pub fn validate(&self, field: &str) -> Result<Vec<String>, ConfigError> {
        check_subject(at(field, "user"), &self.user)?;
        if self.groups.len() > MAX_GROUPS {
            return Err(invalid(at(field, "groups"), format!("has {} entries; at most {MAX_GROUPS}", self.groups.len())));
        }
        for (i, g) in self.groups.iter().enumerate() {
            check_subject(format!("{}[{i}]", at(field, "groups")), g)?;
        }
        check(at(field, "context_name"), &self.context_name)?;
        if let Some(why) = bad_server(&self.server) {
            return Err(invalid(at(field, "server"), format!("{:?} {why}", self.server)));
        }
        if self.insecure_skip_tls_verify {
            return Err(invalid(
                at(field, "insecure_skip_tls_verify"),
                "must be false: without server verification kubectl presents the client certificate to whoever answers; set cluster_ca_file to the API server's CA",
            ));
        }
        if self.cluster_ca_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(invalid(at(field, "cluster_ca_file"), "is empty"));
        }
        if let Some(p) = &self.sigil_path {
            if !p.is_absolute() {
                return Err(invalid(at(field, "sigil_path"), format!("{} is not absolute (kubectl runs it from any directory)", p.display())));
            }
        }
        // Paths are written into the kubeconfig (YAML) and the exec arguments.
        if self.dir.as_os_str().is_empty() {
            return Err(invalid(at(field, "dir"), "is empty"));
        }
        check(at(field, "dir"), &self.dir.to_string_lossy())?;
        Ok(vec![self.dir.display().to_string()])
    }

    /// The `sigil` binary the exec kubeconfig runs.
    pub fn sigil_command(&self) -> PathBuf {
        if let Some(p) = &self.sigil_path {
            return p.clone();
        }
        let exe = std::env::current_exe().ok();
        default_sigil(exe.as_deref())
    }
}

/// This binary when it is `sigil`, else `sigil` beside it if present, else
/// `sigil` (found on PATH by kubectl).
pub fn default_sigil(exe: Option<&Path>) -> PathBuf {
    if let Some(exe) = exe {
        if exe.file_name().is_some_and(|n| n == "sigil") {
            return exe.to_path_buf();
        }
        if let Some(sibling) = exe.parent().map(|d| d.join("sigil")).filter(|p| p.is_file()) {
            return sibling;
        }
    }
    PathBuf::from("sigil")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> KubernetesOutput {
        KubernetesOutput {
            dir: "/run/kube".into(),
            server: "https://127.0.0.1:6443".into(),
            cluster_ca_file: None,
            insecure_skip_tls_verify: false,
            user: "deployer".into(),
            groups: vec!["deployers".into()],
            context_name: default_context(),
            exec: false,
            sigil_path: None,
            ttl: None,
            owner: None,
            group: None,
            mode: None,
        }
    }

    #[test]
    fn a_plain_http_server_or_one_with_user_info_is_refused() {
        for bad in ["http://api:6443", "api:6443", "https://", "https://u:p@api", "https://a b", "https://api\n"] {
            let mut o = out();
            o.server = bad.into();
            let e = o.validate("outputs[0]").unwrap_err().to_string();
            assert!(e.contains("outputs[0].server"), "{bad:?}: {e}");
        }
        let mut o = out();
        o.server = "https://kube.example.org/prefix".into();
        assert!(o.validate("o").is_ok());
    }

    #[test]
    fn skipping_server_verification_is_refused_with_the_fix() {
        let mut o = out();
        o.insecure_skip_tls_verify = true;
        let e = o.validate("o").unwrap_err().to_string();
        assert!(e.contains("o.insecure_skip_tls_verify") && e.contains("cluster_ca_file"), "{e}");
    }

    #[test]
    fn names_with_control_characters_and_too_many_groups_are_refused() {
        let mut o = out();
        o.user = "admin\nx".into();
        assert!(o.validate("o").unwrap_err().to_string().contains("o.user"));
        let mut o = out();
        o.groups = vec!["ok".into(), "system:masters\u{7f}".into()];
        assert!(o.validate("").unwrap_err().to_string().contains("--groups[1]"));
        let mut o = out();
        o.groups = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        assert!(o.validate("o").unwrap_err().to_string().contains("at most 64"));
        let mut o = out();
        o.user = "u".repeat(65);
        assert!(o.validate("o").unwrap_err().to_string().contains("longer than 64 characters"));
        o.user = "é".repeat(64);
        assert!(o.validate("o").is_ok());
        let mut o = out();
        o.context_name = " sigil".into();
        assert!(o.validate("o").unwrap_err().to_string().contains("o.context_name"));
    }

    #[test]
    fn a_relative_sigil_path_is_refused() {
        let mut o = out();
        o.sigil_path = Some("bin/sigil".into());
        assert!(o.validate("o").unwrap_err().to_string().contains("o.sigil_path"));
        o.sigil_path = Some("/usr/bin/sigil".into());
        assert_eq!(o.sigil_command(), PathBuf::from("/usr/bin/sigil"));
    }

    #[test]
    fn the_default_sigil_is_this_binary_or_its_sibling() {
        assert_eq!(default_sigil(Some(Path::new("/opt/x/sigil"))), PathBuf::from("/opt/x/sigil"));
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("sigil"), "").unwrap();
        assert_eq!(default_sigil(Some(&d.path().join("sigil-agent"))), d.path().join("sigil"));
        assert_eq!(default_sigil(Some(Path::new("/nonexistent/sigil-agent"))), PathBuf::from("sigil"));
        assert_eq!(default_sigil(None), PathBuf::from("sigil"));
    }
}
