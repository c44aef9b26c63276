//! A directory of files that change together (the Kubernetes AtomicWriter layout).
//!
//! ```text
//! dir/
//!   ..v000001700000000123456789.4242.0/   this generation's files (0700; files 0600)
//!   ..data -> ..v000001700000000123456789.4242.0
//!   svid.pem -> ..data/svid.pem
//!   svid.key -> ..data/svid.key
//!   bundle.pem -> ..data/bundle.pem
//! ```
//!
//! A new generation is written whole into a fresh versioned directory, then
//! `..data` is switched to it with one `rename(2)` of a symlink. So at every
//! instant `svid.pem` and `svid.key` belong to the same generation: never a new
//! key beside the old certificate. A reader that must not straddle two
//! switches opens `..data` once and reads every file relative to it; the
//! previous generation is kept until the next switch so such a reader is not
//! pulled from under its feet. A crash at any step leaves the old generation
//! in place; leftovers are removed by the next write.

use super::files::{own_dir, trust_for, FileError};
use sigil_core::safe_fs::{Access, TrustedDir};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The symlink naming the current generation.
pub const DATA_LINK: &str = "..data";
const DATA_TMP: &str = "..data_tmp";
const VERSION_PREFIX: &str = "..v";
const LINK_TMP_SUFFIX: &str = ".sigil-link-tmp";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file name that can live in the directory: one plain component, not one of ours.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.starts_with("..") && name != "." && !name.ends_with(LINK_TMP_SUFFIX)
}

/// The generation `..data` points at, if any.
pub fn current_version(dir: &Path) -> Option<String> {
    std::fs::read_link(dir.join(DATA_LINK)).ok().map(|p| p.to_string_lossy().into_owned())
}

fn new_version_name() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{VERSION_PREFIX}{nanos:027}.{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn write_version(dir: &TrustedDir, version: &str, files: &[(&str, &[u8], Access)], access: &Access) -> Result<(), FileError> {
    let vdir = dir.create_subdir(version, &trust_for(access), access)?;
    for (name, data, a) in files {
        vdir.write_file(name, data, a)?;
    }
    vdir.sync()
}

/// Writes `files` as one new generation of `dir` (created 0700) and switches to it.
pub fn write(dir: &Path, files: &[(&str, &[u8])]) -> Result<(), FileError> {
    write_with(dir, files, &Access::PRIVATE)
}

/// Writes `files` as one new generation of `dir` and switches to it. `dir`, the
/// generation directory and the files get `access`'s owner and group; files
/// its mode, directories the mode with `x` wherever `r` is set. `dir` is
/// opened without following symlinks another user controls and refused if
/// another user owns or can write it (sigil_core::safe_fs).
pub fn write_with(dir: &Path, files: &[(&str, &[u8])], access: &Access) -> Result<(), FileError> {
    let each: Vec<(&str, &[u8], Access)> = files.iter().map(|(n, d)| (*n, *d, *access)).collect();
    write_each(dir, &each, access)
}

/// [`write_with`] with an access per file (a private key 0600 beside public
/// files 0644); `access` is the directories' (the generation's and `dir`'s).
pub fn write_each(dir: &Path, files: &[(&str, &[u8], Access)], access: &Access) -> Result<(), FileError> {
    if let Some((bad, _, _)) = files.iter().find(|(n, _, _)| !valid_name(n)) {
        return Err(FileError::Io {
            path: dir.join(bad),
            action: "write",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain file name"),
        });
    }
    let d = own_dir(dir, access)?;
    d.remove_stale_temps(None);
    let previous = d.read_link(DATA_LINK).map(|p| p.to_string_lossy().into_owned());
    let version = new_version_name();
    if let Err(e) = write_version(&d, &version, files, access) {
        d.remove_dir_of_files(&version);
        return Err(e);
    }
    // The switch: after this rename every name resolves into the new generation.
    if let Err(e) = d.replace_symlink(DATA_LINK, DATA_TMP, Path::new(&version)) {
        d.remove_dir_of_files(&version);
        return Err(e);
    }
    d.sync()?;
    for (name, _, _) in files {
        let target = Path::new(DATA_LINK).join(name);
        if d.read_link(name).as_deref() != Some(target.as_path()) {
            // First write, or a directory from an agent that wrote plain files.
            d.replace_symlink(name, &format!(".{name}{LINK_TMP_SUFFIX}"), &target)?;
        }
    }
    d.sync()?;
    remove_old_versions(&d, &[Some(version), previous]);
    Ok(())
}

/// Removes generations other than `keep`, and temp links a crash left (best effort).
fn remove_old_versions(dir: &TrustedDir, keep: &[Option<String>]) {
    for e in dir.entries() {
        let name = e.to_string_lossy().into_owned();
        if name.starts_with(VERSION_PREFIX) && !keep.iter().flatten().any(|k| *k == name) {
            dir.remove_dir_of_files(&e);
        } else if name == DATA_TMP || (name.starts_with('.') && name.ends_with(LINK_TMP_SUFFIX)) {
            dir.remove(&e);
        }
    }
}

/// Paths of the generations present (for tests and diagnostics).
pub fn versions(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|it| it.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(VERSION_PREFIX)).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn files_are_symlinks_through_data_and_switch_together() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("svid");
        write(&dir, &[("svid.pem", b"cert-1"), ("svid.key", b"key-1")]).unwrap();
        assert_eq!((read(&dir, "svid.pem"), read(&dir, "svid.key")), ("cert-1".into(), "key-1".into()));
        assert_eq!(std::fs::read_link(dir.join("svid.key")).unwrap(), Path::new("..data/svid.key"));
        let first = current_version(&dir).unwrap();
        write(&dir, &[("svid.pem", b"cert-2"), ("svid.key", b"key-2")]).unwrap();
        assert_eq!((read(&dir, "svid.pem"), read(&dir, "svid.key")), ("cert-2".into(), "key-2".into()));
        // A reader that resolved ..data before the switch still reads a whole old pair.
        assert_eq!(std::fs::read_to_string(dir.join(&first).join("svid.key")).unwrap(), "key-1");
    }

    #[test]
    fn only_the_current_and_previous_generations_are_kept() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..5 {
            write(d.path(), &[("a", format!("{i}").as_bytes())]).unwrap();
        }
        assert_eq!(versions(d.path()).len(), 2);
        assert_eq!(read(d.path(), "a"), "4");
    }

    #[test]
    fn permissions_are_private() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("out");
        write(&dir, &[("svid.key", b"k")]).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(dir.join("svid.key")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.join(current_version(&dir).unwrap())).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn plain_files_from_an_older_agent_become_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("svid.pem"), b"old").unwrap();
        write(d.path(), &[("svid.pem", b"new")]).unwrap();
        assert!(std::fs::symlink_metadata(d.path().join("svid.pem")).unwrap().file_type().is_symlink());
        assert_eq!(read(d.path(), "svid.pem"), "new");
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_and_never_become_current() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &[("a", b"1")]).unwrap();
        // A crash after writing a generation but before switching, and one mid-switch.
        std::fs::create_dir(d.path().join("..v000000000000000000000000001.1.1")).unwrap();
        std::os::unix::fs::symlink("..nowhere", d.path().join(DATA_TMP)).unwrap();
        assert_eq!(read(d.path(), "a"), "1");
        write(d.path(), &[("a", b"2")]).unwrap();
        assert_eq!(versions(d.path()).len(), 2);
        assert!(std::fs::symlink_metadata(d.path().join(DATA_TMP)).is_err());
    }

    #[test]
    fn each_file_gets_its_own_mode() {
        let d = tempfile::tempdir().unwrap();
        let public = Access { mode: 0o644, uid: None, gid: None };
        write_each(d.path(), &[("key", b"k", Access::PRIVATE), ("key.pub", b"p", public)], &public).unwrap();
        assert_eq!(std::fs::metadata(d.path().join("key")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(d.path().join("key.pub")).unwrap().mode() & 0o777, 0o644);
        assert_eq!(std::fs::metadata(d.path().join(current_version(d.path()).unwrap())).unwrap().mode() & 0o777, 0o755);
    }

    #[test]
    fn names_that_would_escape_or_collide_are_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(write(d.path(), &[("../x", b"1")]).is_err());
        assert!(write(d.path(), &[("..data", b"1")]).is_err());
    }
}
