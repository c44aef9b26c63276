//! `application`: an X.509-SVID for HTTP/TCP apps that speak mTLS, under the
//! file names TLS software expects.
//!
//! ```text
//! dir/                 (atomic_dir layout: each name -> ..data/NAME)
//!   tls.crt            the leaf alone (nginx ssl_certificate, curl --cert)
//!   tls.key            PKCS#8 private key, generated here, never sent (0600)
//!   tls-chain.pem      leaf + intermediates, for servers that send a chain
//!   ca.pem             the X.509-SVID trust bundle: what a server verifying
//!                      clients trusts (nginx ssl_client_certificate) and what a
//!                      client verifying the server trusts (curl --cacert)
//! ```
//!
//! The certificate is an ordinary X.509-SVID: URI SAN = the SPIFFE ID, DNS
//! SANs (and CN = the first) from the workload identity's `dns_sans`, EKU
//! serverAuth + clientAuth. So the same files serve an app as a client and as
//! a server. Mistakes this module prevents: a key beside another generation's
//! certificate (the four files switch together), a `tls.crt` holding the CA
//! (some servers take the first block of the chain file as theirs: the leaf is
//! always first), a `ca.pem` with the broker's internal CA (which signs bot
//! identities, not workloads: trusting it would let any bot identity in).

use super::cloud_files::blocking;
use super::issue::{self, Target};
use super::{Output, OutputError};
use crate::atomic_dir;
use crate::config::X509Output;
use crate::files::FileError;
use crate::schedule::Lifetime;
use crate::session::Session;
use async_trait::async_trait;
use sigil_core::safe_fs::Access;
use std::path::Path;

/// Leaf certificate file.
pub const CERT_FILE: &str = "tls.crt";
/// Private key file.
pub const KEY_FILE: &str = "tls.key";
/// Leaf and intermediates.
pub const CHAIN_FILE: &str = "tls-chain.pem";
/// The X.509-SVID trust bundle.
pub const CA_FILE: &str = "ca.pem";

/// The `application` output.
#[derive(Debug, Clone)]
pub struct ApplicationDir {
    cfg: X509Output,
    access: Access,
}

impl ApplicationDir {
    /// From config.
    pub fn new(cfg: X509Output, access: Access) -> Self {
        Self { cfg, access }
    }
}

#[async_trait]
impl Output for ApplicationDir {
    fn name(&self) -> String {
        format!("application:{}", self.cfg.dir.display())
    }

    fn carries_bundle(&self) -> bool {
        true
    }

    async fn refresh(&self, session: &Session) -> Result<Lifetime, OutputError> {
        let target = Target { spiffe_id: &self.cfg.spiffe_id, workload_identity: &self.cfg.workload_identity, ttl: self.cfg.ttl };
        let (kp, s) = issue::x509(session, target).await?;
        let files = Files::new(&s.certificate_pem, kp.serialize_pem(), &s.bundle_pem)?;
        let (dir, access) = (self.cfg.dir.clone(), self.access);
        blocking(move || files.write(&dir, &access)).await?;
        Ok(Lifetime { received_at: session.now(), expires_at: s.expires_at })
    }
}

/// One generation of the four files, checked and laid out; shared by the
/// agent and `sigil app cert` so both write the same thing.
#[derive(Clone)]
pub struct Files {
    cert: String,
    key: String,
    chain: String,
    ca: String,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").field("cert", &self.cert).field("key", &"<redacted>").finish_non_exhaustive()
    }
}

impl Files {
    /// From the broker's answer (`certificate_pem`: the leaf first, then any
    /// intermediates; `bundle_pem`: the trust bundle) and the key generated here.
    /// Refuses an answer without a certificate or without a CA.
    pub fn new(certificate_pem: &str, key_pem: String, bundle_pem: &str) -> Result<Self, OutputError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| OutputError::Invalid(format!("the broker's {what}: {e}"));
        let chain = sigil_core::pem::certificate_ders(certificate_pem, "certificate").map_err(|e| bad("certificate", &e))?;
        let ca = sigil_core::pem::certificate_ders(bundle_pem, "trust bundle").map_err(|e| bad("trust bundle", &e))?;
        let Some(leaf) = chain.first() else {
            return Err(OutputError::Invalid("the broker's answer holds no certificate".into()));
        };
        if ca.is_empty() {
            return Err(OutputError::Invalid("the broker's trust bundle holds no CA certificate".into()));
        }
        let pem = |ders: &[Vec<u8>]| ders.iter().map(|d| sigil_core::pem::encode_certificate(d)).collect::<String>();
        Ok(Self { cert: pem(std::slice::from_ref(leaf)), key: key_pem, chain: pem(&chain), ca: pem(&ca) })
    }

    /// Writes the files as one new generation of `dir` (created 0700 if missing).
    pub fn write(&self, dir: &Path, access: &Access) -> Result<(), FileError> {
        let files: [(&str, &[u8]); 4] = [
            (CERT_FILE, self.cert.as_bytes()),
            (KEY_FILE, self.key.as_bytes()),
            (CHAIN_FILE, self.chain.as_bytes()),
            (CA_FILE, self.ca.as_bytes()),
        ];
        atomic_dir::write_with(dir, &files, access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> String {
        let kp = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap().self_signed(&kp).unwrap().pem()
    }

    #[test]
    fn the_leaf_alone_goes_to_tls_crt_and_the_whole_chain_to_tls_chain() {
        let (leaf, inter, root) = (cert("leaf.example"), cert("intermediate.example"), cert("root.example"));
        let f = Files::new(&format!("{leaf}{inter}"), "KEY".into(), &root).unwrap();
        let ders = |t: &str| sigil_core::pem::certificate_ders(t, "t").unwrap();
        assert_eq!(ders(&f.cert), ders(&leaf));
        assert_eq!(ders(&f.chain), [ders(&leaf), ders(&inter)].concat());
        assert_eq!(ders(&f.ca), ders(&root));
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("app");
        f.write(&out, &Access::PRIVATE).unwrap();
        for name in [CERT_FILE, KEY_FILE, CHAIN_FILE, CA_FILE] {
            assert!(out.join(name).exists(), "{name}");
        }
        assert_eq!(std::fs::read_to_string(out.join(KEY_FILE)).unwrap(), "KEY");
    }

    #[test]
    fn an_answer_without_certificate_or_ca_writes_nothing() {
        let c = cert("a.example");
        assert!(Files::new("", "K".into(), &c).unwrap_err().to_string().contains("no certificate"));
        assert!(Files::new(&c, "K".into(), "").unwrap_err().to_string().contains("no CA"));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let c = cert("a.example");
        let f = Files::new(&c, "-----BEGIN PRIVATE KEY-----SECRET".into(), &c).unwrap();
        assert!(!format!("{f:?}").contains("SECRET"));
    }
}
