//! The joined identity, cached for the Terraform run so that the run joins once.
//!
//! Terraform starts the provider several times per run (`terraform apply` =
//! a plan process and an apply process; every `plan` one more). Each process
//! that joined on its own used one use of the join token (a `max_uses = 1`
//! bootstrap token died mid-apply) and added a bot instance. The first process
//! now writes the identity it got to a private file; later processes with the
//! same join inputs reuse it while it has comfortable validity left.
//!
//! - **Keyed by the join inputs**: SHA-256 over broker address, method, join
//!   credential, join token name and CA (length-prefixed, domain-separated).
//!   Another token, broker or CA is another entry. The file name is the hash:
//!   it reveals nothing of the secret (which is high-entropy; the broker's own
//!   lookup hash is a different, unprefixed digest).
//! - **Private**: the directory is created 0700 and must be owned by this
//!   user with no group or other access; it is opened without following a
//!   symlink, and its parents are checked ([`sigil_core::safe_fs`]). Files are
//!   written 0600 atomically ([`sigil_core::fsutil`]) and read back refusing
//!   links, FIFOs, other users' files and more than [`MAX_ENTRY_BYTES`].
//! - **Fresh**: reused while at least a third of the certificate's lifetime
//!   and [`MIN_LEFT_SECS`] are left ([`Entry::fresh`]). The caller drops an
//!   entry the broker refuses (revoked, locked) and joins again, once.
//! - **One joiner**: processes starting together take an exclusive `flock`
//!   on the directory's lock file, so only the first joins.
//! - **Swept**: each store deletes the entries whose certificate has expired
//!   (platform tokens change every run, so their entries are never met again).
//!
//! Plain logic with the clock and the directory injected; no network.

use sigil_core::fsutil::{FsError, TrustedDir};
use sigil_schemas::identity::Identity;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Least validity left for an entry to be reused, whatever its lifetime.
pub const MIN_LEFT_SECS: i64 = 120;

/// Largest cache file read back (an identity is a few KiB).
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// Most entries one sweep looks at.
pub const MAX_SWEEP: usize = 1000;

/// Environment variable that turns the cache off (`off`) or names its directory.
pub const CACHE_ENV: &str = "SIGIL_PROVIDER_CACHE";

/// Why the cache cannot be used (the provider then joins without it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The directory or a file in it could not be opened, read or written safely.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The directory is not private to this user.
    #[error("refusing join cache directory {path}: {why} (set {CACHE_ENV}=off to join without a cache, or {CACHE_ENV}=DIR for another directory)")]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Where the cache lives, as the environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `SIGIL_PROVIDER_CACHE=off`: every provider process joins on its own.
    Off,
    /// This directory.
    Dir(PathBuf),
}

/// The cache location from the environment: `SIGIL_PROVIDER_CACHE` (`off`, or a
/// directory), else `$XDG_RUNTIME_DIR/sigil-provider`, else
/// `${TMPDIR:-/tmp}/sigil-provider-UID`.
pub fn location(env: &dyn Fn(&str) -> Option<String>, uid: u32) -> Location {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    match set(CACHE_ENV).as_deref().map(str::trim) {
        Some("off" | "false" | "0" | "none") => Location::Off,
        Some(dir) => Location::Dir(PathBuf::from(dir)),
        None => match set("XDG_RUNTIME_DIR") {
            Some(run) => Location::Dir(Path::new(&run).join("sigil-provider")),
            None => Location::Dir(Path::new(&set("TMPDIR").unwrap_or_else(|| "/tmp".into())).join(format!("sigil-provider-{uid}"))),
        },
    }
}

/// What a join is made of; the cache key.
pub struct JoinInputs<'a> {
    /// Broker address(es) as configured.
    pub addr: &'a str,
    /// Join method.
    pub method: &'a str,
    /// The join credential (secret or platform token).
    pub credential: &'a str,
    /// Join token name.
    pub token_name: &'a str,
    /// CA PEM of the broker's TLS certificate.
    pub ca_pem: &'a str,
}

impl JoinInputs<'_> {
    /// Hex SHA-256 over the inputs, length-prefixed so no two input sets collide.
    pub fn key(&self) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"sigil-provider-join-cache-v1\0");
        for part in [self.addr, self.method, self.credential, self.token_name, self.ca_pem] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A cached identity.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The joined identity (certificate, key, CA).
    pub identity: Identity,
    /// When it was issued (Unix seconds, the provider's clock).
    pub issued_at: i64,
    /// When its certificate expires (Unix seconds, the broker's answer).
    pub expires_at: i64,
}

impl Entry {
    /// Whether the entry may be reused at `now`: at least a third of its
    /// lifetime and [`MIN_LEFT_SECS`] left.
    pub fn fresh(&self, now: i64) -> bool {
        let left = self.expires_at - now;
        let lifetime = self.expires_at - self.issued_at;
        lifetime > 0 && now >= self.issued_at - 60 && left >= MIN_LEFT_SECS && left.saturating_mul(3) >= lifetime
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::json!({
            "version": 1,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "identity": self.identity.to_pem(),
        })
        .to_string()
        .into_bytes()
    }

    fn from_json(data: &[u8]) -> Option<Entry> {
        let v: serde_json::Value = serde_json::from_slice(data).ok()?;
        if v.get("version")?.as_i64()? != 1 {
            return None;
        }
        Some(Entry {
            identity: Identity::from_pem(v.get("identity")?.as_str()?).ok()?,
            issued_at: v.get("issued_at")?.as_i64()?,
            expires_at: v.get("expires_at")?.as_i64()?,
        })
    }
}

/// An opened, checked cache directory.
#[derive(Debug)]
pub struct JoinCache {
    dir: TrustedDir,
}

/// Held while one process joins for a key; released on drop.
#[derive(Debug)]
pub struct JoinLock {
    _fd: OwnedFd,
}

fn file_name(key: &str) -> OsString {
    OsString::from(format!("join-{key}.json"))
}

impl JoinCache {
    /// Opens (creating it 0700 if missing) the cache directory `path`: its
    /// parents are walked and checked, the directory itself is opened without
    /// following a symlink and must be owned by this user with no group or
    /// other permission bits.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        use rustix::fs::{Mode, OFlags};
        let (parent, name) = sigil_core::fsutil::split(path)?;
        let parent = sigil_core::safe_fs::open_dir(parent, &sigil_core::safe_fs::Trust::process(), Some(&sigil_core::safe_fs::Access::PRIVATE))?;
        let refused = |why: String| CacheError::NotPrivate { path: path.to_path_buf(), why };
        match rustix::fs::mkdirat(&parent.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(FsError::io(path, "create directory")(e).into()),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&parent.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => return Err(refused("it is a symbolic link or not a directory".into())),
            Err(e) => return Err(FsError::io(path, "open directory")(e).into()),
        };
        let st = rustix::fs::fstat(&fd).map_err(FsError::io(path, "inspect"))?;
        let euid = rustix::process::geteuid().as_raw();
        if st.st_uid != euid {
            return Err(refused(format!("it is owned by uid {}, not by this user (uid {euid})", st.st_uid)));
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o077 != 0 {
            return Err(refused(format!("other users have access to it (mode {mode:04o}); it must be 0700")));
        }
        Ok(Self { dir: TrustedDir { fd, path: path.to_path_buf() } })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The entry for `key` if it is fresh at `now`. A stale or unreadable
    /// entry is removed; a file the checks refuse is left alone and ignored.
    pub fn load(&self, key: &str, now: i64) -> Option<Entry> {
        let name = file_name(key);
        let data = match self.dir.read_file(&name, &sigil_core::safe_fs::Trust::process(), MAX_ENTRY_BYTES) {
            Ok(Some(d)) => d,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a join cache entry");
                return None;
            }
        };
        match Entry::from_json(&data) {
            Some(e) if e.fresh(now) => Some(e),
            _ => {
                self.remove(key);
                None
            }
        }
    }

    /// Writes the entry for `key` (0600, atomically), then deletes expired
    /// entries (and unreadable ones) of earlier runs.
    pub fn store(&self, key: &str, entry: &Entry, now: i64) -> Result<(), CacheError> {
        self.dir.write(&file_name(key), &entry.to_json(), 0o600)?;
        self.sweep(now);
        Ok(())
    }

    /// Deletes entries whose certificate expired by `now`, at most [`MAX_SWEEP`] looked at.
    fn sweep(&self, now: i64) {
        let trust = sigil_core::safe_fs::Trust::process();
        let names = self.dir.entries().into_iter().filter(|n| n.to_str().is_some_and(|n| n.starts_with("join-") && n.ends_with(".json")));
        for name in names.take(MAX_SWEEP) {
            let expired = match self.dir.read_file(&name, &trust, MAX_ENTRY_BYTES) {
                Ok(Some(data)) => Entry::from_json(&data).is_none_or(|e| e.expires_at <= now),
                Ok(None) | Err(_) => false,
            };
            if expired {
                self.dir.remove(&name);
            }
        }
    }

    /// Drops the entry for `key` (the broker refused it, or it is stale).
    pub fn remove(&self, key: &str) {
        self.dir.remove(file_name(key));
    }

    /// Takes the directory's exclusive join lock, waiting at most `wait` for
    /// another process's join; `None` if it could not be had (the caller
    /// joins anyway). One lock file for every key: nothing piles up.
    pub async fn lock(&self, wait: Duration) -> Option<JoinLock> {
        use rustix::fs::{FlockOperation, Mode, OFlags};
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&self.dir.fd, "join.lock", flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the join cache lock");
                return None;
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Some(JoinLock { _fd: fd }),
                Err(rustix::io::Errno::WOULDBLOCK) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "join cache lock not taken; joining without it");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn identity() -> Identity {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["bot".into()]).unwrap().self_signed(&key).unwrap();
        Identity::new(cert.pem(), key.serialize_pem(), cert.pem())
    }

    fn inputs<'a>(credential: &'a str, addr: &'a str) -> JoinInputs<'a> {
        JoinInputs { addr, method: "token", credential, token_name: "", ca_pem: "CA" }
    }

    #[test]
    fn an_entry_is_reused_while_a_third_of_its_lifetime_is_left() {
        let e = Entry { identity: identity(), issued_at: 1000, expires_at: 1000 + 3600 };
        assert!(e.fresh(1000));
        assert!(e.fresh(1000 + 2400), "exactly a third left");
        assert!(!e.fresh(1000 + 2401));
        assert!(!e.fresh(1000 + 3600) && !e.fresh(9999));
        // Short lifetimes: never less than MIN_LEFT_SECS left.
        let short = Entry { identity: identity(), issued_at: 0, expires_at: 300 };
        assert!(short.fresh(0) && !short.fresh(300 - MIN_LEFT_SECS + 1));
        // A clock that went back far before the issue time does not trust it.
        assert!(!e.fresh(0));
    }

    #[test]
    fn the_key_changes_with_every_input_and_hides_the_secret() {
        let base = inputs("s3cret-token", "a:1").key();
        assert_eq!(base.len(), 64);
        assert!(!base.contains("s3cret"));
        assert_eq!(base, inputs("s3cret-token", "a:1").key(), "stable");
        assert_ne!(base, inputs("s3cret-tokem", "a:1").key());
        assert_ne!(base, inputs("s3cret-token", "a:2").key());
        let other = |f: &dyn Fn(&mut JoinInputs)| {
            let mut i = inputs("s3cret-token", "a:1");
            f(&mut i);
            i.key()
        };
        assert_ne!(base, other(&|i| i.method = "terraform_cloud"));
        assert_ne!(base, other(&|i| i.token_name = "x"));
        assert_ne!(base, other(&|i| i.ca_pem = "CA2"));
        // Length prefixes: moving a byte across a field boundary changes the key.
        let a = JoinInputs { addr: "ab", method: "c", credential: "", token_name: "", ca_pem: "" }.key();
        let b = JoinInputs { addr: "a", method: "bc", credential: "", token_name: "", ca_pem: "" }.key();
        assert_ne!(a, b);
    }

    #[test]
    fn store_then_load_round_trips_privately_and_stale_entries_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cache");
        let cache = JoinCache::open(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let key = inputs("s", "a:1").key();
        let id = identity();
        cache.store(&key, &Entry { identity: id.clone(), issued_at: 100, expires_at: 100 + 600 }, 100).unwrap();
        let file = dir.join(format!("join-{key}.json"));
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let got = cache.load(&key, 150).unwrap();
        assert_eq!(got.identity.to_pem(), id.to_pem());
        assert!(cache.load(&inputs("other", "a:1").key(), 150).is_none(), "another credential misses");
        assert!(cache.load(&key, 100 + 500).is_none(), "stale");
        assert!(!file.exists(), "a stale entry is removed");
        // Garbage is dropped, not trusted.
        std::fs::write(&file, b"{not json").unwrap();
        assert!(cache.load(&key, 150).is_none());
        assert!(!file.exists());
    }

    #[test]
    fn storing_sweeps_expired_entries_of_earlier_runs() {
        let d = tempfile::tempdir().unwrap();
        let cache = JoinCache::open(&d.path().join("c")).unwrap();
        let (old, live, new) = (inputs("run-1", "a").key(), inputs("run-2", "a").key(), inputs("run-3", "a").key());
        cache.store(&old, &Entry { identity: identity(), issued_at: 0, expires_at: 3600 }, 0).unwrap();
        cache.store(&live, &Entry { identity: identity(), issued_at: 3000, expires_at: 6600 }, 3000).unwrap();
        std::fs::write(d.path().join("c/unrelated"), b"x").unwrap();
        cache.store(&new, &Entry { identity: identity(), issued_at: 4000, expires_at: 7600 }, 4000).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(d.path().join("c")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut want = vec![format!("join-{live}.json"), format!("join-{new}.json"), "unrelated".to_string()];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn a_directory_others_can_access_or_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        for mode in [0o770, 0o707, 0o750, 0o777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = JoinCache::open(&dir).unwrap_err();
            assert!(matches!(e, CacheError::NotPrivate { .. }), "{mode:o}: {e}");
            assert!(e.to_string().contains(CACHE_ENV), "{e}");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        JoinCache::open(&dir).unwrap();
        // Another user's 0700 directory (only root can make one here; CI runs as root).
        if rustix::process::geteuid().is_root() {
            let theirs = d.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = JoinCache::open(&theirs).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(JoinCache::open(&link).unwrap_err(), CacheError::NotPrivate { .. }));
        // A planted symlink in place of an entry is not followed.
        let cache = JoinCache::open(&dir).unwrap();
        let key = inputs("s", "a:1").key();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"{}").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(format!("join-{key}.json"))).unwrap();
        assert!(cache.load(&key, 0).is_none());
        assert_eq!(std::fs::read(&victim).unwrap(), b"{}");
    }

    #[test]
    fn location_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        assert_eq!(location(&env(&[(CACHE_ENV, "off")]), 7), Location::Off);
        assert_eq!(location(&env(&[(CACHE_ENV, "/c"), ("XDG_RUNTIME_DIR", "/run/user/7")]), 7), Location::Dir("/c".into()));
        assert_eq!(location(&env(&[("XDG_RUNTIME_DIR", "/run/user/7")]), 7), Location::Dir("/run/user/7/sigil-provider".into()));
        assert_eq!(location(&env(&[("TMPDIR", "/var/tmp")]), 7), Location::Dir("/var/tmp/sigil-provider-7".into()));
        assert_eq!(location(&env(&[]), 7), Location::Dir("/tmp/sigil-provider-7".into()));
    }

    #[tokio::test]
    async fn a_second_process_waits_for_the_first_joiner() {
        let d = tempfile::tempdir().unwrap();
        let cache = JoinCache::open(&d.path().join("c")).unwrap();
        let held = cache.lock(Duration::from_millis(10)).await.unwrap();
        // flock locks belong to the open file description: another open is another holder.
        assert!(cache.lock(Duration::from_millis(120)).await.is_none(), "held elsewhere");
        drop(held);
        assert!(cache.lock(Duration::from_millis(10)).await.is_some());
    }
}
