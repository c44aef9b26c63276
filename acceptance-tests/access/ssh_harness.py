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


_HOME: list[str] = []


def ssh_env() -> dict:
    """No agent, no user config: only what the command line and -F give (HOME is an
    empty directory, made once per test run)."""
    if not _HOME:
        _HOME.append(tempfile.mkdtemp(prefix="sigil-ssh-home-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
    env["HOME"] = _HOME[0]
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


# ---------------------------------------------------------------- broker side

RESOURCES = """
kind: role
name: ssh-login
allow:
  ssh:
    principals: [{principals}]
    max_ttl_seconds: 3600
---
kind: role
name: ssh-server
allow:
  ssh:
    host_names: ["127.0.0.1", "localhost"]
---
kind: bot
name: ci
roles: [ssh-login]
---
kind: bot
name: web1
roles: [ssh-server]
"""


def setup_broker(broker, tmp_path: Path, principals: list[str]) -> dict[str, str]:
    """Roles (`ssh-login` allows `principals`, `ssh-server` allows 127.0.0.1 and
    localhost as host names), bots `ci` and `web1`; returns a join token secret per bot."""
    f = tmp_path / "ssh-resources.yaml"
    f.write_text(RESOURCES.format(principals=", ".join(f'"{p}"' for p in principals)))
    broker.sigil("apply", "-f", str(f))
    return {bot: broker.sigil("token", "create", "--bot", bot, "--name", f"{bot}-{time.monotonic_ns()}", "--uses", "20").stdout.strip()
            for bot in ("ci", "web1")}


def join(broker, tmp_path: Path, token: str, name: str) -> str:
    """`sigil join`: an identity file for the `sigil ssh` one-shots."""
    path = tmp_path / f"{name}.identity"
    broker.sigil("join", "--token", token, "--ca-file", broker.ca, "--out", str(path))
    return str(path)


def agent_config(broker, tmp_path: Path, name: str, token: str, outputs: str) -> Path:
    """An agent config joining with `token`, state in tmp_path/NAME-state."""
    tok = tmp_path / f"{name}.token"
    tok.write_text(token)
    tok.chmod(0o600)
    cfg = tmp_path / f"{name}-agent.yaml"
    cfg.write_text(f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {tmp_path / (name + '-state')}\n"
                   f"join: {{method: token, token_file: {tok}}}\noutputs:\n{outputs}")
    return cfg


def agent_oneshot(sigil_bin: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sigil_bin, "agent", "--oneshot", "--config", str(config)], capture_output=True, text=True, timeout=120)


class Agent:
    """A long-running `sigil agent --config` process."""

    def __init__(self, sigil_bin: str, config: Path):
        self.log = config.with_suffix(".log")
        self.proc = subprocess.Popen([sigil_bin, "agent", "--config", str(config)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, env={**os.environ, "SIGIL_LOG": "info"})

    def wait_file(self, path: Path, timeout: float = 30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if path.exists():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited: {self.log.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"{path} not written: {self.log.read_text()}")

    def stop(self):
        stop_process(self.proc)


def host_output(broker, sigil_bin: str, tmp_path: Path, token: str, base: Path, extra: str = "") -> Path:
    """The `ssh-host` output written once by `sigil agent --oneshot` into BASE/host
    (BASE from `private_run_dir`: StrictModes-safe); returns that directory."""
    d = base / "host"
    cfg = agent_config(broker, tmp_path, "web1", token,
                       f"  - type: ssh-host\n    dir: {d}\n    names: [127.0.0.1, localhost]\n{extra}")
    p = agent_oneshot(sigil_bin, cfg)
    assert p.returncode == 0, p.stderr
    return d


def self_made_host(tmp: Path, other_ca: bool) -> tuple[Path, Path | None]:
    """A host key not certified by Sigil: plain, or certified by a CA we made (ssh-keygen)."""
    key = tmp / ("other_ca_host_key" if other_ca else "plain_host_key")
    keygen("-q", "-t", "ed25519", "-N", "", "-C", "self-made", "-f", str(key))
    if not other_ca:
        return key, None
    ca = tmp / "other_host_ca"
    keygen("-q", "-t", "ed25519", "-N", "", "-C", "other-ca", "-f", str(ca))
    keygen("-q", "-s", str(ca), "-h", "-I", "impostor", "-n", "127.0.0.1,localhost", "-V", "+1h", str(key) + ".pub")
    return key, Path(str(key) + "-cert.pub")
