//! Writing the files cloud SDKs read, with the agent's atomic discipline
//! ([`crate::files::write_atomic`]: temp file, fsync, rename, 0600):
//! token files, JSON configs, and one INI section of a shared AWS config or
//! credentials file (other sections and comments are kept).

use super::OutputError;
use crate::files::{self, trust_for, FileError, MAX_READ_BACK};
use sigil_core::safe_fs::Access;
use std::path::{Path, PathBuf};

/// Serialises read-modify-write of INI files: two outputs may own two profiles
/// of one `~/.aws/credentials`. An async lock, held while the bounded file work
/// runs on the blocking pool; no async worker ever waits on file I/O.
static INI_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs file work on the blocking pool: a slow disk or a stuck NFS mount must
/// not stall the Workload API, `/livez` or the other outputs.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, FileError> + Send + 'static) -> Result<T, OutputError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(OutputError::Invalid(format!("file task failed: {e}"))),
    }
}

/// Reads the current content of `path` (if any), refusing symlinks, FIFOs,
/// devices, hard links, files of untrusted owners and more than [`MAX_READ_BACK`].
fn read_existing(path: &Path, access: &Access) -> Result<Option<Vec<u8>>, FileError> {
    let (dir, name) = files::parent_dir(path, access)?;
    dir.read_file(name, &trust_for(access), MAX_READ_BACK)
}

fn write_if_changed_now(path: &Path, data: &[u8], access: &Access) -> Result<(), FileError> {
    if read_existing(path, access)?.as_deref() == Some(data) {
        return Ok(());
    }
    files::write_file(path, data, access)
}

/// Writes `data` atomically with `access`, creating the parent directory if needed.
pub(crate) async fn write(path: &Path, data: &[u8], access: Access) -> Result<(), OutputError> {
    let (path, data) = (path.to_path_buf(), data.to_vec());
    blocking(move || files::write_file(&path, &data, &access)).await
}

/// Like [`write`], but leaves the file alone when it already holds `data`, so
/// watchers of a config that never changes are not woken at every renewal.
pub(crate) async fn write_if_changed(path: &Path, data: &[u8], access: Access) -> Result<(), OutputError> {
    let (path, data) = (path.to_path_buf(), data.to_vec());
    blocking(move || write_if_changed_now(&path, &data, &access)).await
}

/// Replaces (or appends) the section `[header]` of the INI file at `path`.
pub(crate) async fn upsert_ini(path: &Path, header: &str, lines: &[(String, String)], access: Access) -> Result<(), OutputError> {
    let _guard = INI_LOCK.lock().await;
    let (path, header, lines) = (path.to_path_buf(), header.to_string(), lines.to_vec());
    blocking(move || {
        let existing = read_existing(&path, &access)?.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let text = crate::cloud::files::upsert_ini_section(&existing, &header, &lines);
        write_if_changed_now(&path, text.as_bytes(), &access)
    })
    .await
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

    const A: Access = Access::PRIVATE;

    #[tokio::test]
    async fn ini_section_is_replaced_in_a_shared_file_and_others_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("aws/credentials");
        upsert_ini(&p, "a", &[("k".into(), "1".into())], A).await.unwrap();
        upsert_ini(&p, "b", &[("k".into(), "2".into())], A).await.unwrap();
        upsert_ini(&p, "a", &[("k".into(), "3".into())], A).await.unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[a]\nk = 3\n\n[b]\nk = 2\n\n");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn unchanged_content_is_not_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cfg.json");
        write_if_changed(&p, b"{}", A).await.unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        write_if_changed(&p, b"{}", A).await.unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap()), ino);
        write_if_changed(&p, b"{\"a\":1}", A).await.unwrap();
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
