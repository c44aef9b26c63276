//! Writing private files (keys, identities, seal keys, logs) in directories
//! other local users may reach. One implementation for the CLI, the broker's
//! bootstrap and the cloud credential files.
//!
//! Mistakes it prevents:
//! - **A predictable temp name** (`.svid.key.tmp`) that another user pre-plants as
//!   a symlink to a victim file, which a create+truncate open then overwrites.
//!   Temp files get a random name and are created `O_CREAT|O_EXCL|O_NOFOLLOW`:
//!   nothing that already exists is ever opened.
//! - **A key readable for a moment** (created 0644, chmod later): the mode is
//!   given at creation (umask can only narrow it) and then set exactly with
//!   `fchmod` on the open handle, before any byte is written.
//! - **A symlink at the destination**: `rename(2)` replaces the link itself,
//!   never the file it points at.
//! - **A directory another user controls** (`/tmp/out` pre-created or
//!   symlinked by them, or any directory above it): the path is walked from `/`
//!   one component at a time with `O_NOFOLLOW` and every directory checked on
//!   its handle ([`crate::safe_fs`]: owned by this user or root, not writable by
//!   others unless sticky, symlinks only when this user or root owns them in a
//!   directory they control); every later step is relative to the handle
//!   (`openat`, `renameat`), so re-pointing the path meanwhile changes nothing.
//!
//! - **Reading a secret back through a planted link** (a bound key, a join
//!   sequence, a seal key, the AWS file a section is merged into): the one
//!   reader, [`read_private`], opens the name `O_NOFOLLOW` in the checked
//!   directory and refuses a symlink, a FIFO, a hard link or another user's
//!   file; a key left readable by others (0644) is narrowed to 0600 first.
//!
//! So a planted symlink at a path Sigil *writes* is replaced (never followed);
//! at a path it *reads back* and keeps using, it is refused with the path named.
//! Either way the link's target is untouched.
//!
//! Crash safety: temp file in the same directory, fsync, rename, fsync of the
//! directory. A reader (or a crash) sees the old file or the new one, never a
//! partial one.
//!
//! Why not the `tempfile` crate: it creates and renames by path
//! (`tempfile_in(dir)`, `persist(path)`), so each call resolves the directory
//! path again, and a directory swapped after the [`crate::safe_fs`] walk would
//! receive the key. Every step here is relative to the checked handle.

use rustix::fs::{AtFlags, Mode, OFlags};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Suffix of in-flight temp files (`.NAME.RANDOM.sigil-tmp`); the leading dot
/// hides them from globbing readers. Shared with the agent's stale-temp cleanup.
pub const TMP_SUFFIX: &str = ".sigil-tmp";

/// A private file or directory could not be written or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// A path (or a directory on it) is not one this process may trust; the
    /// reason names the fix ([`crate::safe_fs::trust`]).
    #[error("refusing {path}: it {why}")]
    Refused {
        /// The path concerned.
        path: PathBuf,
        /// Why it is not trusted.
        why: crate::safe_fs::Distrust,
    },
    /// A system call on a path failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// What was being done, e.g. `create directory`.
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory belongs to another (non-root) user, who could swap the files in it.
    #[error("refusing directory {path}: owned by uid {owner}, not by this user (uid {euid}) or root")]
    ForeignOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        euid: u32,
    },
    /// The path names no file (empty, `/`, or ending in `..`).
    #[error("{path}: not a file name")]
    NoFileName {
        /// The path as given.
        path: PathBuf,
    },
    /// The destination exists and is not a regular file (a FIFO, device, directory or symlink).
    #[error("refusing {path}: not a regular file")]
    NotRegular {
        /// The path.
        path: PathBuf,
    },
    /// Writing, syncing or renaming the file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl From<FsError> for std::io::Error {
    fn from(e: FsError) -> Self {
        let kind = match &e {
            FsError::Write { source, .. } | FsError::Io { source, .. } => source.kind(),
            _ => std::io::ErrorKind::PermissionDenied,
        };
        std::io::Error::new(kind, e)
    }
}

impl FsError {
    pub fn io(path: impl Into<PathBuf>, action: &'static str) -> impl FnOnce(rustix::io::Errno) -> FsError {
        let path = path.into();
        move |e| FsError::Io { path, action, source: io(e) }
    }

    pub fn refused(path: impl Into<PathBuf>) -> impl FnOnce(crate::safe_fs::Distrust) -> FsError {
        let path = path.into();
        move |why| FsError::Refused { path, why }
    }
}

fn io(e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

/// A directory opened along its whole path and checked ([`crate::safe_fs`]).
/// Files are created relative to it; `safe_fs::dir` adds reading back,
/// symlink switching and listing.
#[derive(Debug)]
pub struct TrustedDir {
    pub fd: OwnedFd,
    pub path: PathBuf,
}

/// The parent directory (`.` for a bare name) and file name of `path`.
pub fn split(path: &Path) -> Result<(&Path, &std::ffi::OsStr), FsError> {
    let name = path.file_name().ok_or_else(|| FsError::NoFileName { path: path.to_path_buf() })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

impl TrustedDir {
    /// Opens `dir` along its path and checks it (see the type), trusting this
    /// user and root.
    pub fn open(dir: &Path) -> Result<Self, FsError> {
        crate::safe_fs::open_dir(dir, &crate::safe_fs::Trust::process(), None)
    }

    /// Creates `dir` (and missing parents) with mode 0700, then opens and checks
    /// it. An existing directory keeps its mode.
    pub fn create(dir: &Path) -> Result<Self, FsError> {
        crate::safe_fs::open_dir(dir, &crate::safe_fs::Trust::process(), Some(&crate::safe_fs::Access::PRIVATE))
    }

    /// The directory as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` in this directory atomically with exactly `mode`.
    pub fn write(&self, name: &std::ffi::OsStr, data: &[u8], mode: u32) -> Result<(), FsError> {
        self.write_owned(name, data, mode, None, None)
    }

    /// Writes `name` atomically with exactly `mode`, owned by `owner`/`group`
    /// when given (set with `fchown` on the temp file before a byte is
    /// written, so the file never appears with other owners).
    pub fn write_owned(&self, name: &std::ffi::OsStr, data: &[u8], mode: u32, owner: Option<u32>, group: Option<u32>) -> Result<(), FsError> {
        let dest = self.entry_path(name)?;
        let werr = |source: std::io::Error| FsError::Write { path: dest.clone(), source };
        let (tmp, fd) = self.create_temp(name, mode).map_err(werr)?;
        let result = (|| -> std::io::Result<()> {
            // Exact mode whatever the umask; before any byte is written.
            set_owner_and_mode(&fd, owner, group, mode).map_err(|(_, e)| io(e))?;
            let mut f = std::fs::File::from(fd);
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            rustix::fs::renameat(&self.fd, &tmp, &self.fd, name).map_err(io)?;
            rustix::fs::fsync(&self.fd).map_err(io)
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
        }
        result.map_err(werr)
    }

    /// The path of entry `name`, which must be one plain component (no `/`, `.` or `..`).
    fn entry_path(&self, name: &std::ffi::OsStr) -> Result<PathBuf, FsError> {
        let path = self.path.join(name);
        if is_plain_name(name) {
            Ok(path)
        } else {
            Err(FsError::NoFileName { path })
        }
    }

    /// Creates a fresh temp file beside `name`: random name, O_EXCL|O_NOFOLLOW.
    fn create_temp(&self, name: &std::ffi::OsStr, mode: u32) -> std::io::Result<(OsString, OwnedFd)> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut last = rustix::io::Errno::EXIST;
        for _ in 0..8 {
            let tmp = temp_name(name, &random_hex()?);
            match rustix::fs::openat(&self.fd, &tmp, flags, Mode::from_raw_mode(mode & 0o700)) {
                Ok(fd) => return Ok((tmp, fd)),
                Err(e) if e == rustix::io::Errno::EXIST => last = e,
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(last))
    }

    /// Opens (creating with 0600 if missing) `name` for appending. Refuses a
    /// symlink or anything but a regular file owned by this user or root, and
    /// narrows an existing file's mode to at most `max_mode` (e.g. 0o640).
    pub fn open_append(&self, name: &std::ffi::OsStr, max_mode: u32) -> Result<std::fs::File, FsError> {
        let dest = self.entry_path(name)?;
        let flags = OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600)).map_err(|e| {
            if e == rustix::io::Errno::LOOP {
                FsError::NotRegular { path: dest.clone() }
            } else {
                FsError::Write { path: dest.clone(), source: io(e) }
            }
        })?;
        restrict(&fd, &dest, max_mode)?;
        Ok(std::fs::File::from(fd))
    }

    /// Narrows the mode of an existing regular file `name` to at most
    /// `max_mode`; returns whether it changed. A missing file is fine.
    pub fn restrict_existing(&self, name: &std::ffi::OsStr, max_mode: u32) -> Result<bool, FsError> {
        let dest = self.path.join(name);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => restrict(&fd, &dest, max_mode),
            Err(e) if e == rustix::io::Errno::NOENT => Ok(false),
            Err(e) if e == rustix::io::Errno::LOOP => Err(FsError::NotRegular { path: dest }),
            Err(e) => Err(FsError::Write { path: dest, source: io(e) }),
        }
    }
}

/// Gives an open file or directory `owner`/`group` when given, then exactly
/// `mode` (after the chown, which may clear setuid/setgid bits). On failure,
/// what was being done (`set the owner of`, `set the mode of`) and the error.
pub fn set_owner_and_mode(fd: &impl AsFd, owner: Option<u32>, group: Option<u32>, mode: u32) -> Result<(), (&'static str, rustix::io::Errno)> {
    if owner.is_some() || group.is_some() {
        rustix::fs::fchown(fd, owner.map(rustix::fs::Uid::from_raw), group.map(rustix::fs::Gid::from_raw)).map_err(|e| ("set the owner of", e))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| ("set the mode of", e))
}

/// Checks an opened file is regular and ours (or root's), and narrows its mode.
fn restrict(fd: &impl AsFd, path: &Path, max_mode: u32) -> Result<bool, FsError> {
    let werr = |e: rustix::io::Errno| FsError::Write { path: path.to_path_buf(), source: io(e) };
    let st = rustix::fs::fstat(fd).map_err(werr)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(FsError::NotRegular { path: path.to_path_buf() });
    }
    let trust = crate::safe_fs::Trust::process();
    if !trust.strict(st.st_uid) {
        return Err(FsError::ForeignOwner { path: path.to_path_buf(), owner: st.st_uid, euid: trust.uid() });
    }
    let mode = st.st_mode & 0o7777;
    if mode & !max_mode == 0 {
        return Ok(false);
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & max_mode)).map_err(werr)?;
    Ok(true)
}

/// One path component naming a file: not empty, `.` or `..`, no `/`.
fn is_plain_name(name: &std::ffi::OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/')
}

/// `.NAME.RANDOM.sigil-tmp`, with NAME cut so the whole fits in NAME_MAX (255).
pub fn temp_name(name: &std::ffi::OsStr, random: &str) -> OsString {
    let b = name.as_bytes();
    let keep = b.len().min(255 - 2 - random.len() - TMP_SUFFIX.len());
    let mut out = Vec::with_capacity(255);
    out.push(b'.');
    out.extend_from_slice(&b[..keep]);
    out.push(b'.');
    out.extend_from_slice(random.as_bytes());
    out.extend_from_slice(TMP_SUFFIX.as_bytes());
    OsString::from_vec(out)
}

pub fn random_hex() -> std::io::Result<String> {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; 12];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).map_err(|_| std::io::Error::other("no randomness for a temp file name"))?;
    Ok(hex::encode(b))
}

/// Writes `data` to `path` atomically with exactly `mode`. The parent
/// directory must exist and pass [`TrustedDir::open`].
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    let (dir, name) = split(path)?;
    TrustedDir::open(dir)?.write(name, data, mode)
}

/// Writes a secret (key, identity, seal key) to `path` atomically, mode 0600.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), FsError> {
    write_file(path, data, 0o600)
}

/// Largest secret [`read_private`] reads back by default (keys, sequences,
/// identities, AWS shared files): 1 MiB.
pub const MAX_PRIVATE_READ: u64 = 1 << 20;

/// Reads back a secret this process keeps at `path` (a key it created, a join
/// sequence, an AWS file it merges a section into): `None` when the file (or
/// its directory) does not exist. The directory is opened as
/// [`TrustedDir::open`] checks it; the file must be a regular, singly linked
/// file of this user or root, at most `limit` bytes, and is never opened
/// through a symlink. A file readable or writable by others is narrowed to
/// 0600 first (and a warning logged): it is a secret.
pub fn read_private(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, FsError> {
    let (dir, name) = split(path)?;
    let dir = match TrustedDir::open(dir) {
        Ok(d) => d,
        Err(FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(data) = dir.read_file(name, &crate::safe_fs::Trust::process(), limit)? else { return Ok(None) };
    if dir.restrict_existing(name, 0o600)? {
        tracing::warn!(file = %path.display(), "narrowed a private file other users could read or write to 0600");
    }
    Ok(Some(data))
}

/// [`read_private`] as UTF-8 text.
pub fn read_private_text(path: &Path, limit: u64) -> Result<Option<String>, FsError> {
    match read_private(path, limit)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| FsError::Io { path: path.to_path_buf(), action: "read", source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text") }),
    }
}

/// Opens `path` for appending (a log), created 0600; an existing file is
/// narrowed to at most `max_mode`. Symlinks and non-regular files are refused.
pub fn open_append(path: &Path, max_mode: u32) -> Result<std::fs::File, FsError> {
    let (dir, name) = split(path)?;
    TrustedDir::open(dir)?.open_append(name, max_mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn planted_temp_names_and_destination_symlink_leave_the_victim_untouched() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        // The names the old writers used, and the destination itself.
        for planted in [".svid.key.tmp", ".svid.key.sigil-tmp", "svid.key"] {
            std::os::unix::fs::symlink(&victim, out.join(planted)).unwrap();
        }
        write_private(&out.join("svid.key"), b"KEY").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode(&victim), 0o644);
        let key = out.join("svid.key");
        assert!(std::fs::symlink_metadata(&key).unwrap().file_type().is_file());
        assert_eq!(std::fs::read(&key).unwrap(), b"KEY");
        assert_eq!(mode(&key), 0o600);
    }

    #[test]
    fn exact_mode_and_no_temp_left_behind() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        write_file(&p, b"one", 0o644).unwrap();
        write_file(&p, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o644);
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![OsString::from("config.json")]);
    }

    #[test]
    fn world_writable_directory_without_sticky_bit_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = write_private(&open.join("k"), b"x").unwrap_err();
        assert!(matches!(e, FsError::Refused { why: crate::safe_fs::Distrust::WritableByOthers { .. }, .. }), "{e}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        write_private(&open.join("k"), b"x").unwrap();
    }

    #[test]
    fn own_symlink_to_a_directory_is_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        write_private(&d.path().join("link/k"), b"x").unwrap();
        assert_eq!(std::fs::read(d.path().join("real/k")).unwrap(), b"x");
    }

    #[test]
    fn append_refuses_symlinks_and_narrows_loose_modes() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"v").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("audit.jsonl")).unwrap();
        assert!(matches!(open_append(&d.path().join("audit.jsonl"), 0o640), Err(FsError::NotRegular { .. })));
        let log = d.path().join("log");
        open_append(&log, 0o640).unwrap().write_all(b"a\n").unwrap();
        assert_eq!(mode(&log), 0o600);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        open_append(&log, 0o640).unwrap().write_all(b"b\n").unwrap();
        assert_eq!(mode(&log), 0o640);
        assert_eq!(std::fs::read(&log).unwrap(), b"a\nb\n");
    }

    #[test]
    fn temp_files_get_a_random_name_and_owner_only_mode_before_any_byte() {
        let d = tempfile::tempdir().unwrap();
        let dir = TrustedDir::open(d.path()).unwrap();
        let name = std::ffi::OsStr::new("svid.key");
        let (a, fa) = dir.create_temp(name, 0o600).unwrap();
        let (b, _fb) = dir.create_temp(name, 0o600).unwrap();
        assert_ne!(a, b, "two temp files of one name must not share a (guessable) name");
        for t in [&a, &b] {
            let t = t.to_str().unwrap();
            let random = t.strip_prefix(".svid.key.").and_then(|r| r.strip_suffix(TMP_SUFFIX)).unwrap();
            assert!(random.len() == 24 && random.bytes().all(|c| c.is_ascii_hexdigit()), "{t}");
        }
        // Owner-only from the open(2) that made it: nothing written yet, no chmod yet.
        let st = rustix::fs::fstat(&fa).unwrap();
        assert_eq!((st.st_mode & 0o7777, st.st_size), (0o600, 0));
    }

    #[test]
    fn a_planted_symlink_at_a_secret_path_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let key = d.path().join("token");
        std::os::unix::fs::symlink(&victim, &key).unwrap();
        write_private(&key, b"TOKEN").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&key).unwrap().file_type().is_file());
        assert_eq!((std::fs::read(&key).unwrap(), mode(&key)), (b"TOKEN".to_vec(), 0o600));
    }

    #[test]
    fn a_secret_read_back_is_never_read_through_a_symlink_and_is_narrowed_to_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"attacker's key").unwrap();
        let key = d.path().join("bound.key");
        std::os::unix::fs::symlink(&victim, &key).unwrap();
        let before = mode(&victim);
        let e = read_private(&key, MAX_PRIVATE_READ).unwrap_err();
        assert!(matches!(e, FsError::Refused { why: crate::safe_fs::Distrust::SymlinkedFile, .. }), "{e}");
        assert_eq!((std::fs::read(&victim).unwrap(), mode(&victim)), (b"attacker's key".to_vec(), before));
        std::fs::remove_file(&key).unwrap();
        std::fs::write(&key, b"mine").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_private(&key, MAX_PRIVATE_READ).unwrap().as_deref(), Some(&b"mine"[..]));
        assert_eq!(mode(&key), 0o600);
        assert_eq!(read_private(&d.path().join("missing"), 10).unwrap(), None);
        assert_eq!(read_private(&d.path().join("no/such/dir/key"), 10).unwrap(), None);
    }

    #[test]
    fn long_names_still_fit_in_a_temp_name() {
        let n = "n".repeat(255);
        let t = temp_name(std::ffi::OsStr::new(&n), &"0".repeat(24));
        assert!(t.len() <= 255, "{}", t.len());
    }
}
