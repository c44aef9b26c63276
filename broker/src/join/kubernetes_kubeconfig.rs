//! The part of a kubeconfig file the broker's TokenReview client needs: which
//! context (`current-context`, or one named in the broker config), that
//! context's cluster (`server`, `certificate-authority[-data]`) and user
//! (`token` or `tokenFile`, or a client certificate: `client-certificate[-data]`
//! with `client-key[-data]`, as kind, minikube and kubeadm write them). Pure:
//! text in, [`Resolved`] out; the files are read by [`super::kubernetes_cluster`].
//!
//! Everything else a kubeconfig can say about how to authenticate (`exec`
//! plugins, `auth-provider`, basic auth) or how to reach
//! the server (`insecure-skip-tls-verify`, `tls-server-name`, `proxy-url`) is
//! refused by name rather than silently ignored: a broker that quietly
//! skipped TLS verification, or sent no credentials, would be worse than one
//! that does not start.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Why a kubeconfig cannot be used. Messages name the file and the field,
/// never a credential's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KubeconfigError {
    /// Not YAML of the kubeconfig shape.
    #[error("kubeconfig {file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// What the parser said (no value of the file).
        message: String,
    },
    /// A field is missing, names nothing, or is not supported.
    #[error("kubeconfig {file}: {field}: {message}")]
    Field {
        /// The file.
        file: String,
        /// The field, as a path (`users[admin].user.exec`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// What the broker takes from a kubeconfig.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The context used.
    pub context: String,
    /// The API server URL.
    pub server: String,
    /// The CA to trust, PEM text or a file (relative paths resolved against the kubeconfig's directory).
    pub ca: Option<CaSource>,
    /// The broker's credential.
    pub credential: UserCredential,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved").field("context", &self.context).field("server", &self.server).field("ca", &self.ca).field("credential", &self.credential).finish()
    }
}

/// Where the cluster CA comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// `certificate-authority-data`, decoded.
    Pem(String),
    /// `certificate-authority`.
    File(PathBuf),
}

/// The user's credential: one bearer token, or one client certificate.
#[derive(Clone, PartialEq, Eq)]
pub enum UserCredential {
    /// `token`: inline (a secret: Debug shows none of it).
    Inline(String),
    /// `tokenFile`: re-read at each use.
    File(PathBuf),
    /// `client-certificate[-data]` + `client-key[-data]`.
    ClientCert {
        /// The certificate chain (PEM).
        cert: PemSource,
        /// Its private key (PEM).
        key: PemSource,
    },
}

impl std::fmt::Debug for UserCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::ClientCert { cert, key } => f.debug_struct("ClientCert").field("cert", cert).field("key", key).finish(),
        }
    }
}

/// Where a PEM text is: inline (`-data`, decoded; Debug shows only its
/// length, as it may be a key) or a file (relative paths resolved against
/// the kubeconfig's directory).
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// The decoded `-data` field, with the field's name for errors.
    Inline {
        /// The PEM text.
        pem: String,
        /// The field it came from (`users[admin].user.client-key-data`).
        field: String,
    },
    /// A file.
    File(PathBuf),
}

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline { pem, field } => write!(f, "Inline({field}, {} bytes)", pem.len()),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

// Wire shape of the kubeconfig subset (unknown keys ignored, as kubectl does).

#[derive(Deserialize)]
struct KubeconfigDoc {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "context", alias = "user")]
    #[serde(default = "none")]
    value: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: Option<String>,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
    proxy_url: Option<String>,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: Option<String>,
    user: Option<String>,
}

#[derive(Deserialize)]
struct UserEntry {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    #[serde(rename = "client-certificate")]
    client_certificate: Option<String>,
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key")]
    client_key: Option<String>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
    exec: Option<serde_json::Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_json::Value>,
    username: Option<String>,
    password: Option<String>,
}

/// Most entries of each list read.
pub const MAX_ENTRIES: usize = 256;

/// Resolves `context` (else `current-context`) of the kubeconfig `text`,
/// read from `file` (relative paths in it resolve against its directory).
pub fn resolve(text: &str, file: &Path, context: Option<&str>) -> Result<Resolved, KubeconfigError> {
    let shown = file.display().to_string();
    let field = |field: String, message: &str| KubeconfigError::Field { file: shown.clone(), field, message: message.to_string() };
    // serde_norway's messages quote no values of scalars it failed on beyond a type name; keep only the location part.
    let doc: KubeconfigDoc = serde_norway::from_str(text).map_err(|e| KubeconfigError::Syntax { file: shown.clone(), message: syntax_message(&e) })?;
    if doc.clusters.len() > MAX_ENTRIES || doc.contexts.len() > MAX_ENTRIES || doc.users.len() > MAX_ENTRIES {
        return Err(field("clusters/contexts/users".into(), &format!("more than {MAX_ENTRIES} entries")));
    }
    let (ctx_name, ctx_field) = match context.map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => (c.to_string(), "context (broker config)"),
        None => match doc.current_context.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(c) => (c.to_string(), "current-context"),
            None => return Err(field("current-context".into(), "not set; set it, or name a context in the broker's kubernetes_clusters entry")),
        },
    };
    let ctx = find(&doc.contexts, &ctx_name).ok_or_else(|| field(ctx_field.into(), &format!("names no entry of contexts ({ctx_name:?})")))?;
    let ctx_path = format!("contexts[{ctx_name}].context");
    let ctx = ctx.ok_or_else(|| field(ctx_path.clone(), "missing"))?;
    let cluster_name = ctx.cluster.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| field(format!("{ctx_path}.cluster"), "required"))?;
    let user_name = ctx.user.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| field(format!("{ctx_path}.user"), "required (the broker authenticates with the user's token)"))?;
    let cluster = find(&doc.clusters, cluster_name).ok_or_else(|| field(format!("{ctx_path}.cluster"), &format!("names no entry of clusters ({cluster_name:?})")))?;
    let cpath = format!("clusters[{cluster_name}].cluster");
    let cluster = cluster.ok_or_else(|| field(cpath.clone(), "missing"))?;
    let user = find(&doc.users, user_name).ok_or_else(|| field(format!("{ctx_path}.user"), &format!("names no entry of users ({user_name:?})")))?;
    let upath = format!("users[{user_name}].user");
    let user = user.ok_or_else(|| field(upath.clone(), "missing"))?;

    let server = cluster.server.as_deref().map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| field(format!("{cpath}.server"), "required"))?;
    if !server.starts_with("https://") {
        return Err(field(format!("{cpath}.server"), "must be an https:// URL (the pod's token is sent to it)"));
    }
    if cluster.insecure_skip_tls_verify {
        return Err(field(format!("{cpath}.insecure-skip-tls-verify"), "not supported: the broker always verifies the API server's certificate"));
    }
    for (name, set) in [("tls-server-name", cluster.tls_server_name.is_some()), ("proxy-url", cluster.proxy_url.is_some())] {
        if set {
            return Err(field(format!("{cpath}.{name}"), "not supported by the broker's TokenReview client"));
        }
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let ca = match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
        (Some(_), Some(_)) => return Err(field(cpath.clone(), "certificate-authority and certificate-authority-data are both set; keep one")),
        (Some(data), None) => {
            use base64::Engine;
            let der_or_pem = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|_| field(format!("{cpath}.certificate-authority-data"), "not base64"))?;
            let pem = String::from_utf8(der_or_pem).map_err(|_| field(format!("{cpath}.certificate-authority-data"), "not base64 of PEM text"))?;
            Some(CaSource::Pem(pem))
        }
        (None, Some(path)) => Some(CaSource::File(dir.join(path))),
        (None, None) => None,
    };

    let unsupported = [
        ("exec", user.exec.is_some()),
        ("auth-provider", user.auth_provider.is_some()),
        ("username", user.username.is_some()),
        ("password", user.password.is_some()),
    ];
    if let Some((n, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(field(
            format!("{upath}.{n}"),
            "not supported: the broker authenticates to the API server with a bearer token (token or tokenFile) or a client certificate (client-certificate[-data] and client-key[-data])",
        ));
    }
    let token = user.token.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let token_file = user.token_file.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let pem = |path: &Option<String>, data: &Option<String>, name: &str| -> Result<Option<PemSource>, KubeconfigError> {
        match (data, path.as_deref().map(str::trim).filter(|p| !p.is_empty())) {
            (Some(_), Some(_)) => Err(field(upath.clone(), &format!("{name} and {name}-data are both set; keep one"))),
            (Some(d), None) => {
                let at = format!("{upath}.{name}-data");
                Ok(Some(PemSource::Inline { pem: decode_pem(d).map_err(|m| field(at.clone(), m))?, field: at }))
            }
            (None, Some(p)) => Ok(Some(PemSource::File(dir.join(p)))),
            (None, None) => Ok(None),
        }
    };
    let cert = pem(&user.client_certificate, &user.client_certificate_data, "client-certificate")?;
    let key = pem(&user.client_key, &user.client_key_data, "client-key")?;
    if token.is_some() && token_file.is_some() {
        return Err(field(upath, "token and tokenFile are both set; keep one"));
    }
    if (token.is_some() || token_file.is_some()) && (cert.is_some() || key.is_some()) {
        return Err(field(upath, "has both a bearer token (token/tokenFile) and a client certificate; keep one"));
    }
    let credential = match (token, token_file, cert, key) {
        (Some(t), _, _, _) => UserCredential::Inline(t.to_string()),
        (_, Some(p), _, _) => UserCredential::File(dir.join(p)),
        (None, None, Some(cert), Some(key)) => UserCredential::ClientCert { cert, key },
        (None, None, Some(_), None) => return Err(field(format!("{upath}.client-key"), "required with client-certificate (set client-key or client-key-data)")),
        (None, None, None, Some(_)) => {
            return Err(field(format!("{upath}.client-certificate"), "required with client-key (set client-certificate or client-certificate-data)"))
        }
        (None, None, None, None) => return Err(field(upath, "has no token, tokenFile or client-certificate/client-key")),
    };
    Ok(Resolved { context: ctx_name, server: server.trim_end_matches('/').to_string(), ca, credential })
}

/// A `-data` field: base64 of PEM text. The message names no content.
fn decode_pem(data: &str) -> Result<String, &'static str> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|_| "not base64")?;
    String::from_utf8(bytes).map_err(|_| "not base64 of PEM text")
}

fn find<'a, T>(list: &'a [Named<T>], name: &str) -> Option<Option<&'a T>> {
    list.iter().find(|e| e.name == name).map(|e| e.value.as_ref())
}

/// The parser's error without any quoted value (a value could be a token).
fn syntax_message(e: &serde_norway::Error) -> String {
    match e.location() {
        Some(l) => format!("not a kubeconfig (YAML error at line {}, column {})", l.line(), l.column()),
        None => "not a kubeconfig (YAML of the wrong shape)".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: prod-cluster
  cluster:
    server: https://10.0.0.1:6443/
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
- name: stage-cluster
  cluster:
    server: https://stage.example:443
    certificate-authority: ca/stage.crt
contexts:
- name: prod
  context: {cluster: prod-cluster, user: reviewer, namespace: sigil}
- name: stage
  context: {cluster: stage-cluster, user: stage-reviewer}
- name: exec
  context: {cluster: stage-cluster, user: sso}
- name: certs
  context: {cluster: stage-cluster, user: cert-user}
- name: cert-files
  context: {cluster: stage-cluster, user: cert-files}
users:
- name: reviewer
  user: {token: s3cr3t-reviewer-token}
- name: stage-reviewer
  user: {tokenFile: tokens/reviewer}
- name: sso
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}
- name: cert-user
  user: {client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==, client-key-data: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCg==}
- name: cert-files
  user: {client-certificate: pki/broker.crt, client-key: /keys/broker.key}
"#;

    fn file() -> &'static Path {
        Path::new("/etc/sigil/kubeconfig")
    }

    #[test]
    fn the_current_context_gives_server_ca_data_and_inline_token() {
        let r = resolve(KUBECONFIG, file(), None).unwrap();
        assert_eq!((r.context.as_str(), r.server.as_str()), ("prod", "https://10.0.0.1:6443"));
        assert_eq!(r.ca, Some(CaSource::Pem("-----BEGIN CERTIFICATE-----\n".into())));
        assert_eq!(r.credential, UserCredential::Inline("s3cr3t-reviewer-token".into()));
        assert!(!format!("{r:?}").contains("s3cr3t"), "the token is not in Debug output");
    }

    #[test]
    fn a_named_context_resolves_relative_files_against_the_kubeconfig_directory() {
        let r = resolve(KUBECONFIG, file(), Some("stage")).unwrap();
        assert_eq!(r.server, "https://stage.example:443");
        assert_eq!(r.ca, Some(CaSource::File("/etc/sigil/ca/stage.crt".into())));
        assert_eq!(r.credential, UserCredential::File("/etc/sigil/tokens/reviewer".into()));
    }

    #[test]
    fn unsupported_authentication_is_refused_naming_the_field() {
        let e = resolve(KUBECONFIG, file(), Some("exec")).unwrap_err().to_string();
        assert!(e.contains("/etc/sigil/kubeconfig") && e.contains("users[sso].user.exec") && e.contains("not supported"), "{e}");
    }

    #[test]
    fn client_certificates_come_inline_or_from_files_relative_to_the_kubeconfig() {
        let r = resolve(KUBECONFIG, file(), Some("certs")).unwrap();
        let UserCredential::ClientCert { cert, key } = &r.credential else { panic!("{r:?}") };
        assert_eq!(cert, &PemSource::Inline { pem: "-----BEGIN CERTIFICATE-----\n".into(), field: "users[cert-user].user.client-certificate-data".into() });
        assert!(matches!(key, PemSource::Inline { field, .. } if field == "users[cert-user].user.client-key-data"));
        assert!(!format!("{r:?}").contains("PRIVATE KEY"), "the key is not in Debug output");
        let r = resolve(KUBECONFIG, file(), Some("cert-files")).unwrap();
        assert_eq!(
            r.credential,
            UserCredential::ClientCert { cert: PemSource::File("/etc/sigil/pki/broker.crt".into()), key: PemSource::File("/keys/broker.key".into()) }
        );
    }

    #[test]
    fn a_user_needs_exactly_one_credential_and_a_certificate_needs_its_key() {
        let with = |user: &str| KUBECONFIG.replace("user: {client-certificate: pki/broker.crt, client-key: /keys/broker.key}", user);
        let e = |user: &str| resolve(&with(user), file(), Some("cert-files")).unwrap_err().to_string();
        assert!(e("user: {client-certificate: a.crt}").contains("users[cert-files].user.client-key: required"));
        assert!(e("user: {client-key-data: QQ==}").contains("users[cert-files].user.client-certificate: required"));
        assert!(e("user: {client-certificate: a.crt, client-certificate-data: QQ==, client-key: k}").contains("keep one"));
        assert!(e("user: {token: t, client-certificate: a.crt, client-key: k}").contains("bearer token"));
        assert!(e("user: {client-certificate: a.crt, client-key-data: \"%%%\"}").contains("users[cert-files].user.client-key-data: not base64"));
        assert!(e("user: {}").contains("has no token"));
    }

    #[test]
    fn unknown_contexts_clusters_and_users_are_named() {
        let e = resolve(KUBECONFIG, file(), Some("dev")).unwrap_err().to_string();
        assert!(e.contains("context (broker config)") && e.contains("\"dev\""), "{e}");
        let text = KUBECONFIG.replace("cluster: prod-cluster, user: reviewer", "cluster: gone, user: reviewer");
        let e = resolve(&text, file(), None).unwrap_err().to_string();
        assert!(e.contains("contexts[prod].context.cluster") && e.contains("\"gone\""), "{e}");
        let text = KUBECONFIG.replace("current-context: prod\n", "");
        assert!(resolve(&text, file(), None).unwrap_err().to_string().contains("current-context"));
    }

    #[test]
    fn skipping_tls_verification_or_plain_http_is_refused() {
        let text = KUBECONFIG.replace("    server: https://10.0.0.1:6443/\n", "    server: https://10.0.0.1:6443/\n    insecure-skip-tls-verify: true\n");
        assert!(resolve(&text, file(), None).unwrap_err().to_string().contains("insecure-skip-tls-verify"));
        let text = KUBECONFIG.replace("https://10.0.0.1:6443/", "http://10.0.0.1:8080");
        assert!(resolve(&text, file(), None).unwrap_err().to_string().contains("https://"));
    }

    #[test]
    fn a_syntax_error_names_the_file_and_no_value() {
        let e = resolve("users: [{name: a, user: {token: [s3cr3t-in-a-list]}}]\ncurrent-context: x\n", file(), None).unwrap_err().to_string();
        assert!(e.contains("/etc/sigil/kubeconfig") && !e.contains("s3cr3t"), "{e}");
    }
}
