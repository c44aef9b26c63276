//! Files in places other local users can reach, handled by a privileged process.
//!
//! The agent runs as root and writes credentials into directories that other
//! programs (and sometimes other users) share. The mistakes this module exists
//! to prevent, each with a test in `trust.rs`, `dir.rs` or the agent's
//! acceptance tests:
//!
//! - **Following a planted symlink.** A user replaces an output directory (or one
//!   of its parents) by a symlink to `/etc`; root then creates, chmods and fills
//!   the target. Every path is walked one component at a time with
//!   `openat(O_NOFOLLOW)` from `/`; a symlink is followed only when root or the
//!   process itself owns it and it sits in a directory only they can change.
//! - **Trusting a directory someone else controls.** A directory owned by another
//!   user, or writable by others without the sticky bit, lets that user swap the
//!   files the process just wrote (e.g. point `bundle.pem` at their own CA). Such
//!   directories are refused with the reason; the single exception is the user
//!   an output is written *for* (`owner:`), who may own its directory.
//! - **Reading whatever sits at a path.** A FIFO blocks the reader forever,
//!   `/dev/zero` never ends, a hard link exposes a file the user cannot read.
//!   Existing files are read only when they are regular, singly linked, owned by
//!   a trusted user and at most a given size; the open never blocks.
//! - **Predictable or reused temp files.** New contents go to a random name
//!   created with `O_EXCL|O_NOFOLLOW` at mode 0600, get their owner and mode
//!   through the open descriptor, are fsynced, then renamed over the target.
//!
//! The decisions are pure functions over file metadata ([`trust`]); [`dir`]
//! carries them out with directory descriptors, so a path checked is the path
//! used (no check-then-use race on names).

pub mod dir;
pub mod trust;
pub mod users;

pub use dir::{open_dir, write_private, OpenDir};
pub use trust::{Access, Distrust, Trust};

use std::path::PathBuf;

/// Suffix of in-flight temp files; they start with a dot so globbing readers skip them.
pub const TMP_SUFFIX: &str = ".sigil-tmp";

/// A file operation failed or was refused; the path says where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The system call failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// What was being done, e.g. `create directory`.
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path is not one the process may trust; the reason names the fix.
    #[error("refusing {path}: it {why}")]
    Refused {
        /// The path concerned.
        path: PathBuf,
        /// Why it is not trusted.
        why: Distrust,
    },
}

impl FsError {
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str) -> impl FnOnce(rustix::io::Errno) -> FsError {
        let path = path.into();
        move |e| FsError::Io { path, action, source: e.into() }
    }

    pub(crate) fn refused(path: impl Into<PathBuf>) -> impl FnOnce(Distrust) -> FsError {
        let path = path.into();
        move |why| FsError::Refused { path, why }
    }
}
