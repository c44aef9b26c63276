"""Shared test harness: the `sigil` binary, a dev-mode broker process, peer lookup.

Imported by tests as `from sigil_harness import ...` (a unique name, so it never
collides with the per-directory conftest modules).
"""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def require_tool(name: str, install: str) -> str:
    path = shutil.which(name) or (str(ROOT / ".venv" / "bin" / name) if (ROOT / ".venv" / "bin" / name).exists() else None)
    if not path:
        pytest.fail(f"{name} not found: {install} (scripts/setup.sh installs it)")
    return path


def sigil_binary() -> str:
    path = Path(os.environ.get("SIGIL_BIN", ROOT / "target" / "debug" / "sigil"))
    if not path.exists():
        pytest.fail(f"{path} missing: run `cargo build -p sigil -p sigil-agent` first (scripts/test.sh does)")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What the broker answers to every refused Join/BeginJoin (the reason goes to the audit log only).
JOIN_REFUSED = "join refused: the join token does not accept this credential (the broker's audit log has the reason)"


class Broker:
    """A `sigil server --dev` process."""

    def __init__(self, sigil_bin: str, data_dir: Path, port: int | None = None, config: Path | None = None, env: dict | None = None,
                 preexec_fn=None):
        self.bin = sigil_bin
        self.preexec_fn = preexec_fn  # e.g. lower RLIMIT_NOFILE for the broker process only
        self.config = config
        self.extra_env = env or {}
        self.data_dir = data_dir
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"https://{self.addr}"
        self.proc = None
        self.log = data_dir.parent / f"broker-{self.port}.log"

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")
        if self.config:
            args = [self.bin, "server", "--config", str(self.config)]
        else:
            args = [self.bin, "server", "--dev", "--data-dir", str(self.data_dir), "--listen", self.addr]
        self.proc = subprocess.Popen(args, stdout=logf, stderr=logf, env={**os.environ, **self.extra_env}, preexec_fn=self.preexec_fn)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    if (self.data_dir / "admin.identity").exists():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"broker did not start: {self.log.read_text()}")

    def stop(self):
        stop_process(self.proc)

    @property
    def ca(self) -> str:
        return str(self.data_dir / "tls-ca.pem")

    def env(self, identity: str | None = None) -> dict:
        e = dict(os.environ)
        e["SIGIL_ADDR"] = self.addr
        e["SIGIL_IDENTITY"] = identity or str(self.data_dir / "admin.identity")
        return e

    def sigil(self, *args, identity=None, check=True, input=None) -> subprocess.CompletedProcess:
        p = subprocess.run([self.bin, *args], env=self.env(identity), capture_output=True, text=True, input=input, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"sigil {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p

    def sigil_json(self, *args, **kw):
        return json.loads(self.sigil("--output", "json", *args, **kw).stdout)

    def last_join_denial(self) -> str:
        """The reason audited for the last refused Join/BeginJoin: callers only get JOIN_REFUSED."""
        after, reason = 0, None
        while True:
            page = self.sigil_json("audit", "--after", str(after), "--limit", "1000")
            if not page:
                break
            after = page[-1]["id"]
            for e in page:
                if e["kind"] in ("join", "join.begin") and e["outcome"] == "denied":
                    reason = e["detail"].get("reason", "")
        assert reason is not None, "no refused join in the audit log"
        return reason




def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30):
    """Waits until `proc` listens on loopback `port`; fails the test if it exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port}")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10):
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_kb(pid: int) -> int:
    """Resident set size of process `pid` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def limit_fds(n: int):
    """A preexec_fn limiting the child to `n` open files."""
    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


def send_head_slowly(s: socket.socket, first_line: bytes, within: float = 15) -> tuple[bool, float]:
    """Sends `first_line`, then one more header line each time the server stays silent for the
    socket's timeout, for at most `within` seconds. Returns whether the server closed the
    connection, and after how many seconds."""
    s.sendall(first_line)
    started = time.monotonic()
    closed = False
    while not closed and time.monotonic() - started < within:
        try:
            closed = s.recv(4096) == b""
        except TimeoutError:
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
        except OSError:
            closed = True
    return closed, time.monotonic() - started


def start_moto():
    """moto's server on loopback with signature checking on (after 2 unauthenticated set-up calls)."""
    server = require_tool("moto_server", "pip install 'moto[server]'")
    port = free_port()
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "moto_server")
    return f"http://127.0.0.1:{port}", proc


def moto_iam_user(moto: str, name: str):
    """Creates an IAM user in moto; returns its access key and what STS says about it."""
    import boto3
    kw = dict(endpoint_url=moto, region_name="us-east-1")
    iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **kw)
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    me = boto3.client("sts", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], **kw).get_caller_identity()
    return key, me


def iam_join_resources(moto: str) -> str:
    """Role `aws` (SPIFFE IDs named after the AWS caller), bot `ci`, and an `iam` join token `aws-ci` for ci-* users."""
    return f"""
kind: role
name: aws
allow: {{spiffe_ids: ["/aws/{{{{join.aws_account}}}}/{{{{join.aws_user_id}}}}"], audiences: ["x"]}}
---
kind: bot
name: ci
roles: [aws]
---
kind: join_token
name: aws-ci
bot: ci
method: iam
max_uses: 10
expires_at: {int(time.time()) + 600}
allow: [{{aws_arn: "arn:aws:iam::123456789012:user/ci-*"}}]
config: {{sts_endpoints: "{moto}"}}
"""


PG_BIN = Path(os.environ.get("SIGIL_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Postgres:
    """A throwaway PostgreSQL 15 cluster on loopback (trust auth, loopback only), run as user
    `postgres` when the tests run as root, as broker/src/store/pg_harness.rs does for the Rust tests.

    `configure(pg)`, if given, runs after initdb (pg.data exists, the server is not started) and returns extra
    server options (e.g. `-c ssl=on ...`); test_postgres_tls.py writes certificates and pg_hba.conf with it."""

    def __init__(self, configure=None):
        for b in ("initdb", "pg_ctl", "postgres"):
            if not (PG_BIN / b).exists():
                pytest.fail(f"PostgreSQL 15 server binary {PG_BIN / b} not found: install it with "
                            "`apt-get install postgresql-15` (scripts/setup.sh does), or point SIGIL_PG_BIN at its bin directory")
        self.root = os.geteuid() == 0
        # Directly under /tmp (pytest's tmp_path is 0700 root): owned by postgres.
        self.dir = Path(tempfile.mkdtemp(prefix="sigil-pg-"))
        if self.root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
        extra = configure(self) if configure else ""
        self.port = None
        for _ in range(5):
            port = free_port()
            p = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start", "-o",
                          f"-c listen_addresses=127.0.0.1 -p {port} -k {self.dir} -c max_connections=300 {extra}", check=False)
            if p.returncode == 0:
                self.port = port
                break
        if self.port is None:
            pytest.fail(f"PostgreSQL did not start: {(self.dir / 'log').read_text(errors='replace')}")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args, check=True):
        cmd = [str(PG_BIN / tool), *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            pytest.fail(f"{tool} failed: {p.stdout}{p.stderr}")
        return p

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Runs `sql` as the superuser over the cluster's Unix socket; returns unaligned rows."""
        return self._run("psql", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-d", db,
                         "-v", "ON_ERROR_STOP=1", "-At", "-c", sql).stdout

    def stop(self):
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
