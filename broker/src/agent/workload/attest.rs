//! Workload attestation from the unix socket's peer credentials: who is calling
//! (uid, gid, pid from SO_PEERCRED) and what it runs (the executable behind
//! /proc/<pid>/exe and its SHA-256). These become `workload.unix.*` attributes,
//! which the broker's workload identity rules match.
//!
//! The executable is hashed through /proc/<pid>/exe, i.e. the file the process
//! actually runs even if its path was replaced since. A pid can be reused between
//! the connection and the lookup; the uid/gid come from the kernel at connect time
//! and are not subject to that race.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// Attribute names.
pub const UID: &str = "workload.unix.uid";
/// Group id.
pub const GID: &str = "workload.unix.gid";
/// Process id.
pub const PID: &str = "workload.unix.pid";
/// Executable path.
pub const PATH: &str = "workload.unix.path";
/// Executable SHA-256 (hex).
pub const SHA256: &str = "workload.unix.sha256";

/// Largest number of remembered executable hashes.
const HASH_CACHE_CAP: usize = 256;

/// Key of a hashed file: (device, inode, size, mtime, mtime_nsec).
type FileKey = (u64, u64, u64, i64, i64);

/// Remembers executable hashes by file identity so repeated calls from one
/// binary do not re-read it.
#[derive(Debug, Default)]
pub struct Attestor {
    hashes: Mutex<HashMap<FileKey, String>>,
}

fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

impl Attestor {
    /// Attributes of a caller. Path and hash are left out when the process is gone
    /// or unreadable (the conditions that need them then fail, closed).
    pub fn attributes(&self, uid: u32, gid: u32, pid: Option<i32>) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert(UID.to_string(), uid.to_string());
        a.insert(GID.to_string(), gid.to_string());
        let Some(pid) = pid.filter(|p| *p > 0) else { return a };
        a.insert(PID.to_string(), pid.to_string());
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        if let Ok(path) = std::fs::read_link(&exe) {
            a.insert(PATH.to_string(), path.to_string_lossy().into_owned());
        }
        if let Some(h) = self.hash(&exe) {
            a.insert(SHA256.to_string(), h);
        }
        a
    }

    fn hash(&self, exe: &std::path::Path) -> Option<String> {
        let m = std::fs::metadata(exe).ok()?;
        let key = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
        if let Some(h) = self.hashes.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Some(h.clone());
        }
        let h = sha256_file(exe).ok()?;
        let mut map = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= HASH_CACHE_CAP {
            map.clear();
        }
        map.insert(key, h.clone());
        Some(h)
    }
}

/// A short description of a caller for logs and error messages.
pub fn describe(a: &BTreeMap<String, String>) -> String {
    let get = |k| a.get(k).map(String::as_str).unwrap_or("?");
    format!("uid {} gid {} pid {} exe {}", get(UID), get(GID), get(PID), get(PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_attested_with_path_and_matching_hash() {
        let a = Attestor::default().attributes(1000, 1001, Some(std::process::id() as i32));
        assert_eq!(a[UID], "1000");
        assert_eq!(a[GID], "1001");
        let me = std::env::current_exe().unwrap();
        assert_eq!(a[PATH], me.to_string_lossy());
        assert_eq!(a[SHA256], sha256_file(&me).unwrap());
        assert_eq!(a[SHA256].len(), 64);
    }

    #[test]
    fn unknown_pid_yields_only_uid_and_gid() {
        let a = Attestor::default().attributes(5, 6, None);
        assert_eq!(a.len(), 2);
        assert!(describe(&a).contains("uid 5"));
    }
}
