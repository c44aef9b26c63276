//! Which directories, symlinks and files a privileged process may use: pure
//! decisions over file metadata, so every rule is tested without a filesystem.
//!
//! Rules (docs/agent.md, "Where outputs may be written"):
//! - a directory on the path is owned by root, the process's user, or the
//!   output's `owner`; it is not writable by other users unless it has the
//!   sticky bit (as `/tmp`), and group-writable only by group root or the
//!   process's group;
//! - a symlink on the path is followed only when root or the process's user owns
//!   it and its directory is owned by one of them (nobody else can replace it);
//! - an existing file that is read back is regular, has one link, is owned by a
//!   trusted user and is at most the caller's size limit.

use std::fmt;

/// The kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else.
    Other,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Dir => "a directory",
            Kind::File => "a regular file",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO",
            Kind::Socket => "a socket",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Other => "a special file",
        })
    }
}

/// What the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Entry kind.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links.
    pub nlink: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Meta {
    pub fn from_stat(st: &rustix::fs::Stat) -> Self {
        use rustix::fs::FileType as T;
        let kind = match T::from_raw_mode(st.st_mode) {
            T::Directory => Kind::Dir,
            T::RegularFile => Kind::File,
            T::Symlink => Kind::Symlink,
            T::Fifo => Kind::Fifo,
            T::Socket => Kind::Socket,
            T::CharacterDevice => Kind::CharDevice,
            T::BlockDevice => Kind::BlockDevice,
            _ => Kind::Other,
        };
        #[allow(clippy::unnecessary_cast)] // field widths differ between architectures
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink as u64,
            size: u64::try_from(st.st_size).unwrap_or(0),
        }
    }

    fn sticky(&self) -> bool {
        self.mode & 0o1000 != 0
    }
}

/// Why a path is not trusted (completes "refusing PATH: it ...").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Distrust {
    /// Owned by a user other than root, the process's user and the output's owner.
    OwnedByOtherUser {
        /// The owner.
        uid: u32,
    },
    /// World-writable without the sticky bit.
    WritableByOthers {
        /// Its mode.
        mode: u32,
    },
    /// Group-writable by a group other than root's or the process's.
    WritableByGroup {
        /// The group.
        gid: u32,
        /// Its mode.
        mode: u32,
    },
    /// A symlink another user could have placed or could replace.
    UntrustedSymlink {
        /// The link's owner.
        uid: u32,
    },
    /// A symlink where a file was expected.
    SymlinkedFile,
    /// Too many symlinks on the path (a loop).
    TooManySymlinks,
    /// Not a directory.
    NotADirectory(Kind),
    /// Not a regular file (a FIFO, a device ...).
    NotARegularFile(Kind),
    /// A file with other hard links (it may be someone else's file).
    HardLinked {
        /// Its link count.
        nlink: u64,
    },
    /// Larger than the caller accepts.
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl fmt::Display for Distrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distrust::OwnedByOtherUser { uid } => write!(
                f,
                "is owned by uid {uid}, another user than root, the agent and the output's owner; that user could replace what is written there (use a directory owned by root, or set the output's owner to that user)"
            ),
            Distrust::WritableByOthers { mode } => write!(f, "is writable by every user (mode {mode:04o}) and not sticky; other users could replace what is written there"),
            Distrust::WritableByGroup { gid, mode } => {
                write!(f, "is writable by group {gid} (mode {mode:04o}); its members could replace what is written there")
            }
            Distrust::UntrustedSymlink { uid } => write!(
                f,
                "is a symbolic link owned by uid {uid} or in a directory other users control; only symlinks owned by root (or the agent's user) in directories they alone can change are followed"
            ),
            Distrust::SymlinkedFile => write!(f, "is a symbolic link; Sigil neither reads nor writes files through symlinks"),
            Distrust::TooManySymlinks => write!(f, "has too many symbolic links on its path"),
            Distrust::NotADirectory(k) => write!(f, "is {k}, not a directory"),
            Distrust::NotARegularFile(k) => write!(f, "is {k}, not a regular file"),
            Distrust::HardLinked { nlink } => write!(f, "has {nlink} hard links; it may be another user's file"),
            Distrust::TooLarge { size, limit } => write!(f, "is {size} bytes, more than the {limit} accepted"),
        }
    }
}

/// Who may own (and write) the directories and files a process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    uid: u32,
    gid: u32,
    owner: Option<u32>,
}

impl Trust {
    /// Root and the running process's effective user and group.
    pub fn process() -> Self {
        Self::new(rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
    }

    /// Root and `uid`/`gid` (tests).
    pub fn new(uid: u32, gid: u32) -> Self {
        Self { uid, gid, owner: None }
    }

    /// Also trusts `owner`'s directories and files: the user an output is written for.
    pub fn with_owner(mut self, owner: Option<u32>) -> Self {
        self.owner = owner;
        self
    }

    /// The output's owner, if trusted as well.
    pub fn owner(&self) -> Option<u32> {
        self.owner
    }

    /// The user trusted besides root (the process's, for [`Trust::process`]).
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Whether `uid` is root or the trusted user (not the output's owner).
    pub fn strict(&self, uid: u32) -> bool {
        uid == 0 || uid == self.uid
    }

    fn owner_ok(&self, uid: u32) -> Result<(), Distrust> {
        if self.strict(uid) || self.owner == Some(uid) {
            Ok(())
        } else {
            Err(Distrust::OwnedByOtherUser { uid })
        }
    }

    /// A directory on the path, or the directory written into.
    pub fn check_dir(&self, m: &Meta) -> Result<(), Distrust> {
        if m.kind != Kind::Dir {
            return Err(Distrust::NotADirectory(m.kind));
        }
        self.owner_ok(m.uid)?;
        if m.sticky() {
            // As /tmp: others may add entries but not remove or replace ours,
            // and every entry we go through must itself pass these checks.
            return Ok(());
        }
        if m.mode & 0o002 != 0 {
            return Err(Distrust::WritableByOthers { mode: m.mode });
        }
        if m.mode & 0o020 != 0 && m.gid != 0 && m.gid != self.gid {
            return Err(Distrust::WritableByGroup { gid: m.gid, mode: m.mode });
        }
        Ok(())
    }

    /// A symlink met on the path, in directory `parent` (already checked).
    pub fn check_symlink(&self, link: &Meta, parent: &Meta) -> Result<(), Distrust> {
        if self.strict(link.uid) && self.strict(parent.uid) {
            Ok(())
        } else {
            Err(Distrust::UntrustedSymlink { uid: link.uid })
        }
    }

    /// An existing file about to be read back.
    pub fn check_file(&self, m: &Meta, limit: u64) -> Result<(), Distrust> {
        if m.kind != Kind::File {
            return Err(Distrust::NotARegularFile(m.kind));
        }
        self.owner_ok(m.uid)?;
        if m.nlink > 1 {
            return Err(Distrust::HardLinked { nlink: m.nlink });
        }
        if m.size > limit {
            return Err(Distrust::TooLarge { size: m.size, limit });
        }
        Ok(())
    }
}

/// Owner, group and mode of written files. Directories created for them get the
/// same owner and group and the mode with `x` wherever `r` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Permission bits of files (no setuid, setgid, sticky or execute bits).
    pub mode: u32,
    /// Owner (`None`: the process's user).
    pub uid: Option<u32>,
    /// Group (`None`: the process's group).
    pub gid: Option<u32>,
}

impl Access {
    /// 0600, owned by the process: the default of every secret.
    pub const PRIVATE: Access = Access { mode: 0o600, uid: None, gid: None };

    /// Mode of files.
    pub fn file_mode(&self) -> u32 {
        self.mode & 0o666
    }

    /// Mode of directories: `x` wherever `r` is set (0600 -> 0700, 0640 -> 0750).
    pub fn dir_mode(&self) -> u32 {
        let m = self.file_mode();
        m | ((m & 0o444) >> 2) | 0o700
    }

    /// Directories created above the files (or above an output's own directory):
    /// owned by the process, 0700, or 0755 when the files are for another user
    /// or group, who must be able to reach them. Never given away: other
    /// outputs may share them.
    pub fn parents(&self) -> Access {
        let shared = self.uid.is_some() || self.gid.is_some() || self.file_mode() & 0o044 != 0;
        Access { mode: if shared { 0o644 } else { 0o600 }, uid: None, gid: None }
    }
}

impl Default for Access {
    fn default() -> Self {
        Self::PRIVATE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Trust = Trust { uid: 0, gid: 0, owner: None };

    fn dir(uid: u32, gid: u32, mode: u32) -> Meta {
        Meta { kind: Kind::Dir, mode, uid, gid, nlink: 2, size: 4096 }
    }

    fn file(uid: u32, nlink: u64, size: u64) -> Meta {
        Meta { kind: Kind::File, mode: 0o600, uid, gid: 0, nlink, size }
    }

    #[test]
    fn directory_of_another_user_is_refused_unless_it_is_the_outputs_owner() {
        assert_eq!(ME.check_dir(&dir(65534, 65534, 0o700)), Err(Distrust::OwnedByOtherUser { uid: 65534 }));
        assert_eq!(ME.with_owner(Some(65534)).check_dir(&dir(65534, 65534, 0o700)), Ok(()));
        assert_eq!(ME.check_dir(&dir(0, 0, 0o755)), Ok(()));
    }

    #[test]
    fn world_writable_directory_is_trusted_only_when_sticky() {
        assert_eq!(ME.check_dir(&dir(0, 0, 0o777)), Err(Distrust::WritableByOthers { mode: 0o777 }));
        assert_eq!(ME.check_dir(&dir(0, 0, 0o1777)), Ok(()));
    }

    #[test]
    fn group_writable_directory_is_trusted_only_for_root_or_own_group() {
        assert_eq!(ME.check_dir(&dir(0, 50, 0o775)), Err(Distrust::WritableByGroup { gid: 50, mode: 0o775 }));
        assert_eq!(ME.check_dir(&dir(0, 0, 0o775)), Ok(()));
        assert_eq!(Trust::new(1000, 50).check_dir(&dir(1000, 50, 0o775)), Ok(()));
    }

    #[test]
    fn a_non_root_process_trusts_its_own_directories_only() {
        let me = Trust::new(1000, 1000);
        assert_eq!(me.check_dir(&dir(1000, 1000, 0o700)), Ok(()));
        assert_eq!(me.check_dir(&dir(1001, 1001, 0o700)), Err(Distrust::OwnedByOtherUser { uid: 1001 }));
    }

    #[test]
    fn symlink_is_followed_only_when_root_owns_it_and_its_directory() {
        let link = |uid| Meta { kind: Kind::Symlink, mode: 0o777, uid, gid: 0, nlink: 1, size: 4 };
        assert_eq!(ME.check_symlink(&link(0), &dir(0, 0, 0o755)), Ok(()));
        assert_eq!(ME.check_symlink(&link(0), &dir(0, 0, 0o1777)), Ok(()), "/var/run -> /run style");
        assert_eq!(ME.check_symlink(&link(65534), &dir(0, 0, 0o1777)), Err(Distrust::UntrustedSymlink { uid: 65534 }));
        // The output's owner may own the directory, not redirect root through a link.
        let t = ME.with_owner(Some(1000));
        assert_eq!(t.check_symlink(&link(1000), &dir(1000, 1000, 0o700)), Err(Distrust::UntrustedSymlink { uid: 1000 }));
    }

    #[test]
    fn fifos_devices_hard_links_and_large_files_are_not_read() {
        let fifo = Meta { kind: Kind::Fifo, ..file(0, 1, 0) };
        assert_eq!(ME.check_file(&fifo, 10), Err(Distrust::NotARegularFile(Kind::Fifo)));
        let dev = Meta { kind: Kind::CharDevice, ..file(0, 1, 0) };
        assert_eq!(ME.check_file(&dev, 10), Err(Distrust::NotARegularFile(Kind::CharDevice)));
        assert_eq!(ME.check_file(&file(0, 2, 1), 10), Err(Distrust::HardLinked { nlink: 2 }));
        assert_eq!(ME.check_file(&file(0, 1, 11), 10), Err(Distrust::TooLarge { size: 11, limit: 10 }));
        assert_eq!(ME.check_file(&file(65534, 1, 1), 10), Err(Distrust::OwnedByOtherUser { uid: 65534 }));
        assert_eq!(ME.check_file(&file(0, 1, 10), 10), Ok(()));
    }

    #[test]
    fn directory_mode_adds_search_where_read_is_granted() {
        assert_eq!(Access::PRIVATE.dir_mode(), 0o700);
        assert_eq!(Access { mode: 0o640, ..Access::PRIVATE }.dir_mode(), 0o750);
        assert_eq!(Access { mode: 0o644, ..Access::PRIVATE }.dir_mode(), 0o755);
        assert_eq!(Access { mode: 0o4755, ..Access::PRIVATE }.file_mode(), 0o644);
        assert_eq!(Access::PRIVATE.parents().dir_mode(), 0o700);
        assert_eq!(Access { uid: Some(1000), ..Access::PRIVATE }.parents(), Access { mode: 0o644, uid: None, gid: None });
    }
}
