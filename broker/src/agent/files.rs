//! Atomic, private file writes: temp file in the same directory, fsync, rename,
//! fsync of the directory. A reader (or a crash) sees the old file or the new one,
//! never a partial or empty one. Files are 0600 and directories 0700.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file operation failed; the path says which.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Creating or restricting a directory failed.
    #[error("cannot prepare directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing or renaming a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Suffix of in-flight temp files; they start with a dot so globbing readers skip them.
pub const TMP_SUFFIX: &str = ".sigil-tmp";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates `dir` (and parents) and restricts it to 0700.
pub fn private_dir(dir: &Path) -> Result<(), FileError> {
    let err = |source| FileError::Dir { path: dir.to_path_buf(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `data` to `path` atomically with mode 0600. The parent directory must exist.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FileError> {
    let err = |source| FileError::Write { path: path.to_path_buf(), source };
    let dir = parent(path);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}{TMP_SUFFIX}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Removes temp files a killed process left in `dir` (best effort).
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes temp files a killed process left for `path` only (its directory may
/// be shared with other programs).
pub fn remove_stale_temps_for(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { return };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(parent(path)) else { return };
    for e in entries.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(&prefix) && n.ends_with(TMP_SUFFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn written_file_is_private_and_replaces_the_old_one() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("out");
        private_dir(&dir).unwrap();
        let p = dir.join("svid.pem");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "no temp file left behind: {left:?}");
    }

    #[test]
    fn stale_temp_files_are_removed_and_real_files_kept() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(format!(".svid.pem.1.2{TMP_SUFFIX}")), b"half").unwrap();
        std::fs::write(d.path().join("svid.pem"), b"whole").unwrap();
        remove_stale_temps(d.path());
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("svid.pem")]);
    }

    #[test]
    fn write_into_missing_directory_names_the_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope/x");
        let err = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(err.contains("nope/x"), "{err}");
    }
}
