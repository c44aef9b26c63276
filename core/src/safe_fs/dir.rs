//! Directories opened along their path without following what another user
//! controls, and what the agent does through the open handle besides writing
//! ([`TrustedDir::write_owned`] in `fsutil`, the one writer): read a file back
//! bounded, switch a symlink, create, list and remove.

use super::trust::{Access, Distrust, Meta, Trust};
use super::{FsError, TMP_SUFFIX};
use crate::fsutil::TrustedDir;
pub use crate::fsutil::split;
use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed on one path at most (as the kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Directories passed through are only searched, not read: `O_PATH` needs no
/// read permission, so a non-root caller may cross a `0711` directory.
const WALK_FLAGS: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// A directory of the walk with the metadata it was checked with.
struct Node {
    dir: TrustedDir,
    meta: Meta,
}

enum Step {
    Dir(Node),
    Link(PathBuf),
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits)
}

fn meta_of(fd: &OwnedFd, path: &Path) -> Result<Meta, FsError> {
    rustix::fs::fstat(fd).map(|st| Meta::from_stat(&st)).map_err(FsError::io(path, "inspect"))
}

fn set_access(fd: &OwnedFd, path: &Path, bits: u32, a: &Access) -> Result<(), FsError> {
    crate::fsutil::set_owner_and_mode(fd, a.uid, a.gid, bits).map_err(|(action, e)| FsError::io(path, action)(e))
}

/// `path`'s components after making it absolute, `.` dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn open_root(trust: &Trust) -> Result<Node, FsError> {
    let fd = rustix::fs::openat(CWD, "/", WALK_FLAGS, Mode::empty()).map_err(FsError::io("/", "open"))?;
    Node::verified(fd, PathBuf::from("/"), trust)
}

/// Opens directory `path`, walking from `/` one component at a time with
/// `O_NOFOLLOW` and checking each directory (and each symlink met) against
/// `trust`. With `create`, missing components are created with its owner,
/// group and directory mode.
pub fn open_dir(path: &Path, trust: &Trust, create: Option<&Access>) -> Result<TrustedDir, FsError> {
    let abs = std::path::absolute(path).map_err(|source| FsError::Io { path: path.to_path_buf(), action: "resolve", source })?;
    let mut pending = components(&abs);
    let mut cur = open_root(trust)?;
    let mut ancestors: Vec<Node> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if let Some(up) = ancestors.pop() {
                cur = up;
            }
            continue;
        }
        match cur.step(&name, trust, create)? {
            Step::Dir(next) => ancestors.push(std::mem::replace(&mut cur, next)),
            Step::Link(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(FsError::Refused { path: cur.dir.path.join(&name), why: Distrust::TooManySymlinks });
                }
                for c in components(&target).into_iter().rev() {
                    pending.push_front(c);
                }
                if target.is_absolute() {
                    cur = open_root(trust)?;
                    ancestors.clear();
                }
            }
        }
    }
    // The directory itself is read and written: reopen the checked inode (".").
    let fd = rustix::fs::openat(&cur.dir.fd, ".", DIR_FLAGS, Mode::empty()).map_err(FsError::io(&cur.dir.path, "open directory"))?;
    Ok(TrustedDir { fd, path: cur.dir.path })
}

/// `.NAME.RANDOM.sigil-tmp` (fsutil's temp names), for a socket bound then renamed.
pub fn temp_name(name: &OsStr) -> Result<OsString, FsError> {
    let r = crate::fsutil::random_hex().map_err(|source| FsError::Io { path: PathBuf::from(name), action: "name a temp file for", source })?;
    Ok(crate::fsutil::temp_name(name, &r))
}

impl Node {
    fn verified(fd: OwnedFd, path: PathBuf, trust: &Trust) -> Result<Self, FsError> {
        let meta = meta_of(&fd, &path)?;
        trust.check_dir(&meta).map_err(FsError::refused(&path))?;
        Ok(Self { dir: TrustedDir { fd, path }, meta })
    }

    fn step(&self, name: &OsStr, trust: &Trust, create: Option<&Access>) -> Result<Step, FsError> {
        let path = self.dir.path.join(name);
        match rustix::fs::openat(&self.dir.fd, name, WALK_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Step::Dir(Self::verified(fd, path, trust)?)),
            Err(Errno::NOENT) => match create {
                Some(a) => self.create_dir(name, trust, a).map(Step::Dir),
                None => Err(FsError::Io { path, action: "open directory", source: Errno::NOENT.into() }),
            },
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => self.inspect(name, trust),
            Err(e) => Err(FsError::Io { path, action: "open directory", source: e.into() }),
        }
    }

    /// A name that is not a directory: a symlink we may follow, or a refusal.
    fn inspect(&self, name: &OsStr, trust: &Trust) -> Result<Step, FsError> {
        let path = self.dir.path.join(name);
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.dir.fd, name, flags, Mode::empty()).map_err(FsError::io(&path, "open"))?;
        let meta = meta_of(&fd, &path)?;
        if meta.kind != super::trust::Kind::Symlink {
            return Err(FsError::Refused { path, why: Distrust::NotADirectory(meta.kind) });
        }
        trust.check_symlink(&meta, &self.meta).map_err(FsError::refused(&path))?;
        // Read the link we checked, not whatever the name points at by now.
        let target = rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(FsError::io(&path, "read link"))?;
        Ok(Step::Link(PathBuf::from(OsString::from_vec(target.into_bytes()))))
    }

    fn create_dir(&self, name: &OsStr, trust: &Trust, a: &Access) -> Result<Node, FsError> {
        let path = self.dir.path.join(name);
        // Inside a directory of the user the output is for (say ~/.aws in their
        // home), the new directory is theirs too, as if they had made it.
        let inherit = Access { uid: Some(self.meta.uid), gid: Some(self.meta.gid), ..*a };
        let a = if self.meta.uid != 0 && trust.owner() == Some(self.meta.uid) { &inherit } else { a };
        match rustix::fs::mkdirat(&self.dir.fd, name, mode(0o700)) {
            Ok(()) => {
                let fd = rustix::fs::openat(&self.dir.fd, name, DIR_FLAGS, Mode::empty()).map_err(FsError::io(&path, "open directory"))?;
                set_access(&fd, &path, a.dir_mode(), a)?;
                Self::verified(fd, path, trust)
            }
            // Created meanwhile (another output, another agent): check it as found.
            Err(Errno::EXIST) => match self.step(name, trust, None)? {
                Step::Dir(d) => Ok(d),
                Step::Link(_) => Err(FsError::Refused { path, why: Distrust::NotADirectory(super::trust::Kind::Symlink) }),
            },
            Err(e) => Err(FsError::Io { path, action: "create directory", source: e.into() }),
        }
    }

}

impl TrustedDir {
    /// Creates the new subdirectory `name` (it must not exist) with `a`'s owner and directory mode.
    pub fn create_subdir(&self, name: &str, trust: &Trust, a: &Access) -> Result<TrustedDir, FsError> {
        let path = self.path.join(name);
        rustix::fs::mkdirat(&self.fd, name, mode(0o700)).map_err(FsError::io(&path, "create directory"))?;
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()).map_err(FsError::io(&path, "open directory"))?;
        set_access(&fd, &path, a.dir_mode(), a)?;
        Ok(Node::verified(fd, path, trust)?.dir)
    }

    /// Gives the directory itself `a`'s owner, group and directory mode.
    pub fn restrict(&self, a: &Access) -> Result<(), FsError> {
        set_access(&self.fd, &self.path, a.dir_mode(), a)
    }

    /// Replaces (or creates) file `name` with `data` atomically with `a`'s
    /// owner, group and mode ([`TrustedDir::write_owned`]).
    pub fn write_file(&self, name: impl AsRef<OsStr>, data: &[u8], a: &Access) -> Result<(), FsError> {
        self.write_owned(name.as_ref(), data, a.file_mode(), a.uid, a.gid)
    }

    /// Reads file `name` if it exists, refusing symlinks, FIFOs, devices, hard
    /// links, files not owned by a trusted user, and more than `limit` bytes.
    /// The open never blocks and never follows a link.
    pub fn read_file(&self, name: impl AsRef<OsStr>, trust: &Trust, limit: u64) -> Result<Option<Vec<u8>>, FsError> {
        let name = name.as_ref();
        let path = self.path.join(name);
        // Look first through an O_PATH descriptor: opening a device can have effects.
        let probe = match rustix::fs::openat(&self.fd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(FsError::Io { path, action: "open", source: e.into() }),
        };
        let seen = meta_of(&probe, &path)?;
        if seen.kind == super::trust::Kind::Symlink {
            return Err(FsError::Refused { path, why: Distrust::SymlinkedFile });
        }
        trust.check_file(&seen, limit).map_err(FsError::refused(&path))?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty()).map_err(FsError::io(&path, "open"))?;
        let (a, b) = (rustix::fs::fstat(&probe), rustix::fs::fstat(&fd));
        match (a, b) {
            (Ok(a), Ok(b)) if a.st_ino == b.st_ino && a.st_dev == b.st_dev => {}
            _ => return Err(FsError::Io { path, action: "read", source: std::io::Error::other("the file was replaced while being opened") }),
        }
        let mut data = Vec::new();
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|source| FsError::Io { path: path.clone(), action: "read", source })?;
        if data.len() as u64 > limit {
            return Err(FsError::Refused { path, why: Distrust::TooLarge { size: data.len() as u64, limit } });
        }
        Ok(Some(data))
    }

    /// The target of symlink `name`, if it is one.
    pub fn read_link(&self, name: &str) -> Option<PathBuf> {
        rustix::fs::readlinkat(&self.fd, name, Vec::new()).ok().map(|t| PathBuf::from(OsString::from_vec(t.into_bytes())))
    }

    /// Points `name` at `target` atomically (symlink at `tmp`, then rename).
    pub fn replace_symlink(&self, name: &str, tmp: &str, target: &Path) -> Result<(), FsError> {
        let path = self.path.join(name);
        let _ = rustix::fs::unlinkat(&self.fd, tmp, AtFlags::empty());
        rustix::fs::symlinkat(target, &self.fd, tmp).map_err(FsError::io(self.path.join(tmp), "create symlink"))?;
        rustix::fs::renameat(&self.fd, tmp, &self.fd, name).map_err(|e| {
            let _ = rustix::fs::unlinkat(&self.fd, tmp, AtFlags::empty());
            FsError::Io { path, action: "replace", source: e.into() }
        })
    }

    /// The kind of entry `name` (not following a symlink), if it exists.
    pub fn entry_kind(&self, name: impl AsRef<OsStr>) -> Option<super::trust::Kind> {
        rustix::fs::statat(&self.fd, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW).ok().map(|st| Meta::from_stat(&st).kind)
    }

    /// Renames entry `from` to `to` within the directory, replacing `to`.
    pub fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> Result<(), FsError> {
        rustix::fs::renameat(&self.fd, from.as_ref(), &self.fd, to.as_ref()).map_err(FsError::io(self.path.join(to.as_ref()), "rename onto"))
    }

    /// Names in the directory (`.` and `..` left out; unreadable entries skipped).
    pub fn entries(&self) -> Vec<OsString> {
        let Ok(mut dir) = rustix::fs::Dir::read_from(&self.fd) else { return Vec::new() };
        let mut out = Vec::new();
        while let Some(Ok(e)) = dir.read() {
            let n = OsStr::from_bytes(e.file_name().to_bytes());
            if n != "." && n != ".." {
                out.push(n.to_os_string());
            }
        }
        out
    }

    /// Removes entry `name` if it is not a directory (best effort).
    pub fn remove(&self, name: impl AsRef<OsStr>) {
        let _ = rustix::fs::unlinkat(&self.fd, name.as_ref(), AtFlags::empty());
    }

    /// Removes subdirectory `name` and the files in it (not deeper), without
    /// following symlinks; a symlink by that name is removed itself. Best effort.
    pub fn remove_dir_of_files(&self, name: impl AsRef<OsStr>) {
        let name = name.as_ref();
        match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => {
                let sub = TrustedDir { fd, path: self.path.join(name) };
                for e in sub.entries() {
                    sub.remove(e);
                }
                let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR);
            }
            Err(_) => self.remove(name),
        }
    }

    /// Temp files a killed writer left, for every name or for `name` only.
    pub fn remove_stale_temps(&self, name: Option<&OsStr>) {
        let prefix = name.map(|n| {
            let mut p = OsString::from(".");
            p.push(n);
            p.push(".");
            p
        });
        for e in self.entries() {
            let b = e.as_bytes();
            let ours = b.starts_with(b".") && b.ends_with(TMP_SUFFIX.as_bytes());
            if ours && prefix.as_ref().is_none_or(|p| b.starts_with(p.as_bytes())) {
                self.remove(&e);
            }
        }
    }

    /// Makes renames and creations in the directory durable.
    pub fn sync(&self) -> Result<(), FsError> {
        rustix::fs::fsync(&self.fd).map_err(FsError::io(&self.path, "sync"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn me() -> Trust {
        Trust::process()
    }

    #[test]
    fn missing_directories_are_created_with_the_mode_and_files_replaced_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        let dir = open_dir(&p, &me(), Some(&Access::PRIVATE)).unwrap();
        dir.write_file("x", b"one", &Access::PRIVATE).unwrap();
        dir.write_file("x", b"two", &Access { mode: 0o640, ..Access::PRIVATE }).unwrap();
        assert_eq!(std::fs::read(p.join("x")).unwrap(), b"two");
        assert_eq!(std::fs::metadata(p.join("x")).unwrap().mode() & 0o777, 0o640);
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        assert_eq!(dir.entries(), vec![OsString::from("x")], "no temp file left");
    }

    #[test]
    fn a_symlink_on_the_path_is_followed_only_when_ours_in_a_directory_of_ours() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
        // Our own link in our own directory: followed.
        let dir = open_dir(&d.path().join("link"), &me(), None).unwrap();
        dir.write_file("f", b"x", &Access::PRIVATE).unwrap();
        assert_eq!(std::fs::read(d.path().join("real/f")).unwrap(), b"x");
    }

    #[test]
    fn a_file_where_a_directory_is_expected_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"").unwrap();
        let err = open_dir(&d.path().join("f/sub"), &me(), Some(&Access::PRIVATE)).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn world_writable_directory_without_sticky_bit_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path().join("w");
        std::fs::create_dir(&w).unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open_dir(&w, &me(), None).unwrap_err().to_string();
        assert!(err.contains("writable by every user"), "{err}");
    }

    #[test]
    fn a_fifo_or_a_symlink_is_not_read_back() {
        let d = tempfile::tempdir().unwrap();
        let dir = open_dir(d.path(), &me(), None).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("l")).unwrap();
        let err = dir.read_file("l", &me(), 1024).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        let st = std::process::Command::new("mkfifo").arg(d.path().join("p")).status().unwrap();
        assert!(st.success());
        let err = dir.read_file("p", &me(), 1024).unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        dir.write_file("big", &[b'a'; 20], &Access::PRIVATE).unwrap();
        let err = dir.read_file("big", &me(), 10).unwrap_err().to_string();
        assert!(err.contains("more than the 10"), "{err}");
        assert_eq!(dir.read_file("none", &me(), 10).unwrap(), None);
    }

    #[test]
    fn stale_temps_are_removed_for_one_name_or_all() {
        let d = tempfile::tempdir().unwrap();
        for n in [format!(".a.1{TMP_SUFFIX}"), format!(".b.1{TMP_SUFFIX}"), "a".into()] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        let dir = open_dir(d.path(), &me(), None).unwrap();
        dir.remove_stale_temps(Some(OsStr::new("a")));
        assert_eq!(dir.entries().len(), 2);
        dir.remove_stale_temps(None);
        assert_eq!(dir.entries(), vec![OsString::from("a")]);
    }
}
