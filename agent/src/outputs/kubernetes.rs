//! `kubernetes`: a client certificate for the Kubernetes API (CN = user,
//! O = groups, signed by the broker's kubernetes CA, which the API server
//! trusts with `--client-ca-file`) and a kubeconfig that uses it, in one
//! directory switched atomically ([`crate::atomic_dir`]):
//!
//! ```text
//! dir/
//!   tls.crt            client certificate (leaf)
//!   tls.key            its private key, PKCS#8 PEM, generated here, never sent (0600)
//!   kubeconfig         cluster + user + context; the user names tls.crt/tls.key,
//!                      or (exec: true) runs `sigil kube credential --dir dir`
//!   ca.pem             the API server's CA (a copy of cluster_ca_file), if given
//!   kubernetes-ca.pem  the Sigil kubernetes CA bundle (every published key):
//!                      what the API server's --client-ca-file holds; follows
//!                      a CA rotation within one bundle poll
//! ```
//!
//! The kubeconfig names `dir/tls.crt` etc. (the stable symlinks), so it only
//! changes when the settings do, and a client pointed at it (`KUBECONFIG`)
//! picks up each renewal the next time it loads it. The one-shot `sigil kube
//! cert` calls [`write_dir`] with the admin CLI's connection.

use super::ca_file::LastFiles;
use super::cloud_files::blocking;
use super::kubeconfig::{self, Credential, Settings};
use super::{broker_err, Output, OutputError};
use crate::atomic_dir;
use crate::bundle::AccessPurpose;
use crate::config::{Dur, KubernetesOutput};
use crate::schedule::Lifetime;
use crate::session::Session;
use async_trait::async_trait;
use sigil_core::safe_fs::Access;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// `IssueTlsCertificateRequest.kind` of a Kubernetes client certificate.
pub const KIND: &str = "kubernetes-client";
/// Client certificate.
pub const CERT_FILE: &str = "tls.crt";
/// Its private key.
pub const KEY_FILE: &str = "tls.key";
/// The kubeconfig.
pub const KUBECONFIG_FILE: &str = "kubeconfig";
/// The API server's CA (copy of `cluster_ca_file`).
pub const CLUSTER_CA_FILE: &str = "ca.pem";
/// The Sigil kubernetes CA bundle (for the API server's `--client-ca-file`).
pub const CLIENT_CA_FILE: &str = "kubernetes-ca.pem";

/// The kubernetes output.
#[derive(Debug)]
pub struct KubernetesDir {
    cfg: KubernetesOutput,
    access: Access,
    last: LastFiles,
}

impl KubernetesDir {
    /// From config.
    pub fn new(cfg: KubernetesOutput, access: Access) -> Self {
        Self { cfg, access, last: LastFiles::default() }
    }
}

#[async_trait]
impl Output for KubernetesDir {
    fn name(&self) -> String {
        format!("kubernetes:{}", self.cfg.dir.display())
    }

    fn access_ca(&self) -> Option<AccessPurpose> {
        Some(AccessPurpose::Kubernetes)
    }

    async fn rewrite_ca(&self, bundle_pem: &str) -> Result<bool, OutputError> {
        let Some((dir, files)) = self.last.with_ca(CLIENT_CA_FILE, bundle_pem) else { return Ok(false) };
        write(dir, files, self.access).await?;
        Ok(true)
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let mut client = session.client().await?;
        let (dir, files, issued) = issue_files(&mut client, &self.cfg).await?;
        write(dir.clone(), files.clone(), self.access).await?;
        self.last.remember(dir, files);
        Ok(Lifetime { received_at: session.now(), expires_at: issued.expires_at })
    }
}

/// Reads `cluster_ca_file` (bounded) and checks it holds certificates.
fn read_cluster_ca(path: &Path) -> Result<String, OutputError> {
    let text = sigil_core::pem::read_file(path).map_err(|source| OutputError::ReadCa { path: path.to_path_buf(), source })?;
    match sigil_core::pem::certificates(&text, &path.display().to_string()) {
        Ok(c) if !c.is_empty() => Ok(text),
        Ok(_) => Err(OutputError::Invalid(format!("cluster_ca_file {} holds no certificate", path.display()))),
        Err(e) => Err(OutputError::Invalid(e.to_string())),
    }
}

/// The files of one generation, from the broker's answer, the key generated
/// here and the API server's CA (if given). `dir` is absolute.
pub fn files(cfg: &KubernetesOutput, dir: &Path, sigil: &Path, cert: &pb::TlsCertificate, key_pem: String, cluster_ca: Option<String>) -> Result<Vec<(&'static str, String)>, OutputError> {
    let leaf = sigil_core::pem::certificate_ders(&cert.certificate_pem, "certificate")
        .ok()
        .and_then(|d| d.into_iter().next())
        .ok_or_else(|| OutputError::Invalid("the broker's answer holds no certificate".into()))?;
    let ca_ok = sigil_core::pem::certificate_ders(&cert.ca_bundle_pem, "kubernetes CA bundle").is_ok_and(|d| !d.is_empty());
    if !ca_ok {
        return Err(OutputError::Invalid("the broker sent no kubernetes CA bundle".into()));
    }
    let (cert_path, key_path, ca_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE), dir.join(CLUSTER_CA_FILE));
    let credential = if cfg.exec { Credential::Exec { sigil, dir } } else { Credential::Files { cert: &cert_path, key: &key_path } };
    let settings = Settings { name: &cfg.context_name, server: &cfg.server, cluster_ca: cluster_ca.as_ref().map(|_| ca_path.as_path()), credential };
    let kubeconfig = kubeconfig::render(&settings).map_err(|e| OutputError::Invalid(format!("cannot write the kubeconfig: {e}")))?;
    let mut out = vec![
        (CERT_FILE, sigil_core::pem::encode_certificate(&leaf)),
        (KEY_FILE, key_pem),
        (KUBECONFIG_FILE, kubeconfig),
        (CLIENT_CA_FILE, cert.ca_bundle_pem.clone()),
    ];
    if let Some(ca) = cluster_ca {
        out.push((CLUSTER_CA_FILE, ca));
    }
    Ok(out)
}

/// Issues a client certificate for `cfg.user` / `cfg.groups` and writes the
/// whole output directory as one generation. Returns what the broker sent.
pub async fn write_dir(client: &mut SigilClient<Channel>, cfg: &KubernetesOutput, access: Access) -> Result<pb::TlsCertificate, OutputError> {
    let (dir, files, cert) = issue_files(client, cfg).await?;
    write(dir, files, access).await?;
    Ok(cert)
}

/// The files of one generation (a certificate issued now) and the absolute directory.
async fn issue_files(client: &mut SigilClient<Channel>, cfg: &KubernetesOutput) -> Result<(PathBuf, Vec<(&'static str, String)>, pb::TlsCertificate), OutputError> {
    let cluster_ca = match &cfg.cluster_ca_file {
        Some(p) => {
            let p = p.clone();
            Some(blocking_result(move || read_cluster_ca(&p)).await?)
        }
        None => None,
    };
    let dir = std::path::absolute(&cfg.dir).map_err(|e| OutputError::Invalid(format!("cannot make {} absolute: {e}", cfg.dir.display())))?;
    let (kp, csr) = sigil_core::csr::key_and_csr().map_err(|e| OutputError::Key(e.to_string()))?;
    let req = pb::IssueTlsCertificateRequest { kind: KIND.into(), csr, user: cfg.user.clone(), groups: cfg.groups.clone(), ttl_seconds: Dur::secs(cfg.ttl), ..Default::default() };
    let what = if cfg.groups.is_empty() { format!("Kubernetes client certificate for user {}", cfg.user) } else { format!("Kubernetes client certificate for user {} in groups {}", cfg.user, cfg.groups.join(", ")) };
    let cert = client.issue_tls_certificate(req).await.map_err(|s| broker_err(what, s))?.into_inner();
    let sigil = cfg.sigil_command();
    let files = files(cfg, &dir, &sigil, &cert, kp.serialize_pem(), cluster_ca)?;
    Ok((dir, files, cert))
}

async fn blocking_result<T: Send + 'static>(f: impl FnOnce() -> Result<T, OutputError> + Send + 'static) -> Result<T, OutputError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| OutputError::Invalid(format!("file task failed: {e}")))?
}

async fn write(dir: PathBuf, files: Vec<(&'static str, String)>, access: Access) -> Result<(), OutputError> {
    blocking(move || {
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_bytes())).collect();
        atomic_dir::write_with(&dir, &refs, &access)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(exec: bool) -> KubernetesOutput {
        serde_norway::from_str(&format!("dir: /run/kube\nserver: https://127.0.0.1:6443\nuser: deployer\ngroups: [deployers]\nexec: {exec}\nsigil_path: /usr/bin/sigil\n")).unwrap()
    }

    fn answer() -> pb::TlsCertificate {
        let kp = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&kp).unwrap().pem();
        pb::TlsCertificate { certificate_pem: c.clone(), ca_bundle_pem: c, serial: "01".into(), expires_at: 1 }
    }

    fn get<'a>(f: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        f.iter().find(|(n, _)| *n == name).map(|(_, t)| t.as_str())
    }

    #[test]
    fn the_files_variant_points_the_kubeconfig_at_the_stable_names() {
        let c = cfg(false);
        let f = files(&c, Path::new("/run/kube"), Path::new("/usr/bin/sigil"), &answer(), "KEY".into(), Some("CA".into())).unwrap();
        let kc = get(&f, KUBECONFIG_FILE).unwrap();
        assert!(kc.contains("client-certificate: /run/kube/tls.crt") && kc.contains("client-key: /run/kube/tls.key"), "{kc}");
        assert!(kc.contains("certificate-authority: /run/kube/ca.pem"), "{kc}");
        assert_eq!(get(&f, KEY_FILE), Some("KEY"));
        assert_eq!(get(&f, CLUSTER_CA_FILE), Some("CA"));
        assert!(get(&f, CLIENT_CA_FILE).is_some_and(|t| t.contains("BEGIN CERTIFICATE")));
    }

    #[test]
    fn the_exec_variant_runs_the_configured_sigil_and_writes_no_cluster_ca_without_one() {
        let c = cfg(true);
        let f = files(&c, Path::new("/run/kube"), Path::new("/usr/bin/sigil"), &answer(), "KEY".into(), None).unwrap();
        let kc = get(&f, KUBECONFIG_FILE).unwrap();
        assert!(kc.contains("command: /usr/bin/sigil") && !kc.contains("client-key"), "{kc}");
        assert!(get(&f, CLUSTER_CA_FILE).is_none() && !kc.contains("certificate-authority"));
        assert!(get(&f, CERT_FILE).is_some());
    }

    #[test]
    fn an_answer_without_certificate_or_bundle_writes_nothing() {
        let c = cfg(false);
        let mut a = answer();
        a.ca_bundle_pem.clear();
        assert!(files(&c, Path::new("/k"), Path::new("/s"), &a, "K".into(), None).unwrap_err().to_string().contains("no kubernetes CA bundle"));
        let mut a = answer();
        a.certificate_pem.clear();
        assert!(files(&c, Path::new("/k"), Path::new("/s"), &a, "K".into(), None).unwrap_err().to_string().contains("no certificate"));
    }
}
