//! Workload attestation from the unix socket's peer credentials: who is calling
//! (uid, gid, pid from SO_PEERCRED) and what it runs (the executable behind
//! /proc/<pid>/exe and its SHA-256). These become `workload.unix.*` attributes,
//! which the broker's workload identity rules match.
//!
//! The executable is hashed through /proc/<pid>/exe, i.e. the file the process
//! actually runs even if its path was replaced since. The uid/gid come from the
//! kernel at connect time. The pid's program can change after connect (exec) and
//! the pid can be reused; [`stamp`] records the process start time and executable
//! file when the connection is accepted, and every request is attested only if
//! the stamp is unchanged before and after its attributes are read.

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

/// What tells one running program from another under the same pid: the process
/// start time (changes when the pid is reused) and the executable file's device
/// and inode (change when the process executes another program). The start
/// time is world-readable; the executable is not when an agent that is not
/// root attests another user's process: then only the start time is compared
/// (an exit or a reused pid is still seen; path and hash rules fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStamp {
    start_time: u64,
    exe: Option<(u64, u64)>,
}

/// The start time (field 22, clock ticks since boot) from `/proc/<pid>/stat`.
/// The command name (field 2) may hold spaces and parentheses: fields are
/// counted after its last `)`.
pub fn start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The stamp of process `pid` now, if it runs (`None`: gone, a zombie, or
/// its stat unreadable).
pub fn stamp(pid: i32) -> Option<ProcStamp> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    if matches!(state(&stat)?, 'Z' | 'X' | 'x') {
        return None;
    }
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).ok().map(|m| (m.dev(), m.ino()));
    Some(ProcStamp { start_time: start_time(&stat)?, exe })
}

/// The state letter (field 3) of a `/proc/<pid>/stat` line.
fn state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}

impl ProcStamp {
    /// Whether the caller's executable could be seen when it connected.
    pub fn exe_seen(&self) -> bool {
        self.exe.is_some()
    }
}

/// `attrs` without path and hash unless the executable was seen when the
/// caller connected (`stamp`): otherwise the stamp check cannot tell that the
/// caller executed another program since, so path and hash read now could
/// describe a program it ran only to borrow that program's identity (rules on
/// them then fail closed).
pub fn only_what_the_stamp_covers(mut attrs: BTreeMap<String, String>, stamp: Option<&ProcStamp>) -> BTreeMap<String, String> {
    if !stamp.is_some_and(ProcStamp::exe_seen) {
        attrs.remove(PATH);
        attrs.remove(SHA256);
    }
    attrs
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
    fn start_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(start_time("42 (x"), None);
    }

    #[test]
    fn own_stamp_is_stable_and_another_program_differs() {
        let me = std::process::id() as i32;
        assert_eq!(stamp(me), stamp(me));
        let mut child = std::process::Command::new("/bin/sh").arg("-c").arg("read x").stdin(std::process::Stdio::piped()).spawn().unwrap();
        let other = stamp(child.id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        assert!(other.is_some());
        assert_ne!(stamp(me), other);
    }

    #[test]
    fn without_a_readable_executable_the_start_time_still_tells_an_exited_process_apart() {
        let mut child = std::process::Command::new("/bin/sh").arg("-c").arg("read x").stdin(std::process::Stdio::piped()).spawn().unwrap();
        let pid = child.id() as i32;
        let running = stamp(pid).unwrap();
        // As an agent that is not root sees another user's process: no executable.
        let unreadable = ProcStamp { exe: None, ..running };
        assert_eq!(Some(unreadable), stamp(pid).map(|s| ProcStamp { exe: None, ..s }));
        let _ = child.kill();
        let _ = child.wait();
        assert_ne!(stamp(pid), Some(unreadable), "gone (or another process under a reused pid)");
        assert_ne!(ProcStamp { start_time: running.start_time + 1, ..unreadable }, unreadable, "a reused pid starts later");
    }

    #[test]
    fn a_zombie_has_no_stamp_and_path_and_hash_need_an_executable_seen_at_connect() {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: a zombie once it exited.
        let zombie = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| state(&s) == Some('Z'))
        });
        assert!(zombie);
        assert_eq!(stamp(pid), None);
        let _ = child.wait();

        let me = stamp(std::process::id() as i32).unwrap();
        let attrs = Attestor::default().attributes(1, 2, Some(std::process::id() as i32));
        assert!(only_what_the_stamp_covers(attrs.clone(), Some(&me)).contains_key(PATH));
        for unseen in [None, Some(&ProcStamp { exe: None, ..me })] {
            let kept = only_what_the_stamp_covers(attrs.clone(), unseen);
            assert!(!kept.contains_key(PATH) && !kept.contains_key(SHA256) && kept.contains_key(UID), "{kept:?}");
        }
    }

    #[test]
    fn unknown_pid_yields_only_uid_and_gid() {
        let a = Attestor::default().attributes(5, 6, None);
        assert_eq!(a.len(), 2);
        assert!(describe(&a).contains("uid 5"));
    }
}
