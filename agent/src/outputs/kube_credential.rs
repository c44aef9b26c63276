//! `sigil kube credential --dir DIR`: the `client.authentication.k8s.io/v1`
//! exec credential plugin of the `kubernetes` output's exec kubeconfig.
//!
//! It never talks to the broker: it reads the pair the agent keeps fresh in
//! DIR and prints
//!
//! ```text
//! {"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",
//!  "status":{"clientCertificateData":"<tls.crt>","clientKeyData":"<tls.key>",
//!            "expirationTimestamp":"<the certificate's notAfter, RFC 3339>"}}
//! ```
//!
//! Per the plugin contract, stdout carries only that object; on any failure
//! nothing goes to stdout, the reason goes to stderr and the exit status is
//! non-zero (kubectl and client libraries show stderr).
//!
//! Mistakes prevented: a key from one generation beside another generation's
//! certificate (both are read relative to the `..data` generation resolved
//! once, and the key is checked to be the certificate's); handing out an
//! expired or not-yet-valid certificate (the client would get a 401 and no
//! hint that the agent stopped renewing); an expiration later than the
//! certificate's (a long-running client would keep a dead credential); the
//! key in an error message (errors name files, never contents).

use crate::atomic_dir::DATA_LINK;
use crate::outputs::kubeconfig::EXEC_API_VERSION;
use crate::outputs::kubernetes::{CERT_FILE, KEY_FILE};
use std::path::{Path, PathBuf};
use secrecy::zeroize::Zeroizing;

/// Largest `KUBERNETES_EXEC_INFO` read (bytes); the client's cluster info is small.
pub const MAX_EXEC_INFO: usize = 64 * 1024;

/// Why no credential can be printed. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// DIR holds no generation of the output.
    #[error("no Kubernetes credential in {dir}: cannot read {DATA_LINK} ({source}); is the sigil agent's kubernetes output (or `sigil kube cert --dir`) writing there, and may this user read it (the output's owner/group/mode)?")]
    NoGeneration {
        /// The output directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key is not the certificate's.
    #[error("{key} does not belong to {cert}; the files were not written by Sigil together")]
    KeyMismatch {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// The certificate is outside its validity.
    #[error("the certificate in {path} {when}; is the sigil agent running and renewing it? (`sigil agent` logs, or run `sigil kube cert` again)")]
    NotValid {
        /// The certificate.
        path: PathBuf,
        /// "expired at T" or "is not valid before T".
        when: String,
    },
    /// The caller asked for another protocol version.
    #[error("KUBERNETES_EXEC_INFO asks for {0}; sigil kube credential speaks {EXEC_API_VERSION}: set users[].user.exec.apiVersion to it")]
    ApiVersion(String),
    /// `KUBERNETES_EXEC_INFO` is not an ExecCredential.
    #[error("KUBERNETES_EXEC_INFO is not a JSON ExecCredential: {0}")]
    ExecInfo(String),
}

/// Checks the `KUBERNETES_EXEC_INFO` the client passed, if any: it must ask for v1.
pub fn check_exec_info(info: Option<&str>) -> Result<(), CredentialError> {
    let Some(info) = info.filter(|i| !i.trim().is_empty()) else { return Ok(()) };
    if info.len() > MAX_EXEC_INFO {
        return Err(CredentialError::ExecInfo(format!("larger than {MAX_EXEC_INFO} bytes")));
    }
    let v: serde_json::Value = serde_json::from_str(info).map_err(|e| CredentialError::ExecInfo(e.to_string()))?;
    match v.get("apiVersion").and_then(|a| a.as_str()) {
        Some(EXEC_API_VERSION) => Ok(()),
        Some(other) => Err(CredentialError::ApiVersion(other.chars().take(100).collect())),
        None => Err(CredentialError::ExecInfo("no apiVersion".into())),
    }
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{secs} (Unix seconds)"))
}

fn read(path: &Path) -> Result<Zeroizing<String>, CredentialError> {
    sigil_core::pem::read_file(path).map(Zeroizing::new).map_err(|source| CredentialError::Read { path: path.to_path_buf(), source })
}

/// The ExecCredential JSON for the current generation in `dir`, checked at `now` (Unix seconds).
pub fn exec_credential(dir: &Path, now: i64) -> Result<Zeroizing<String>, CredentialError> {
    let version = std::fs::read_link(dir.join(DATA_LINK)).map_err(|source| CredentialError::NoGeneration { dir: dir.to_path_buf(), source })?;
    // Both files from the one generation `..data` named just now; the agent
    // keeps it until the next switch.
    let generation = dir.join(version);
    let (cert_path, key_path) = (generation.join(CERT_FILE), generation.join(KEY_FILE));
    let (shown_cert, shown_key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let cert = read(&cert_path).map_err(|e| rename(e, &shown_cert))?;
    let key = read(&key_path).map_err(|e| rename(e, &shown_key))?;
    let invalid = |path: &Path, why: String| CredentialError::Invalid { path: path.to_path_buf(), why };
    let ders = sigil_core::pem::certificate_ders(&cert, CERT_FILE).map_err(|e| invalid(&shown_cert, e.to_string()))?;
    let leaf = ders.first().ok_or_else(|| invalid(&shown_cert, "holds no certificate".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| invalid(&shown_cert, format!("not an X.509 certificate: {e}")))?;
    let kp = rcgen::KeyPair::from_pem(&key).map_err(|_| invalid(&shown_key, "holds no usable private key".into()))?;
    if kp.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
        return Err(CredentialError::KeyMismatch { cert: shown_cert, key: shown_key });
    }
    let (not_before, not_after) = (parsed.validity().not_before.timestamp(), parsed.validity().not_after.timestamp());
    if now >= not_after {
        return Err(CredentialError::NotValid { path: shown_cert, when: format!("expired at {}", rfc3339(not_after)) });
    }
    if now < not_before {
        return Err(CredentialError::NotValid { path: shown_cert, when: format!("is not valid before {}", rfc3339(not_before)) });
    }
    let out = serde_json::json!({
        "apiVersion": EXEC_API_VERSION,
        "kind": "ExecCredential",
        "status": {
            "clientCertificateData": cert.as_str(),
            "clientKeyData": key.as_str(),
            "expirationTimestamp": rfc3339(not_after),
        }
    });
    Ok(Zeroizing::new(out.to_string()))
}

/// Names the stable path (`dir/tls.crt`) in errors rather than the generation's.
fn rename(e: CredentialError, shown: &Path) -> CredentialError {
    match e {
        CredentialError::Read { source, .. } => CredentialError::Read { path: shown.to_path_buf(), source },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic_dir;

    const NOW: i64 = 1_800_000_000;

    /// A certificate valid [nb, na] and its key.
    fn pair(nb: i64, na: i64) -> (String, String) {
        let kp = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "deployer");
        p.not_before = time::OffsetDateTime::from_unix_timestamp(nb).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(na).unwrap();
        (p.self_signed(&kp).unwrap().pem(), kp.serialize_pem())
    }

    fn write(dir: &Path, cert: &str, key: &str) {
        atomic_dir::write(dir, &[(CERT_FILE, cert.as_bytes()), (KEY_FILE, key.as_bytes())]).unwrap();
    }

    #[test]
    fn a_valid_pair_gives_a_v1_exec_credential_expiring_with_the_certificate() {
        let d = tempfile::tempdir().unwrap();
        let (cert, key) = pair(NOW - 60, NOW + 3600);
        write(d.path(), &cert, &key);
        let out = exec_credential(d.path(), NOW).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["apiVersion"], EXEC_API_VERSION);
        assert_eq!(v["kind"], "ExecCredential");
        assert_eq!(v["status"]["clientCertificateData"], cert.as_str());
        assert_eq!(v["status"]["clientKeyData"], key.as_str());
        assert_eq!(v["status"]["expirationTimestamp"], rfc3339(NOW + 3600));
        assert_eq!(v["status"]["expirationTimestamp"], "2027-01-15T09:00:00Z");
    }

    #[test]
    fn a_missing_directory_names_the_agent_output() {
        let d = tempfile::tempdir().unwrap();
        let e = exec_credential(&d.path().join("none"), NOW).unwrap_err().to_string();
        assert!(e.contains("no Kubernetes credential") && e.contains("kubernetes output"), "{e}");
    }

    #[test]
    fn an_expired_or_future_certificate_is_refused_without_printing_the_key() {
        let d = tempfile::tempdir().unwrap();
        let (cert, key) = pair(NOW - 7200, NOW - 1);
        write(d.path(), &cert, &key);
        let e = exec_credential(d.path(), NOW).unwrap_err().to_string();
        assert!(e.contains("expired at") && e.contains("agent running"), "{e}");
        assert!(!e.contains("PRIVATE KEY"));
        let (cert, key) = pair(NOW + 60, NOW + 3600);
        write(d.path(), &cert, &key);
        assert!(exec_credential(d.path(), NOW).unwrap_err().to_string().contains("not valid before"));
    }

    #[test]
    fn a_key_from_another_pair_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ((cert, _), (_, other_key)) = (pair(NOW - 60, NOW + 60), pair(NOW - 60, NOW + 60));
        write(d.path(), &cert, &other_key);
        let e = exec_credential(d.path(), NOW).unwrap_err().to_string();
        assert!(e.contains("does not belong to"), "{e}");
        assert!(!e.contains("PRIVATE KEY"));
    }

    #[test]
    fn a_missing_or_garbled_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        atomic_dir::write(d.path(), &[(CERT_FILE, b"junk"), (KEY_FILE, b"junk")]).unwrap();
        let e = exec_credential(d.path(), NOW).unwrap_err().to_string();
        assert!(e.contains(&d.path().join(CERT_FILE).display().to_string()), "{e}");
        let (cert, _) = pair(NOW - 60, NOW + 60);
        atomic_dir::write(d.path(), &[(CERT_FILE, cert.as_bytes())]).unwrap();
        let e = exec_credential(d.path(), NOW).unwrap_err().to_string();
        assert!(e.contains(&d.path().join(KEY_FILE).display().to_string()), "{e}");
    }

    #[test]
    fn exec_info_must_ask_for_v1() {
        assert!(check_exec_info(None).is_ok());
        assert!(check_exec_info(Some(r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#)).is_ok());
        let e = check_exec_info(Some(r#"{"apiVersion":"client.authentication.k8s.io/v1beta1"}"#)).unwrap_err().to_string();
        assert!(e.contains("v1beta1") && e.contains("apiVersion"), "{e}");
        assert!(check_exec_info(Some("not json")).is_err());
        assert!(check_exec_info(Some(&" ".repeat(MAX_EXEC_INFO + 1))).is_ok());
        assert!(check_exec_info(Some(&format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_EXEC_INFO)))).unwrap_err().to_string().contains("larger"));
    }
}
