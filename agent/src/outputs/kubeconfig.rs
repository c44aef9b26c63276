//! The kubeconfig the `kubernetes` output writes: one cluster, one user, one
//! context (all named `context_name`), current-context set. Pure: paths and
//! settings in, YAML text out.
//!
//! Two ways to present the client certificate:
//! - files: `client-certificate` / `client-key` name `dir/tls.crt` and
//!   `dir/tls.key` (the stable symlinks of [`crate::atomic_dir`]), so the
//!   kubeconfig never changes across renewals; a client reads them when it
//!   loads the kubeconfig.
//! - exec: `user.exec` runs `sigil kube credential --dir DIR`
//!   (`client.authentication.k8s.io/v1`, `interactiveMode: Never`), which prints
//!   the current pair with `expirationTimestamp` = the certificate's expiry, so a
//!   long-running client asks again when the certificate it holds runs out.
//!
//! Serialised with serde, never by string concatenation: a value cannot add a
//! key or a document.

use serde::Serialize;
use std::path::Path;

/// `apiVersion` of the exec credential plugin protocol Sigil speaks.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// How the kubeconfig's user presents the client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `client-certificate` and `client-key` name these files.
    Files {
        /// `tls.crt` (absolute).
        cert: &'a Path,
        /// `tls.key` (absolute).
        key: &'a Path,
    },
    /// `exec` runs `sigil kube credential --dir DIR`.
    Exec {
        /// The `sigil` binary.
        sigil: &'a Path,
        /// The output directory (absolute).
        dir: &'a Path,
    },
}

/// What goes into the kubeconfig.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// Name of the cluster, user and context entries.
    pub name: &'a str,
    /// API server URL.
    pub server: &'a str,
    /// `certificate-authority` (absolute), if the API server's CA is given.
    pub cluster_ca: Option<&'a Path>,
    /// The user's credential.
    pub credential: Credential<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct KubeConfig<'a> {
    api_version: &'static str,
    kind: &'static str,
    clusters: [Named<'a, Cluster<'a>>; 1],
    users: [Named<'a, User<'a>>; 1],
    contexts: [Named<'a, Context<'a>>; 1],
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct Cluster<'a> {
    cluster: ClusterBody<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterBody<'a> {
    server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_authority: Option<String>,
}

#[derive(Serialize)]
struct User<'a> {
    user: UserBody<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec: Option<Exec<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Exec<'a> {
    api_version: &'a str,
    command: String,
    args: Vec<String>,
    interactive_mode: &'static str,
    provide_cluster_info: bool,
}

#[derive(Serialize)]
struct Context<'a> {
    context: ContextBody<'a>,
}

#[derive(Serialize)]
struct ContextBody<'a> {
    cluster: &'a str,
    user: &'a str,
}

fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The kubeconfig as YAML.
pub fn render(s: &Settings<'_>) -> Result<String, serde_norway::Error> {
    let user = match s.credential {
        Credential::Files { cert, key } => UserBody { client_certificate: Some(text(cert)), client_key: Some(text(key)), exec: None },
        Credential::Exec { sigil, dir } => UserBody {
            client_certificate: None,
            client_key: None,
            exec: Some(Exec {
                api_version: EXEC_API_VERSION,
                command: text(sigil),
                args: vec!["kube".into(), "credential".into(), "--dir".into(), text(dir)],
                interactive_mode: "Never",
                provide_cluster_info: false,
            }),
        },
    };
    let cfg = KubeConfig {
        api_version: "v1",
        kind: "Config",
        clusters: [Named { name: s.name, value: Cluster { cluster: ClusterBody { server: s.server, certificate_authority: s.cluster_ca.map(text) } } }],
        users: [Named { name: s.name, value: User { user } }],
        contexts: [Named { name: s.name, value: Context { context: ContextBody { cluster: s.name, user: s.name } } }],
        current_context: s.name,
    };
    let body = serde_norway::to_string(&cfg)?;
    Ok(format!("# Written by the Sigil agent (kubernetes output); rewritten at each renewal.\n{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> serde_norway::Value {
        serde_norway::from_str(t).unwrap()
    }

    #[test]
    fn the_files_variant_names_the_certificate_key_and_cluster_ca() {
        let (cert, key, ca) = (Path::new("/run/k/tls.crt"), Path::new("/run/k/tls.key"), Path::new("/run/k/ca.pem"));
        let t = render(&Settings { name: "prod", server: "https://api:6443", cluster_ca: Some(ca), credential: Credential::Files { cert, key } }).unwrap();
        let v = parse(&t);
        assert_eq!(v["current-context"].as_str(), Some("prod"));
        assert_eq!(v["clusters"][0]["cluster"]["server"].as_str(), Some("https://api:6443"));
        assert_eq!(v["clusters"][0]["cluster"]["certificate-authority"].as_str(), Some("/run/k/ca.pem"));
        assert_eq!(v["users"][0]["user"]["client-certificate"].as_str(), Some("/run/k/tls.crt"));
        assert_eq!(v["users"][0]["user"]["client-key"].as_str(), Some("/run/k/tls.key"));
        assert!(v["users"][0]["user"].get("exec").is_none());
        assert_eq!(v["contexts"][0]["context"]["user"].as_str(), Some("prod"));
    }

    #[test]
    fn the_exec_variant_runs_sigil_kube_credential_non_interactively() {
        let t = render(&Settings {
            name: "sigil",
            server: "https://api",
            cluster_ca: None,
            credential: Credential::Exec { sigil: Path::new("/usr/bin/sigil"), dir: Path::new("/run/k") },
        })
        .unwrap();
        let v = parse(&t);
        let exec = &v["users"][0]["user"]["exec"];
        assert_eq!(exec["apiVersion"].as_str(), Some(EXEC_API_VERSION));
        assert_eq!(exec["command"].as_str(), Some("/usr/bin/sigil"));
        assert_eq!(exec["interactiveMode"].as_str(), Some("Never"));
        let args: Vec<&str> = exec["args"].as_sequence().unwrap().iter().filter_map(|a| a.as_str()).collect();
        assert_eq!(args, ["kube", "credential", "--dir", "/run/k"]);
        assert!(v["users"][0]["user"].get("client-certificate").is_none());
        assert!(v["clusters"][0]["cluster"].get("certificate-authority").is_none());
    }

    #[test]
    fn a_name_that_looks_like_yaml_stays_one_string() {
        let (cert, key) = (Path::new("/k/tls.crt"), Path::new("/k/tls.key"));
        for name in ["true", "1", "a: b", "- x", "{x}", "'q'", "#c"] {
            let t = render(&Settings { name, server: "https://api", cluster_ca: None, credential: Credential::Files { cert, key } }).unwrap();
            let v = parse(&t);
            assert_eq!(v["current-context"].as_str(), Some(name), "{t}");
            assert_eq!(v["users"].as_sequence().unwrap().len(), 1);
        }
    }
}
