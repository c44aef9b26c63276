//! Writing the files cloud SDKs read, with the agent's atomic discipline
//! ([`crate::agent::files::write_atomic`]: temp file, fsync, rename, 0600):
//! token files, JSON configs, and one INI section of a shared AWS config or
//! credentials file (other sections and comments are kept).

use super::ensure_parent;
use crate::agent::files::{self, FileError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Serialises read-modify-write of INI files: two outputs may own two
/// profiles of one `~/.aws/credentials`.
static INI_LOCK: Mutex<()> = Mutex::new(());

fn read_existing(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Write { path: path.to_path_buf(), source }),
    }
}

/// Writes `data` atomically (0600), creating the parent directory (0700) if needed.
pub(crate) fn write(path: &Path, data: &[u8]) -> Result<(), FileError> {
    ensure_parent(path)?;
    files::remove_stale_temps_for(path);
    files::write_atomic(path, data)
}

/// Like [`write`], but leaves the file alone when it already holds `data`, so
/// watchers of a config that never changes are not woken at every renewal.
pub(crate) fn write_if_changed(path: &Path, data: &[u8]) -> Result<(), FileError> {
    if read_existing(path)?.as_deref() == Some(data) {
        return Ok(());
    }
    write(path, data)
}

/// Replaces (or appends) the section `[header]` of the INI file at `path`.
pub(crate) fn upsert_ini(path: &Path, header: &str, lines: &[(String, String)]) -> Result<(), FileError> {
    let _guard = INI_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let existing = read_existing(path)?.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let text = crate::cloud::files::upsert_ini_section(&existing, header, lines);
    write_if_changed(path, text.as_bytes())
}

/// `path` made absolute (SDKs resolve a relative token path from their own working directory).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Unix seconds of an RFC 3339 time (`2024-01-01T01:00:00Z`, `...00.000Z`, `...+00:00`).
pub(crate) fn rfc3339_unix(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_section_is_replaced_in_a_shared_file_and_others_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("aws/credentials");
        upsert_ini(&p, "a", &[("k".into(), "1".into())]).unwrap();
        upsert_ini(&p, "b", &[("k".into(), "2".into())]).unwrap();
        upsert_ini(&p, "a", &[("k".into(), "3".into())]).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[a]\nk = 3\n\n[b]\nk = 2\n\n");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn unchanged_content_is_not_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cfg.json");
        write_if_changed(&p, b"{}").unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        write_if_changed(&p, b"{}").unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap()), ino);
        write_if_changed(&p, b"{\"a\":1}").unwrap();
        assert_ne!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap()), ino);
    }

    #[test]
    fn aws_and_rfc3339_expirations_parse() {
        assert_eq!(rfc3339_unix("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(rfc3339_unix("1970-01-01T00:01:00.000Z"), Some(60));
        assert_eq!(rfc3339_unix("1970-01-01T01:01:00+01:00"), Some(60));
        assert_eq!(rfc3339_unix("tomorrow"), None);
    }
}
