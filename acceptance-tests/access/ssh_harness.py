"""A real OpenSSH server (Debian `openssh-server`) on loopback for the SSH-access tests,
and throwaway Unix users to log in as.

Each `Sshd` runs `/usr/sbin/sshd -D -e -f CONFIG` with its own config in a private
directory: `UsePAM no` (no PAM stack needed; then sshd itself refuses a locked account,
so test users get the password `*`, which matches nothing), no password or keyboard
login, no authorized_keys (`AuthorizedKeysFile none`): a certificate is the only way in.
The host key, host certificate and `TrustedUserCAKeys` come from the `ssh-host` output
(`Include DIR/sshd_config.snippet`), or a plain self-made host key for the
"unknown host" cases. `StrictModes` stays on (the default): sshd opens
`AuthorizedPrincipalsFile` as the user logging in and checks every directory above it,
so the directories these tests use live under `/run` (root-owned, 0755), never under a
world-writable `/tmp`.

sshd needs `/run/sshd` (its privilege-separation directory): created if missing. A
missing sshd, ssh or useradd fails the test with the install step; nothing is skipped.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sigil_harness import free_port, stop_process, wait_port

SSHD = Path(os.environ.get("SIGIL_SSHD", "/usr/sbin/sshd"))


def require_openssh():
    if not SSHD.exists():
        pytest.fail(f"{SSHD} not found: install it with `apt-get install openssh-server` (scripts/setup.sh does)")
    for tool in ("ssh", "ssh-keygen"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: install it with `apt-get install openssh-client`")


def private_run_dir(prefix: str) -> Path:
    """A fresh 0755 root-owned directory under /run (or /var/lib): every directory above
    it is root-owned and not group/world-writable, as sshd's StrictModes wants."""
    for base in ("/run", "/var/lib"):
        if os.path.isdir(base) and os.access(base, os.W_OK):
            d = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
            d.chmod(0o755)
            return d
    pytest.fail("neither /run nor /var/lib is writable: the SSH tests run as root (CI does)")


class UnixUser:
    """`useradd -m` with a shell and the non-matching password `*` (so `UsePAM no` sshd
    does not treat it as locked); `userdel -r` at the end."""

    def __init__(self, tag: str):
        if os.geteuid() != 0:
            pytest.fail("the SSH tests create Unix users: run them as root (CI does)")
        if not shutil.which("useradd"):
            pytest.fail("useradd not found: install it with `apt-get install passwd`")
        self.name = f"sgl{tag}{secrets.token_hex(3)}"[:32]
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-p", "*", self.name], check=True, capture_output=True)
        self.home = Path(f"/home/{self.name}")

    def remove(self):
        subprocess.run(["userdel", "-r", "-f", self.name], capture_output=True)


class Sshd:
    """One sshd on 127.0.0.1:PORT. `include` is an `sshd_config.snippet`; or give
    `host_key` (and optionally `host_cert`, `user_ca`) directly."""

    def __init__(self, include: Path | None = None, host_key: Path | None = None, host_cert: Path | None = None,
                 user_ca: Path | None = None, extra: str = ""):
        require_openssh()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.dir = private_run_dir("sigil-sshd-")
        self.port = free_port()
        self.log = self.dir / "sshd.log"
        lines = [f"Port {self.port}", "ListenAddress 127.0.0.1", f"PidFile {self.dir}/sshd.pid",
                 "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "PermitRootLogin no", "AuthorizedKeysFile none", "LogLevel VERBOSE",
                 "Subsystem sftp internal-sftp"]
        if include:
            lines.append(f"Include {include}")
        if host_key:
            lines.append(f"HostKey {host_key}")
        if host_cert:
            lines.append(f"HostCertificate {host_cert}")
        if user_ca:
            lines.append(f"TrustedUserCAKeys {user_ca}")
        self.config = self.dir / "sshd_config"
        self.config.write_text("\n".join(lines) + "\n" + extra)
        check = subprocess.run([str(SSHD), "-t", "-f", str(self.config)], capture_output=True, text=True)
        assert check.returncode == 0, f"sshd -t refused the config: {check.stderr}\n{self.config.read_text()}"
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "sshd")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 10) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log_text()
            if needle in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"sshd log has no {needle!r}:\n{self.log_text()}")

    def stop(self):
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def ssh_env() -> dict:
    """No agent, no user config: only what the command line and -F give."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
    env["HOME"] = tempfile.mkdtemp(prefix="sigil-ssh-home-")
    return env


def ssh(config: Path | str, login: str, port: int, command: str = "id -un", *extra: str,
        host: str = "127.0.0.1") -> subprocess.CompletedProcess:
    """`ssh -F CONFIG -p PORT LOGIN@HOST COMMAND`, nothing read from stdin."""
    return subprocess.run(["ssh", "-F", str(config), "-p", str(port), *extra, f"{login}@{host}", command],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=ssh_env())


def keygen(*args: str) -> str:
    p = subprocess.run(["ssh-keygen", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"ssh-keygen {args}: {p.stderr}"
    return p.stdout


def cert_info(cert: Path) -> str:
    """`ssh-keygen -L`: the certificate as OpenSSH reads it."""
    return keygen("-L", "-f", str(cert))
