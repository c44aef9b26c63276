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
//! - **Predictable or reused temp files.** Writes go through the one writer,
//!   [`crate::fsutil`]: a random name created `O_EXCL|O_NOFOLLOW`, owner and
//!   mode set on the open descriptor, fsync, rename over the target.
//!
//! The decisions are pure functions over file metadata ([`trust`]); [`dir`]
//! carries them out with directory descriptors and hands back a
//! [`TrustedDir`], so a path checked is the path used (no check-then-use race
//! on names).

pub mod dir;
pub mod trust;
pub mod users;

pub use crate::fsutil::{FsError, TrustedDir, TMP_SUFFIX};
pub use dir::open_dir;
pub use trust::{Access, Distrust, Trust};
