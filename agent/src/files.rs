//! The agent's file discipline, on [`sigil_core::safe_fs`]: directories opened along
//! their path without following what another user controls (and refused when
//! another user owns or can write them), files written atomically (random temp
//! name, fsync, rename, fsync of the directory) with their owner and mode set
//! before they appear. A reader (or a crash) sees the old file or the new one,
//! never a partial or empty one. By default files are 0600 and directories 0700.

use sigil_core::safe_fs::{self, Access, TrustedDir, Trust};
use std::path::Path;

pub use sigil_core::safe_fs::FsError as FileError;
pub use sigil_core::safe_fs::TMP_SUFFIX;

/// Largest existing file the agent reads back to update it (an INI section of
/// a shared AWS file, an unchanged config): 1 MiB.
pub const MAX_READ_BACK: u64 = 1 << 20;

/// Who the agent trusts for a path written for `access`'s owner.
pub fn trust_for(access: &Access) -> Trust {
    Trust::process().with_owner(access.uid)
}

/// Opens `dir` (creating missing parents as [`Access::parents`] says) and gives
/// it `access`'s owner, group and directory mode: the directory is the output's own.
pub fn own_dir(dir: &Path, access: &Access) -> Result<TrustedDir, FileError> {
    let d = safe_fs::open_dir(dir, &trust_for(access), Some(&access.parents()))?;
    d.restrict(access)?;
    Ok(d)
}

/// Creates `dir` (and parents) 0700 owned by the agent, or restricts it to 0700.
pub fn private_dir(dir: &Path) -> Result<TrustedDir, FileError> {
    own_dir(dir, &Access::PRIVATE)
}

/// Opens the parent of file `path` for writing `access` files: created as
/// [`Access::parents`] says if missing; an existing one keeps its permissions
/// (it may be shared, e.g. /run/secrets) but must pass the trust rules.
pub fn parent_dir<'p>(path: &'p Path, access: &Access) -> Result<(TrustedDir, &'p std::ffi::OsStr), FileError> {
    let (dir, name) = safe_fs::dir::split(path)?;
    Ok((safe_fs::open_dir(dir, &trust_for(access), Some(&access.parents()))?, name))
}

/// Writes `data` to `path` atomically with mode 0600. The parent directory must exist.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FileError> {
    sigil_core::fsutil::write_private(path, data)
}

/// Writes file `path` with `access`, creating its parent if needed and clearing
/// temp files a killed agent left for it.
pub fn write_file(path: &Path, data: &[u8], access: &Access) -> Result<(), FileError> {
    let (dir, name) = parent_dir(path, access)?;
    dir.remove_stale_temps(Some(name));
    dir.write_file(name, data, access)
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
        private_dir(d.path()).unwrap().remove_stale_temps(None);
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("svid.pem")]);
    }

    #[test]
    fn write_into_missing_directory_names_the_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope/x");
        let err = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
