//! The Kubernetes clusters whose TokenReview API the broker may ask, from the
//! `kubernetes_clusters` section of its config: for each, the API server URL,
//! the CA its certificate must chain to, and the broker's own credential: a
//! bearer token (an in-cluster service account, a kubeconfig user, or a token
//! file) or a client certificate (a kubeconfig user's
//! `client-certificate[-data]`/`client-key[-data]`, or `client_cert_file` +
//! `client_key_file`).
//!
//! Resolved once at start-up, so a mistake stops the broker with the entry and
//! field named. Credential files are re-read at each review: projected
//! service-account tokens (in-cluster) are rotated by kubelet while the broker
//! runs, and client certificates are renewed by cert-manager or kubeadm. Key
//! files are read as private files ([`sigil_core::fsutil::read_private_text`]:
//! this user's or root's, never through a symlink, narrowed to 0600 if others
//! could read them). Token and key values never appear in errors or Debug output.

use super::kubernetes_kubeconfig::{self as kubeconfig, CaSource, KubeconfigError, PemSource, UserCredential};
use crate::config::{KubernetesClusterAuth, KubernetesClusterConfig, KubernetesClusterSource};
use sigil_core::net::trust::{ClientCert, Trust};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an in-cluster pod finds its service-account token and the cluster CA.
pub const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Largest bearer token file read.
pub const MAX_TOKEN_FILE_BYTES: usize = 64 * 1024;
/// Largest kubeconfig read.
pub const MAX_KUBECONFIG_BYTES: usize = 1024 * 1024;
/// Most clusters configured.
pub const MAX_CLUSTERS: usize = 64;

/// Why a cluster entry cannot be used. Names the entry, field or file; never a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The entry's shape (which fields, duplicate names, environment).
    #[error("{0}")]
    Config(String),
    /// A file the entry names cannot be read or used.
    #[error("kubernetes_clusters[{cluster}]: {file}: {message}")]
    File {
        /// Cluster name.
        cluster: String,
        /// The file.
        file: String,
        /// What is wrong (no content).
        message: String,
    },
    /// The kubeconfig.
    #[error("kubernetes_clusters[{cluster}]: {source}")]
    Kubeconfig {
        /// Cluster name.
        cluster: String,
        /// What is wrong.
        source: KubeconfigError,
    },
}

/// The broker's credential for one cluster.
#[derive(Clone)]
enum Credential {
    /// A token file, re-read at each review.
    File(PathBuf),
    /// A kubeconfig's inline `token`.
    Inline(String),
    /// A client certificate and key, at least one in a file: both re-read and
    /// the TLS configuration rebuilt at each review.
    CertFiles {
        /// The chain.
        cert: PemSource,
        /// The key.
        key: PemSource,
    },
    /// A client certificate and key both inline in the kubeconfig: the TLS
    /// configuration ([`Cluster::trust`]) already presents them.
    CertInline,
}

/// One cluster the broker can ask.
pub struct Cluster {
    /// Its name (join tokens' `config.cluster`).
    pub name: String,
    /// API server base URL, no trailing slash.
    pub api_server: String,
    /// TLS trust: the cluster CA (with the client certificate when it is inline in a kubeconfig).
    trust: Trust,
    /// The cluster CA, for TLS configurations rebuilt with a re-read client certificate.
    roots: Arc<rustls::RootCertStore>,
    credential: Credential,
}

/// How to reach a cluster for one review: the TLS configuration and, unless
/// the broker authenticates with a client certificate, its bearer token.
#[derive(Debug)]
pub struct Connection {
    /// The TLS configuration (cluster CA; client certificate if any).
    pub trust: Trust,
    /// The bearer token, if the broker uses one.
    pub bearer: Option<Bearer>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credential = match &self.credential {
            Credential::File(p) => format!("token file {}", p.display()),
            Credential::Inline(_) => "kubeconfig token <redacted>".into(),
            Credential::CertFiles { cert, key } => format!("client certificate {cert:?}, key {key:?}"),
            Credential::CertInline => "kubeconfig client certificate, key <redacted>".into(),
        };
        f.debug_struct("Cluster").field("name", &self.name).field("api_server", &self.api_server).field("credential", &credential).finish()
    }
}

/// The broker's bearer token (Debug shows none of it).
pub struct Bearer(String);

impl Bearer {
    /// The token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

impl Cluster {
    /// The broker's credential for this cluster, read now (token files
    /// rotate, client certificates are renewed).
    pub fn connection(&self) -> Result<Connection, ClusterError> {
        let bearer = |b: Bearer| Ok(Connection { trust: self.trust.clone(), bearer: Some(b) });
        match &self.credential {
            Credential::Inline(t) => bearer(Bearer(t.clone())),
            Credential::File(p) => bearer(Bearer(read_token(&self.name, p)?)),
            Credential::CertInline => Ok(Connection { trust: self.trust.clone(), bearer: None }),
            Credential::CertFiles { cert, key } => {
                let client = client_cert(&self.name, cert, key)?;
                let trust = Trust::roots_with_client_cert(self.roots.clone(), &client).map_err(|e| self.cert_err(cert, key, e))?;
                Ok(Connection { trust, bearer: None })
            }
        }
    }

    /// The broker's bearer token for this cluster, read now; `None` when it
    /// authenticates with a client certificate.
    pub fn bearer(&self) -> Result<Option<Bearer>, ClusterError> {
        Ok(self.connection()?.bearer)
    }

    fn cert_err(&self, cert: &PemSource, key: &PemSource, e: sigil_core::net::trust::TrustError) -> ClusterError {
        ClusterError::Config(format!("kubernetes_clusters[{}]: client certificate {} with key {}: {e}", self.name, origin(cert), origin(key)))
    }
}

fn origin(src: &PemSource) -> String {
    match src {
        PemSource::Inline { field, .. } => field.clone(),
        PemSource::File(p) => p.display().to_string(),
    }
}

/// Reads (files) and parses a client certificate and key.
fn client_cert(cluster: &str, cert: &PemSource, key: &PemSource) -> Result<ClientCert, ClusterError> {
    let cert_pem = match cert {
        PemSource::Inline { pem, .. } => pem.clone(),
        PemSource::File(f) => sigil_core::pem::read_file(f).map_err(|e| file_err(cluster, f, format!("cannot read the client certificate: {e}")))?,
    };
    let key_pem = match key {
        PemSource::Inline { pem, .. } => pem.clone(),
        PemSource::File(f) => read_key(cluster, f)?,
    };
    ClientCert::from_pem(&cert_pem, &origin(cert), &key_pem, &origin(key))
        .map_err(|e| ClusterError::Config(format!("kubernetes_clusters[{cluster}]: {e}")))
}

/// A client key file: a private file (bounded, owner this user or root, no
/// symlink, narrowed to 0600 if others could read it).
fn read_key(cluster: &str, file: &Path) -> Result<String, ClusterError> {
    match sigil_core::fsutil::read_private_text(file, sigil_core::fsutil::MAX_PRIVATE_READ) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(file_err(cluster, file, "the client key file does not exist".into())),
        Err(e) => Err(file_err(cluster, file, format!("cannot read the client key: {e}"))),
    }
}

/// Every configured cluster, by name.
#[derive(Debug, Default)]
pub struct Clusters(BTreeMap<String, Arc<Cluster>>);

impl Clusters {
    /// Resolves the config's entries (in-cluster ones from this process's environment).
    pub fn from_config(entries: &[KubernetesClusterConfig]) -> Result<Self, ClusterError> {
        Self::resolve(entries, &|k| std::env::var(k).ok(), Path::new(IN_CLUSTER_DIR))
    }

    /// Resolves with an injected environment and service-account directory.
    pub fn resolve(entries: &[KubernetesClusterConfig], env: &dyn Fn(&str) -> Option<String>, sa_dir: &Path) -> Result<Self, ClusterError> {
        if entries.len() > MAX_CLUSTERS {
            return Err(ClusterError::Config(format!("kubernetes_clusters: more than {MAX_CLUSTERS} entries")));
        }
        let mut map = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            let source = e.source(i).map_err(ClusterError::Config)?;
            let name = e.name.trim().to_string();
            let cluster = resolve_one(&name, source, env, sa_dir)?;
            if map.insert(name.clone(), Arc::new(cluster)).is_some() {
                return Err(ClusterError::Config(format!("kubernetes_clusters[{i}].name: {name:?} is used by an earlier entry")));
            }
        }
        Ok(Self(map))
    }

    /// The cluster named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.0.get(name)
    }

    /// The configured names.
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// A set of already-resolved clusters (tests).
    pub fn of(clusters: Vec<Cluster>) -> Self {
        Self(clusters.into_iter().map(|c| (c.name.clone(), Arc::new(c))).collect())
    }
}

impl Cluster {
    /// A cluster from its parts, with a token file (tests, and the resolvers here).
    pub fn with_token_file(name: &str, api_server: &str, ca_pem: &str, token_file: PathBuf) -> Result<Self, ClusterError> {
        let (roots, trust) = trust(name, ca_pem, "the CA")?;
        Ok(Self { name: name.into(), api_server: api_server.trim_end_matches('/').into(), trust, roots, credential: Credential::File(token_file) })
    }
}

fn resolve_one(name: &str, source: KubernetesClusterSource, env: &dyn Fn(&str) -> Option<String>, sa_dir: &Path) -> Result<Cluster, ClusterError> {
    let cfg_err = |m: String| ClusterError::Config(format!("kubernetes_clusters[{name}]: {m}"));
    let (api_server, ca_pem, credential) = match source {
        KubernetesClusterSource::InCluster => {
            let var = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
            let host = var("KUBERNETES_SERVICE_HOST").ok_or_else(|| cfg_err("in_cluster: KUBERNETES_SERVICE_HOST is not set (is the broker running in a pod?)".into()))?;
            let port = var("KUBERNETES_SERVICE_PORT").ok_or_else(|| cfg_err("in_cluster: KUBERNETES_SERVICE_PORT is not set".into()))?;
            if port.parse::<u16>().is_err() {
                return Err(cfg_err(format!("in_cluster: KUBERNETES_SERVICE_PORT {port:?} is not a port")));
            }
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            let ca_file = sa_dir.join("ca.crt");
            (format!("https://{host}:{port}"), read_ca(name, &ca_file)?, Credential::File(sa_dir.join("token")))
        }
        KubernetesClusterSource::Explicit { api_server, ca_file, auth } => {
            let credential = match auth {
                KubernetesClusterAuth::TokenFile(f) => Credential::File(f),
                KubernetesClusterAuth::ClientCert { cert_file, key_file } => Credential::CertFiles { cert: PemSource::File(cert_file), key: PemSource::File(key_file) },
            };
            (api_server, read_ca(name, &ca_file)?, credential)
        }
        KubernetesClusterSource::Kubeconfig { file, context } => {
            let text = read_text(&file, MAX_KUBECONFIG_BYTES).map_err(|m| file_err(name, &file, m))?;
            let r = kubeconfig::resolve(&text, &file, context.as_deref()).map_err(|source| ClusterError::Kubeconfig { cluster: name.into(), source })?;
            let ca_pem = match r.ca {
                Some(CaSource::Pem(pem)) => pem,
                Some(CaSource::File(f)) => read_ca(name, &f)?,
                None => {
                    return Err(ClusterError::Kubeconfig {
                        cluster: name.into(),
                        source: KubeconfigError::Field {
                            file: file.display().to_string(),
                            field: format!("context {:?}: certificate-authority", r.context),
                            message: "required: the broker trusts only the cluster's CA".into(),
                        },
                    })
                }
            };
            let credential = match r.credential {
                UserCredential::Inline(t) => Credential::Inline(t),
                UserCredential::File(p) => Credential::File(p),
                UserCredential::ClientCert { cert, key } => Credential::CertFiles { cert, key },
            };
            (r.server, ca_pem, credential)
        }
    };
    let (roots, trust) = trust(name, &ca_pem, "the cluster CA")?;
    let mut cluster = Cluster { name: name.into(), api_server, trust, roots, credential };
    // The credential must be usable now; files are read again at each review.
    let now = cluster.connection()?;
    if matches!(&cluster.credential, Credential::CertFiles { cert: PemSource::Inline { .. }, key: PemSource::Inline { .. } }) {
        // Both inline: nothing to re-read, keep the configuration built once.
        cluster.trust = now.trust;
        cluster.credential = Credential::CertInline;
    }
    Ok(cluster)
}

fn trust(name: &str, pem: &str, what: &str) -> Result<(Arc<rustls::RootCertStore>, Trust), ClusterError> {
    let bad = |e: sigil_core::net::trust::TrustError| ClusterError::Config(format!("kubernetes_clusters[{name}]: {what}: {e}"));
    let roots = sigil_core::net::trust::roots_from_pem(pem).map_err(bad)?;
    let trust = Trust::roots(roots.clone()).map_err(bad)?;
    Ok((roots, trust))
}

fn file_err(cluster: &str, file: &Path, message: String) -> ClusterError {
    ClusterError::File { cluster: cluster.into(), file: file.display().to_string(), message }
}

fn read_ca(cluster: &str, file: &Path) -> Result<String, ClusterError> {
    sigil_core::pem::read_file(file).map_err(|e| file_err(cluster, file, format!("cannot read the CA: {e}")))
}

/// Reads at most `max` bytes of UTF-8 text; the message names no content.
fn read_text(file: &Path, max: usize) -> Result<String, String> {
    let mut buf = Vec::new();
    std::fs::File::open(file).and_then(|f| f.take(max as u64 + 1).read_to_end(&mut buf)).map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() > max {
        return Err(format!("larger than {max} bytes"));
    }
    String::from_utf8(buf).map_err(|_| "not UTF-8 text".into())
}

fn read_token(cluster: &str, file: &Path) -> Result<String, ClusterError> {
    let text = read_text(file, MAX_TOKEN_FILE_BYTES).map_err(|m| file_err(cluster, file, format!("the broker's token: {m}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(file_err(cluster, file, "the broker's token file is empty".into()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(file_err(cluster, file, "the broker's token has characters a bearer token cannot have (one token, no spaces)".into()));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn entry(name: &str) -> KubernetesClusterConfig {
        KubernetesClusterConfig { name: name.into(), ..Default::default() }
    }

    #[test]
    fn in_cluster_reads_the_service_host_and_the_service_account_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca_pem()).unwrap();
        std::fs::write(dir.path().join("token"), "first-token\n").unwrap();
        let env = |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some("fd00::1".to_string()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_string()),
            _ => None,
        };
        let c = Clusters::resolve(&[KubernetesClusterConfig { in_cluster: true, ..entry("here") }], &env, dir.path()).unwrap();
        let here = c.get("here").unwrap();
        assert_eq!(here.api_server, "https://[fd00::1]:443");
        assert_eq!(here.bearer().unwrap().unwrap().expose(), "first-token");
        std::fs::write(dir.path().join("token"), "rotated-token").unwrap();
        assert_eq!(here.bearer().unwrap().unwrap().expose(), "rotated-token", "re-read at each use");
        assert!(!format!("{c:?} {:?}", here.bearer().unwrap()).contains("rotated-token"));

        let none = |_: &str| None;
        let e = Clusters::resolve(&[KubernetesClusterConfig { in_cluster: true, ..entry("here") }], &none, dir.path()).unwrap_err();
        assert!(e.to_string().contains("KUBERNETES_SERVICE_HOST"), "{e}");
    }

    #[test]
    fn explicit_and_kubeconfig_entries_resolve_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, token) = (dir.path().join("ca.pem"), dir.path().join("token"));
        std::fs::write(&ca, ca_pem()).unwrap();
        std::fs::write(&token, "broker-token").unwrap();
        use base64::Engine;
        let kc = dir.path().join("kubeconfig");
        std::fs::write(
            &kc,
            format!(
                "current-context: c\nclusters: [{{name: k, cluster: {{server: \"https://127.0.0.1:6443\", certificate-authority-data: {}}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\nusers: [{{name: u, user: {{token: inline-secret}}}}]\n",
                base64::engine::general_purpose::STANDARD.encode(ca_pem())
            ),
        )
        .unwrap();
        let none = |_: &str| None;
        let entries = [
            KubernetesClusterConfig { api_server: Some("https://10.0.0.1:6443".into()), ca_file: Some(ca.clone()), token_file: Some(token.clone()), ..entry("a") },
            KubernetesClusterConfig { kubeconfig: Some(kc.clone()), ..entry("b") },
        ];
        let c = Clusters::resolve(&entries, &none, dir.path()).unwrap();
        assert_eq!(c.names(), ["a", "b"]);
        assert_eq!(c.get("b").unwrap().api_server, "https://127.0.0.1:6443");
        assert_eq!(c.get("b").unwrap().bearer().unwrap().unwrap().expose(), "inline-secret");
        assert!(!format!("{c:?}").contains("inline-secret"));

        let dup = [entries[0].clone(), KubernetesClusterConfig { name: "a".into(), ..entries[1].clone() }];
        assert!(Clusters::resolve(&dup, &none, dir.path()).unwrap_err().to_string().contains("kubernetes_clusters[1].name"));
        std::fs::write(&token, "x".repeat(MAX_TOKEN_FILE_BYTES + 1)).unwrap();
        let e = Clusters::resolve(&entries[..1], &none, dir.path()).unwrap_err().to_string();
        assert!(e.contains(&token.display().to_string()) && e.contains("larger than"), "{e}");
        std::fs::write(&token, "two words").unwrap();
        assert!(Clusters::resolve(&entries[..1], &none, dir.path()).unwrap_err().to_string().contains("characters"));
        std::fs::write(&ca, "not a certificate").unwrap();
        let e = Clusters::resolve(&entries[..1], &none, dir.path()).unwrap_err().to_string();
        assert!(e.contains("kubernetes_clusters[a]"), "{e}");
    }

    fn client_pem() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["sigil-broker".to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn client_certificates_from_files_are_reread_and_inline_ones_built_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ca, crt, key) = (dir.path().join("ca.pem"), dir.path().join("broker.crt"), dir.path().join("broker.key"));
        std::fs::write(&ca, ca_pem()).unwrap();
        let (cert_pem, key_pem) = client_pem();
        std::fs::write(&crt, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let none = |_: &str| None;
        let explicit = KubernetesClusterConfig {
            api_server: Some("https://10.0.0.1:6443".into()),
            ca_file: Some(ca.clone()),
            client_cert_file: Some(crt.clone()),
            client_key_file: Some(key.clone()),
            ..entry("files")
        };
        let c = Clusters::resolve(std::slice::from_ref(&explicit), &none, dir.path()).unwrap();
        let files = c.get("files").unwrap();
        let conn = files.connection().unwrap();
        assert!(conn.bearer.is_none() && conn.trust.has_client_cert());
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "a key others could read is narrowed, as other private files");
        let body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!format!("{c:?} {conn:?}").contains(&body[..40]), "no key material in Debug output");

        // Renewed on disk: the next review uses the new pair; a mismatched pair is an error naming both files.
        let (_, other_key) = client_pem();
        std::fs::write(&key, &other_key).unwrap();
        let e = files.connection().unwrap_err().to_string();
        assert!(e.contains("does not belong") && e.contains(&key.display().to_string()) && !e.contains(&body[..40]), "{e}");
        let (new_cert, new_key) = client_pem();
        std::fs::write(&crt, &new_cert).unwrap();
        std::fs::write(&key, &new_key).unwrap();
        assert!(files.connection().unwrap().trust.has_client_cert());
        std::fs::remove_file(&key).unwrap();
        let e = files.connection().unwrap_err().to_string();
        assert!(e.contains(&key.display().to_string()) && e.contains("does not exist"), "{e}");
        let e = Clusters::resolve(&[explicit], &none, dir.path()).unwrap_err().to_string();
        assert!(e.contains("kubernetes_clusters[files]") && e.contains("broker.key"), "{e}");

        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let kc = dir.path().join("kubeconfig");
        std::fs::write(
            &kc,
            format!(
                "current-context: c\nclusters: [{{name: k, cluster: {{server: \"https://127.0.0.1:6443\", certificate-authority-data: {}}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\nusers: [{{name: u, user: {{client-certificate-data: {}, client-key-data: {}}}}}]\n",
                b64(&ca_pem()),
                b64(&cert_pem),
                b64(&key_pem)
            ),
        )
        .unwrap();
        let c = Clusters::resolve(&[KubernetesClusterConfig { kubeconfig: Some(kc.clone()), ..entry("inline") }], &none, dir.path()).unwrap();
        let conn = c.get("inline").unwrap().connection().unwrap();
        assert!(conn.bearer.is_none() && conn.trust.has_client_cert());
        assert!(!format!("{c:?}").contains(&body[..40]));
        std::fs::write(&kc, std::fs::read_to_string(&kc).unwrap().replace(&b64(&key_pem), &b64(&other_key))).unwrap();
        let e = Clusters::resolve(&[KubernetesClusterConfig { kubeconfig: Some(kc), ..entry("inline") }], &none, dir.path()).unwrap_err().to_string();
        assert!(e.contains("users[u].user.client-key-data") && e.contains("does not belong"), "{e}");
    }
}
