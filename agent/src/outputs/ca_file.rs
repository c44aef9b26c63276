//! The files an access output (`database`, `kubernetes`) last wrote, kept so
//! that a CA certificate published on the broker (`prepare`) rewrites only the
//! output's CA file within one bundle poll: the certificate and key stay, in a
//! new generation of the same directory ([`crate::atomic_dir`]), so a reader
//! still never sees a certificate beside another generation's key.
//!
//! Kept in memory rather than read back from the directory: the agent only
//! rewrites what it wrote itself, and after a restart it issues anew anyway.

use std::path::PathBuf;
use std::sync::Mutex;

/// One generation: the (absolute) directory and its files.
type Generation = (PathBuf, Vec<(&'static str, String)>);

/// The last generation written, if any. Holds a private key: never printed.
#[derive(Default)]
pub struct LastFiles(Mutex<Option<Generation>>);

impl std::fmt::Debug for LastFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LastFiles(<redacted>)")
    }
}

impl LastFiles {
    /// Records the generation just written to `dir`.
    pub fn remember(&self, dir: PathBuf, files: Vec<(&'static str, String)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((dir, files));
    }

    /// The last generation with `ca_file` replaced by `pem`, remembered as the
    /// new last one; `None` if nothing was written yet or it has no `ca_file`.
    pub fn with_ca(&self, ca_file: &str, pem: &str) -> Option<Generation> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (dir, files) = held.as_mut()?;
        let slot = files.iter_mut().find(|(n, _)| *n == ca_file)?;
        slot.1 = pem.to_string();
        Some((dir.clone(), files.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_ca_file_changes_and_the_key_is_never_printed() {
        let last = LastFiles::default();
        assert!(last.with_ca("ca.pem", "NEW").is_none(), "nothing written yet");
        last.remember("/d".into(), vec![("tls.crt", "CERT".into()), ("tls.key", "SECRET KEY".into()), ("ca.pem", "OLD".into())]);
        let (dir, files) = last.with_ca("ca.pem", "NEW").unwrap();
        assert_eq!(dir, PathBuf::from("/d"));
        assert_eq!(files, vec![("tls.crt", "CERT".to_string()), ("tls.key", "SECRET KEY".to_string()), ("ca.pem", "NEW".to_string())]);
        assert!(last.with_ca("kubernetes-ca.pem", "X").is_none(), "a file the output does not write is not added");
        assert!(!format!("{last:?}").contains("SECRET"));
    }
}
