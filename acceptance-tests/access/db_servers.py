"""Real database servers for the database-access tests, started by the tests on loopback:
PostgreSQL 15 (`hostssl all all 127.0.0.1/32 cert`) and MariaDB (`mariadbd`, its own
data directory, users with `REQUIRE SUBJECT`), both with a server certificate written by
`sigil db server-cert` and the Sigil database CA bundle as the CA that verifies clients.

A missing server binary fails the test with the install step; nothing is skipped."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sigil_harness import Postgres, free_port, stop_process

MARIADBD = Path(os.environ.get("SIGIL_MARIADBD", "/usr/sbin/mariadbd"))
HBA = "local all postgres trust\nhostssl all all 127.0.0.1/32 cert\n"


def server_cert(broker, identity: Path, names: str, dir: Path, owner: str | None):
    """`sigil db server-cert` into `dir` (owned by `owner` so the server can read its key)."""
    args = ["db", "server-cert", "--names", names, "--dir", str(dir)]
    if owner and os.geteuid() == 0:
        args += ["--owner", owner]
    broker.sigil(*args, identity=str(identity))


class TlsPostgres:
    """PostgreSQL whose only TCP rule is `hostssl all all 127.0.0.1/32 cert`: a client
    logs in as the role named by its certificate's CN, never with a password."""

    def __init__(self, broker, server_identity: Path):
        def configure(pg):
            tls = pg.dir / "tls"
            server_cert(broker, server_identity, "127.0.0.1,localhost", tls, "postgres")
            (pg.data / "pg_hba.conf").write_text(HBA)
            return (f"-c ssl=on -c ssl_cert_file={tls}/server.crt -c ssl_key_file={tls}/server.key "
                    f"-c ssl_ca_file={tls}/client-ca.pem")

        self.pg = Postgres(configure=configure)
        self.port = self.pg.port
        self.pg.psql("CREATE ROLE app LOGIN; CREATE ROLE other LOGIN; CREATE ROLE intruder LOGIN")

    def stop(self):
        self.pg.stop()


class MariaDb:
    """A throwaway MariaDB server: `mariadb-install-db` into a fresh directory, then
    `mariadbd --ssl-cert/--ssl-key/--ssl-ca` on 127.0.0.1 (run as `mysql` when root)."""

    def __init__(self, broker, server_identity: Path):
        for tool, path in (("mariadbd", MARIADBD), ("mariadb-install-db", shutil.which("mariadb-install-db")),
                           ("mariadb", shutil.which("mariadb"))):
            if not path or not Path(path).exists():
                pytest.fail(f"{tool} not found: install it with `apt-get install mariadb-server` (scripts/setup.sh does)")
        self.root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="sigil-mariadb-"))
        if self.root:
            shutil.chown(self.dir, "mysql", "mysql")
        user = ["--user=mysql"] if self.root else []
        data = self.dir / "data"
        p = subprocess.run(["mariadb-install-db", "--no-defaults", *user, f"--datadir={data}", "--auth-root-authentication-method=normal",
                            "--skip-test-db"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            pytest.fail(f"mariadb-install-db failed: {p.stdout}{p.stderr}")
        tls = self.dir / "tls"
        server_cert(broker, server_identity, "127.0.0.1,localhost", tls, "mysql")
        self.socket = self.dir / "mysqld.sock"
        self.log = self.dir / "error.log"
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [str(MARIADBD), "--no-defaults", *user, f"--datadir={data}", f"--socket={self.socket}", f"--port={self.port}",
                 "--bind-address=127.0.0.1", f"--pid-file={self.dir}/mysqld.pid", f"--log-error={self.log}",
                 f"--ssl-cert={tls}/server.crt", f"--ssl-key={tls}/server.key", f"--ssl-ca={tls}/client-ca.pem",
                 "--skip-name-resolve", "--innodb-buffer-pool-size=16M", "--performance-schema=OFF", "--max-connections=20"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            if self._wait():
                break
            stop_process(self.proc)
        else:
            pytest.fail(f"mariadbd did not start: {self.log.read_text(errors='replace')[-3000:]}")
        # The issuer as docs/access/databases.md says to read it (OpenSSL's one-line form).
        p = subprocess.run(["openssl", "x509", "-in", str(tls / "client-ca.pem"), "-noout", "-subject", "-nameopt", "compat"],
                           capture_output=True, text=True, timeout=30, check=True)
        self.issuer = p.stdout.strip().removeprefix("subject=")
        assert self.issuer.startswith("/O=Sigil/CN=Sigil database CA "), self.issuer
        self.sql("CREATE DATABASE appdb; CREATE USER app@'%' REQUIRE SUBJECT '/CN=app'; GRANT ALL ON appdb.* TO app@'%'; "
                 f"CREATE USER app_pinned@'%' REQUIRE SUBJECT '/CN=app' AND ISSUER '{self.issuer}'; GRANT ALL ON appdb.* TO app_pinned@'%'")

    def _wait(self, timeout: float = 60) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            p = subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", "root", "-e", "SELECT 1"],
                               capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            if p.returncode == 0:
                return True
            time.sleep(0.2)
        return False

    def sql(self, stmt: str) -> str:
        """Runs `stmt` as root over the server's Unix socket (in the server's private directory)."""
        p = subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", "root", "-N", "-B", "-e", stmt],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            pytest.fail(f"mariadb as root failed: {p.stderr}")
        return p.stdout

    def stop(self):
        stop_process(self.proc, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
