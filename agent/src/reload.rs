//! `outputs[].reload`: tells the program that reads an output's files that
//! they changed (nginx, sshd, PostgreSQL read certificates at start or on
//! SIGHUP), after every write: a renewal, a CA file or a KRL rewritten.
//!
//! Two forms, both bounded:
//! - `command: [/usr/sbin/nginx, -s, reload]`: run without a shell, with an
//!   empty environment but `PATH` and `SIGIL_OUTPUT`, stdin closed, stdout
//!   discarded and stderr to the agent's, in a process group of its own that
//!   is killed after `timeout` (default 30 s, at most 10 min). The first word
//!   must be an absolute path.
//! - `signal: HUP` + `pid_file: /run/nginx.pid`: one of HUP, USR1, USR2 sent
//!   to the pid the file names. The file is opened without following a
//!   symlink or blocking, and trusted (checked on the open file, so it cannot
//!   be swapped between check and read) only if it is a regular file of at
//!   most 64 bytes owned by root or the agent's user and writable by no one
//!   else, in a directory likewise, and names a pid above 1 that is not the
//!   agent: otherwise a local user who could write it would choose what the
//!   agent signals (pid -1 is every process, 0 the agent's group).
//!
//! Not covered: a stale pid file a crashed server left names whatever process
//! has that pid now (a server's own reload command checks its pid file better).
//!
//! A failed reload is retried a few times ([`RETRY_DELAYS`]), then logged; the
//! files stay written and the next write tries again.

use crate::config::Dur;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Default time a reload command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest accepted `timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Most words of a command.
pub const MAX_ARGS: usize = 64;
/// Longest word of a command.
pub const MAX_ARG_LEN: usize = 4096;
/// Largest pid file read.
pub const MAX_PID_FILE: u64 = 64;
/// Waits before each retry of a failed reload (a timed-out command is not retried).
pub const RETRY_DELAYS: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(30)];
/// `PATH` of a reload command.
pub const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a reload configuration is refused (at start).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadConfigError {
    /// Neither or both forms.
    #[error("give either `command` or `signal` with `pid_file`")]
    Form,
    /// A command that cannot be run as written.
    #[error("command: {0}")]
    Command(String),
    /// A signal other than HUP, USR1 or USR2.
    #[error("signal {0:?}: use HUP, USR1 or USR2")]
    Signal(String),
    /// `pid_file` missing, relative, or given with a command.
    #[error("pid_file: {0}")]
    PidFile(&'static str),
    /// `timeout` out of range (or given with a signal).
    #[error("timeout: {0}")]
    Timeout(String),
}

/// Why one reload failed (the files stay written).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The command could not be started.
    #[error("reload command {program}: cannot start: {source}")]
    Start { program: String, source: std::io::Error },
    /// The command ended with a failure status.
    #[error("reload command {program}: {status} (its stderr is in the agent's log above)")]
    Status { program: String, status: std::process::ExitStatus },
    /// The command ran past its timeout and was killed.
    #[error("reload command {program}: did not finish within {} s (killed)", timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
    /// The pid file is missing, untrusted or holds no usable pid.
    #[error("reload pid file {}: {reason}", path.display())]
    PidFile { path: PathBuf, reason: String },
    /// The signal could not be sent.
    #[error("reload signal {signal} to pid {pid}: {source}")]
    Kill { signal: &'static str, pid: i32, source: std::io::Error },
}

/// `outputs[].reload` as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Program and arguments (no shell).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Time the command may take (default 30 s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Signal name: HUP, USR1 or USR2 (`SIG` prefix accepted).
    #[serde(default)]
    pub signal: Option<String>,
    /// File holding the pid to signal.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
}

/// A checked reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Run a program.
    Command { argv: Vec<String>, timeout: Duration },
    /// Signal the pid in a file.
    Signal { signal: &'static str, pid_file: PathBuf },
}

impl ReloadConfig {
    /// Checks the configuration.
    pub fn resolve(&self) -> Result<Reload, ReloadConfigError> {
        match (&self.command, &self.signal) {
            (Some(argv), None) => {
                if self.pid_file.is_some() {
                    return Err(ReloadConfigError::PidFile("goes with `signal`, not `command`"));
                }
                check_command(argv)?;
                let timeout = self.timeout.map(|d| d.0).unwrap_or(DEFAULT_TIMEOUT);
                if timeout.is_zero() || timeout > MAX_TIMEOUT {
                    return Err(ReloadConfigError::Timeout(format!("must be between 1ms and {} s", MAX_TIMEOUT.as_secs())));
                }
                Ok(Reload::Command { argv: argv.clone(), timeout })
            }
            (None, Some(signal)) => {
                if self.timeout.is_some() {
                    return Err(ReloadConfigError::Timeout("goes with `command` (a signal is sent at once)".into()));
                }
                let signal = signal_name(signal)?;
                let pid_file = self.pid_file.clone().ok_or(ReloadConfigError::PidFile("required with `signal`"))?;
                if !pid_file.is_absolute() {
                    return Err(ReloadConfigError::PidFile("must be an absolute path"));
                }
                Ok(Reload::Signal { signal, pid_file })
            }
            _ => Err(ReloadConfigError::Form),
        }
    }
}

fn check_command(argv: &[String]) -> Result<(), ReloadConfigError> {
    let Some(program) = argv.first() else { return Err(ReloadConfigError::Command("is empty".into())) };
    if !Path::new(program).is_absolute() {
        return Err(ReloadConfigError::Command(format!("{program:?} must be an absolute path (no PATH lookup, no shell)")));
    }
    if argv.len() > MAX_ARGS {
        return Err(ReloadConfigError::Command(format!("at most {MAX_ARGS} words")));
    }
    if let Some(a) = argv.iter().find(|a| a.len() > MAX_ARG_LEN || a.contains('\0')) {
        return Err(ReloadConfigError::Command(format!("a word of {} bytes or with a NUL byte (at most {MAX_ARG_LEN} bytes)", a.len())));
    }
    Ok(())
}

fn signal_name(s: &str) -> Result<&'static str, ReloadConfigError> {
    let upper = s.to_ascii_uppercase();
    match upper.strip_prefix("SIG").unwrap_or(&upper) {
        "HUP" => Ok("HUP"),
        "USR1" => Ok("USR1"),
        "USR2" => Ok("USR2"),
        _ => Err(ReloadConfigError::Signal(s.to_string())),
    }
}

fn signal_of(name: &str) -> rustix::process::Signal {
    match name {
        "USR1" => rustix::process::Signal::USR1,
        "USR2" => rustix::process::Signal::USR2,
        _ => rustix::process::Signal::HUP,
    }
}

impl Reload {
    /// Runs the reload for the output named `output`.
    pub async fn run(&self, output: &str) -> Result<(), ReloadError> {
        match self {
            Reload::Command { argv, timeout } => run_command(argv, *timeout, output).await,
            Reload::Signal { signal, pid_file } => {
                let pid = read_pid_file(pid_file, rustix::process::geteuid().as_raw())?;
                if pid == std::process::id() as i32 {
                    return Err(ReloadError::PidFile { path: pid_file.clone(), reason: "names the agent itself".into() });
                }
                let target = rustix::process::Pid::from_raw(pid).ok_or_else(|| ReloadError::PidFile { path: pid_file.clone(), reason: "no pid".into() })?;
                rustix::process::kill_process(target, signal_of(signal)).map_err(|e| ReloadError::Kill { signal, pid, source: e.into() })
            }
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Reload::Command { argv, .. } => format!("command {}", argv[0]),
            Reload::Signal { signal, pid_file } => format!("SIG{signal} to the pid in {}", pid_file.display()),
        }
    }
}

async fn run_command(argv: &[String], timeout: Duration, output: &str) -> Result<(), ReloadError> {
    let program = argv[0].clone();
    let mut child = tokio::process::Command::new(&program)
        .args(&argv[1..])
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .env("SIGIL_OUTPUT", output)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ReloadError::Start { program: program.clone(), source })?;
    let group = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32));
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(ReloadError::Status { program, status }),
        Ok(Err(source)) => Err(ReloadError::Start { program, source }),
        Err(_) => {
            // The whole group: what the command started goes with it.
            if let Some(g) = group {
                let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            Err(ReloadError::Timeout { program, timeout })
        }
    }
}

/// The pid in `path`, if the file can be trusted by an agent running as `euid`
/// (see the module documentation). Every check is made on what was opened.
pub fn read_pid_file(path: &Path, euid: u32) -> Result<i32, ReloadError> {
    let bad = |reason: String| ReloadError::PidFile { path: path.to_path_buf(), reason };
    let trusted_owner = |uid: u32| uid == 0 || uid == euid;
    let parent = path.parent().ok_or_else(|| bad("has no directory".into()))?;
    let dir = std::fs::metadata(parent).map_err(|e| bad(format!("its directory: {e}")))?;
    if !trusted_owner(dir.uid()) || dir.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "its directory is owned by uid {} with mode {:04o}: it must be owned by root or the agent's user and writable by no one else",
            dir.uid(),
            dir.mode() & 0o7777
        )));
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(path)
        .map_err(|e| bad(format!("{e} (a symlink is not followed)")))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(bad("not a regular file".into()));
    }
    if !trusted_owner(meta.uid()) {
        return Err(bad(format!("owned by uid {}: only root or the agent's user (uid {euid}) may own it", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad(format!("mode {:04o}: writable by group or others", meta.mode() & 0o7777)));
    }
    if meta.len() > MAX_PID_FILE {
        return Err(bad(format!("{} bytes: a pid file holds at most {MAX_PID_FILE}", meta.len())));
    }
    use std::io::Read;
    let mut text = String::new();
    (&mut file).take(MAX_PID_FILE).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 1 => Ok(pid),
        _ => Err(bad(format!("holds {:?}, not a pid above 1", text.trim()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cfg(yaml: &str) -> Result<Reload, ReloadConfigError> {
        serde_norway::from_str::<ReloadConfig>(yaml).unwrap().resolve()
    }

    #[test]
    fn a_command_or_a_signal_with_its_pid_file_and_nothing_else() {
        assert_eq!(
            cfg("command: [/usr/sbin/nginx, -s, reload]\ntimeout: 5s\n"),
            Ok(Reload::Command { argv: vec!["/usr/sbin/nginx".into(), "-s".into(), "reload".into()], timeout: Duration::from_secs(5) })
        );
        assert_eq!(cfg("signal: sighup\npid_file: /run/nginx.pid\n"), Ok(Reload::Signal { signal: "HUP", pid_file: "/run/nginx.pid".into() }));
        assert_eq!(cfg("{}"), Err(ReloadConfigError::Form));
        assert_eq!(cfg("command: [/bin/true]\nsignal: HUP\npid_file: /p\n"), Err(ReloadConfigError::Form));
        assert!(matches!(cfg("command: [nginx, -s, reload]\n"), Err(ReloadConfigError::Command(m)) if m.contains("absolute")));
        assert!(matches!(cfg("command: []\n"), Err(ReloadConfigError::Command(_))));
        assert!(matches!(cfg("command: [/bin/true]\ntimeout: 11m\n"), Err(ReloadConfigError::Timeout(_))));
        assert!(matches!(cfg("command: [/bin/true]\npid_file: /p\n"), Err(ReloadConfigError::PidFile(_))));
        assert_eq!(cfg("signal: KILL\npid_file: /p\n"), Err(ReloadConfigError::Signal("KILL".into())));
        assert_eq!(cfg("signal: SIGSIGHUP\npid_file: /p\n"), Err(ReloadConfigError::Signal("SIGSIGHUP".into())));
        assert_eq!(cfg("signal: usr2\npid_file: /p\n"), Ok(Reload::Signal { signal: "USR2", pid_file: "/p".into() }));
        assert_eq!(cfg("signal: HUP\n"), Err(ReloadConfigError::PidFile("required with `signal`")));
        assert_eq!(cfg("signal: HUP\npid_file: run/x.pid\n"), Err(ReloadConfigError::PidFile("must be an absolute path")));
        assert!(matches!(cfg("signal: HUP\npid_file: /p\ntimeout: 1s\n"), Err(ReloadConfigError::Timeout(_))));
        assert!(serde_norway::from_str::<ReloadConfig>("comand: [/bin/true]\n").is_err(), "a typo is an error");
    }

    fn pid_file(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let p = dir.join("x.pid");
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_pid_file_is_trusted_only_when_nobody_else_could_have_written_it() {
        let tmp = tempfile::tempdir().unwrap();
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(read_pid_file(&pid_file(tmp.path(), "4242\n", 0o644), me).unwrap(), 4242);
        for (text, why) in [("-1", "every process"), ("0", "the agent's group"), ("1", "init"), ("abc", "text"), ("", "empty")] {
            let e = read_pid_file(&pid_file(tmp.path(), text, 0o644), me).unwrap_err().to_string();
            assert!(e.contains("not a pid above 1"), "{why}: {e}");
        }
        let e = read_pid_file(&pid_file(tmp.path(), "4242", 0o666), me).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        let e = read_pid_file(&pid_file(tmp.path(), "4242", 0o664), me).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        let someone_else = if me == 0 { 65534 } else { me + 1 };
        if me == 0 {
            let p = pid_file(tmp.path(), "4242", 0o644);
            std::os::unix::fs::chown(&p, Some(someone_else), None).unwrap();
            let e = read_pid_file(&p, me).unwrap_err().to_string();
            assert!(e.contains("owned by uid 65534"), "{e}");
        } else {
            let e = read_pid_file(&pid_file(tmp.path(), "4242", 0o644), someone_else).unwrap_err().to_string();
            assert!(e.contains(&format!("owned by uid {me}")), "{e}");
        }
        let p = pid_file(tmp.path(), &"9".repeat(100), 0o644);
        assert!(read_pid_file(&p, me).unwrap_err().to_string().contains("at most 64"));
        let link = tmp.path().join("link.pid");
        std::os::unix::fs::symlink(pid_file(tmp.path(), "4242", 0o644), &link).unwrap();
        assert!(read_pid_file(&link, me).unwrap_err().to_string().contains("symlink is not followed"));
        let fifo = tmp.path().join("fifo.pid");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0).unwrap();
        let started = std::time::Instant::now();
        assert!(read_pid_file(&fifo, me).unwrap_err().to_string().contains("not a regular file"));
        assert!(started.elapsed() < Duration::from_secs(2), "opening a FIFO does not block");
        let open_dir = tmp.path().join("open");
        std::fs::create_dir(&open_dir).unwrap();
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let p = pid_file(&open_dir, "4242", 0o644);
        assert!(read_pid_file(&p, me).unwrap_err().to_string().contains("its directory"), "a directory others can write");
    }

    #[tokio::test]
    async fn a_command_runs_without_a_shell_and_is_killed_at_its_timeout() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("env");
        let script = format!("printf '%s|%s' \"$SIGIL_OUTPUT\" \"$HOME\" > {}", out.display());
        let ok = Reload::Command { argv: vec!["/bin/sh".into(), "-c".into(), script], timeout: Duration::from_secs(10) };
        ok.run("application:/etc/app").await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "application:/etc/app|", "only PATH and SIGIL_OUTPUT are set");
        let fails = Reload::Command { argv: vec!["/bin/false".into()], timeout: Duration::from_secs(10) };
        assert!(matches!(fails.run("o").await, Err(ReloadError::Status { .. })));
        let slow = Reload::Command { argv: vec!["/bin/sleep".into(), "30".into()], timeout: Duration::from_millis(200) };
        let started = std::time::Instant::now();
        assert!(matches!(slow.run("o").await, Err(ReloadError::Timeout { .. })));
        assert!(started.elapsed() < Duration::from_secs(5));
        // What the command started dies with it at the timeout (its own process group).
        let bg = tmp.path().join("bg.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", bg.display());
        let spawner = Reload::Command { argv: vec!["/bin/sh".into(), "-c".into(), script], timeout: Duration::from_millis(500) };
        assert!(matches!(spawner.run("o").await, Err(ReloadError::Timeout { .. })));
        let bg_pid: i32 = std::fs::read_to_string(&bg).unwrap().trim().parse().unwrap();
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{bg_pid}/stat")).map(|st| st.contains(") Z ")).unwrap_or(true)
        });
        assert!(gone, "the command's background child outlived the timeout");
        let missing = Reload::Command { argv: vec!["/nonexistent/sigil-reload".into()], timeout: Duration::from_secs(1) };
        assert!(matches!(missing.run("o").await, Err(ReloadError::Start { .. })));
    }

    #[tokio::test]
    async fn a_signal_reaches_the_process_in_the_pid_file() {
        let tmp = tempfile::tempdir().unwrap();
        // USR1, not HUP: a test run under nohup starts the shell with SIGHUP
        // ignored, and a shell cannot trap a signal ignored on entry.
        let mark = tmp.path().join("got-usr1");
        let script = format!("trap 'touch {}; exit 0' USR1; while :; do sleep 0.05; done", mark.display());
        let mut child = std::process::Command::new("/bin/sh").arg("-c").arg(script).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let p = pid_file(tmp.path(), &child.id().to_string(), 0o644);
        let sent = Reload::Signal { signal: "USR1", pid_file: p }.run("o").await;
        if sent.is_err() {
            let _ = child.kill();
        }
        sent.unwrap();
        let status = child.wait().unwrap();
        assert!(status.success() && mark.exists(), "{status:?}");
    }
}
