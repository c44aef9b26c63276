"""Database access with Sigil certificates, against real servers started here on loopback
(db_servers.py): PostgreSQL 15 with `hostssl all all 127.0.0.1/32 cert` and MariaDB with
`REQUIRE SUBJECT '/CN=app'`, each with a server certificate from `sigil db server-cert` and
the Sigil database CA as the CA that verifies clients.

- PostgreSQL: the real agent's `database` output (renewed at half-life) logs in with `psql`
  through the generated conninfo and pg_service.conf (sslmode=verify-full); the same
  certificate cannot log in as another role, the broker refuses a certificate for a user
  the role does not allow, and a certificate from another CA is refused.
- MariaDB: `sigil db cert` writes my.cnf; the `mariadb` client logs in with it; a Sigil
  certificate for another subject and a certificate from another CA are refused.

Each server is started once per module."""
from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from db_servers import MariaDb, TlsPostgres
from sigil_harness import Broker, require_tool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from agent_harness import Agent, write_config  # noqa: E402

RESOURCES = """
kind: role
name: db-app
allow:
  database: {users: [app]}
---
kind: role
name: db-intruder
allow:
  database: {users: [intruder]}
---
kind: role
name: db-server
allow:
  database: {server_names: ["127.0.0.1", localhost]}
---
kind: bot
name: app-bot
roles: [db-app]
---
kind: bot
name: intruder-bot
roles: [db-intruder]
---
kind: bot
name: db-host
roles: [db-server]
"""


class Env:
    """The broker and one joined identity per bot."""

    def __init__(self, broker: Broker, dir: Path):
        self.broker, self.dir = broker, dir

    def token(self, bot: str) -> str:
        return self.broker.sigil("token", "create", "--bot", bot, "--name", f"{bot}-{time.monotonic_ns()}", "--uses", "5").stdout.strip()

    def identity(self, bot: str) -> Path:
        out = self.dir / f"{bot}.identity"
        if not out.exists():
            self.broker.sigil("join", "--token", self.token(bot), "--ca-file", self.broker.ca, "--out", str(out))
        return out


@pytest.fixture(scope="module")
def env(sigil_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("db-broker")
    b = Broker(sigil_bin, d / "data").start()
    (d / "resources.yaml").write_text(RESOURCES)
    b.sigil("apply", "-f", str(d / "resources.yaml"))
    yield Env(b, d)
    b.stop()


@pytest.fixture(scope="module")
def pg(env):
    s = TlsPostgres(env.broker, env.identity("db-host"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def mariadb(env):
    s = MariaDb(env.broker, env.identity("db-host"))
    yield s
    s.stop()


def psql(conninfo: str, sql: str = "SELECT current_user", env: dict | None = None) -> subprocess.CompletedProcess:
    exe = require_tool("psql", "apt-get install postgresql-client-15")
    return subprocess.run([exe, conninfo, "-Atc", sql], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def mariadb_client(*args: str) -> subprocess.CompletedProcess:
    exe = require_tool("mariadb", "apt-get install mariadb-client")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def foreign_cert(dir: Path, cn: str, like: Path) -> tuple[Path, Path]:
    """A client certificate CN=`cn` from a CA the servers do not trust, named exactly as the Sigil CA in `like`
    (so only the signature tells them apart). Also writes that CA as foreign-ca.pem."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.load_pem_x509_certificates(like.read_bytes())[0].subject
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    dir.mkdir(parents=True, exist_ok=True)
    crt, k = dir / "foreign.crt", dir / "foreign.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(hours=1)).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (dir / "foreign-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    k.chmod(0o600)
    return crt, k


def check_files(dir: Path, user: str):
    cert = x509.load_pem_x509_certificate((dir / "tls.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == user
    assert (dir / "tls.key").read_text().startswith("-----BEGIN PRIVATE KEY-----"), "tls.key is PKCS#8"
    assert (dir / "tls.key").stat().st_mode & 0o777 == 0o600
    assert x509.load_pem_x509_certificates((dir / "ca.pem").read_bytes())


# ------------------------------------------------------------------ PostgreSQL, real agent

@pytest.fixture(scope="module")
def pg_agent(env, pg, sigil_bin, tmp_path_factory):
    """The real agent with a `database` output for user app (6 s certificates: renewed at 3 s)."""
    d = tmp_path_factory.mktemp("pg-agent")
    out = d / "db"
    cfg = write_config(d / "agent.yaml", env.broker, d / "state", env.token("app-bot"),
                       f"outputs:\n  - type: database\n    dir: {out}\n    protocol: postgres\n    user: app\n"
                       f"    host: 127.0.0.1\n    port: {pg.port}\n    database: postgres\n    ttl: 6s\n")
    agent = Agent(sigil_bin, cfg, d / "agent.log").start()
    agent.wait_for(lambda: (out / "conninfo").exists(), "the database output")
    yield agent, out
    agent.stop()


def test_postgres_accepts_the_agent_database_output_for_the_allowed_user(pg_agent):
    agent, out = pg_agent
    check_files(out, "app")
    conninfo = (out / "conninfo").read_text().strip()
    assert "sslmode='verify-full'" in conninfo and f"sslrootcert='{out}/ca.pem'" in conninfo, conninfo
    p = psql(conninfo, "SELECT current_user || ' ' || ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert p.returncode == 0 and p.stdout.strip() == "app true", p.stderr
    # The service file says the same; psql reads it through PGSERVICEFILE.
    p = psql("service=sigil", env={"PGSERVICEFILE": str(out / "pg_service.conf")})
    assert p.returncode == 0 and p.stdout.strip() == "app", p.stderr


def test_the_agent_renews_the_database_certificate_at_half_life(pg_agent):
    agent, out = pg_agent
    first = (out / "tls.crt").read_bytes()
    agent.wait_for(lambda: (out / "tls.crt").read_bytes() != first, "a renewed certificate", timeout=20)
    p = psql((out / "conninfo").read_text().strip())
    assert p.returncode == 0 and p.stdout.strip() == "app", p.stderr


def test_a_postgres_certificate_for_one_user_cannot_log_in_as_another_role(pg_agent):
    agent, out = pg_agent
    p = psql((out / "conninfo").read_text().strip() + " user=other")
    assert p.returncode != 0 and 'certificate authentication failed for user "other"' in p.stderr, p.stderr


def test_the_broker_refuses_a_database_certificate_for_a_user_the_role_does_not_allow(env, tmp_path):
    p = env.broker.sigil("db", "cert", "--protocol", "postgres", "--user", "other", "--host", "127.0.0.1",
                         "--dir", str(tmp_path / "db"), identity=str(env.identity("app-bot")), check=False)
    assert p.returncode != 0 and ("PermissionDenied" in p.stderr.replace(" ", "") or "not allowed" in p.stderr), p.stderr
    assert not (tmp_path / "db" / "tls.crt").exists()


def test_postgres_refuses_a_client_certificate_from_another_ca(pg_agent, tmp_path):
    agent, out = pg_agent
    crt, key = foreign_cert(tmp_path, "app", out / "ca.pem")
    conninfo = (out / "conninfo").read_text().strip() + f" sslcert='{crt}' sslkey='{key}'"
    p = psql(conninfo)
    assert p.returncode != 0 and "SSL error" in p.stderr, (p.stdout, p.stderr)


def test_the_postgres_client_refuses_a_server_whose_certificate_does_not_name_the_host(pg_agent):
    agent, out = pg_agent
    # Connect to the same server under a name its certificate does not carry (hostaddr keeps the address).
    p = psql((out / "conninfo").read_text().strip() + " host=db.elsewhere.example hostaddr=127.0.0.1")
    assert p.returncode != 0 and "does not match host name" in p.stderr, p.stderr


def test_server_ca_file_replaces_the_database_ca_and_psql_then_refuses_the_sigil_server(env, pg, tmp_path):
    foreign_cert(tmp_path / "foreign", "app", pg.pg.dir / "tls" / "client-ca.pem")
    ca = tmp_path / "foreign" / "foreign-ca.pem"
    env.broker.sigil("db", "cert", "--protocol", "postgres", "--user", "app", "--host", "127.0.0.1", "--port", str(pg.port),
                     "--database", "postgres", "--server-ca-file", str(ca), "--dir", str(tmp_path / "db"),
                     identity=str(env.identity("app-bot")))
    assert (tmp_path / "db" / "ca.pem").read_bytes() == ca.read_bytes()
    p = psql((tmp_path / "db" / "conninfo").read_text().strip())
    # Same CA name, other key: OpenSSL reports the failed signature ("EVP lib") or "certificate verify failed".
    assert p.returncode != 0 and "SSL error" in p.stderr, p.stderr


# ------------------------------------------------------------------ MariaDB, sigil db cert

def db_cert(env, bot: str, user: str, port: int, dir: Path) -> Path:
    env.broker.sigil("db", "cert", "--protocol", "mysql", "--user", user, "--host", "127.0.0.1", "--port", str(port),
                     "--database", "appdb", "--dir", str(dir), identity=str(env.identity(bot)))
    return dir / "my.cnf"


def test_mariadb_accepts_sigil_db_cert_through_the_generated_my_cnf(env, mariadb, tmp_path):
    cnf = db_cert(env, "app-bot", "app", mariadb.port, tmp_path / "db")
    check_files(tmp_path / "db", "app")
    p = mariadb_client(f"--defaults-file={cnf}", "-N", "-B", "-e",
                       "SELECT CONCAT(current_user(), ' ', database()); SHOW STATUS LIKE 'Ssl_version'")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "app@% appdb" and lines[1].startswith("Ssl_version\tTLSv1."), p.stdout
    # A user that also pins the issuer (REQUIRE SUBJECT ... AND ISSUER, as the guide shows) accepts it too.
    p = mariadb_client(f"--defaults-file={cnf}", "--user=app_pinned", "-N", "-B", "-e", "SELECT current_user()")
    assert p.returncode == 0 and p.stdout.strip() == "app_pinned@%", (p.stdout, p.stderr)


def test_mariadb_refuses_a_sigil_certificate_for_another_subject(env, mariadb, tmp_path):
    cnf = db_cert(env, "intruder-bot", "intruder", mariadb.port, tmp_path / "db")
    p = mariadb_client(f"--defaults-file={cnf}", "--user=app", "-e", "SELECT current_user()")
    assert p.returncode != 0 and "Access denied for user 'app'" in p.stderr, (p.stdout, p.stderr)


def test_mariadb_refuses_a_certificate_from_another_ca(env, mariadb, tmp_path):
    cnf = db_cert(env, "app-bot", "app", mariadb.port, tmp_path / "db")
    crt, key = foreign_cert(tmp_path / "foreign", "app", tmp_path / "db" / "ca.pem")
    p = mariadb_client(f"--defaults-file={cnf}", f"--ssl-cert={crt}", f"--ssl-key={key}", "-e", "SELECT current_user()")
    # TLS 1.3: the server's alert may arrive as the alert or as a reset of the connection.
    refused = "TLS/SSL error" in p.stderr or "Lost connection" in p.stderr
    assert p.returncode != 0 and refused and "app@" not in p.stdout, (p.stdout, p.stderr)


def test_the_mariadb_client_refuses_a_server_whose_certificate_is_not_from_ca_pem(env, mariadb, tmp_path):
    cnf = db_cert(env, "app-bot", "app", mariadb.port, tmp_path / "db")
    foreign_cert(tmp_path / "foreign", "app", tmp_path / "db" / "ca.pem")
    p = mariadb_client(f"--defaults-file={cnf}", f"--ssl-ca={tmp_path / 'foreign' / 'foreign-ca.pem'}", "-e", "SELECT current_user()")
    assert p.returncode != 0 and "TLS/SSL error" in p.stderr and "app@" not in p.stdout, (p.stdout, p.stderr)


def test_the_example_demo_logs_in_with_psql_and_is_refused_as_another_role(sigil_bin):
    demo = Path(__file__).resolve().parents[2] / "examples" / "access" / "databases" / "demo.sh"
    p = subprocess.run(["bash", str(demo)], capture_output=True, text=True, timeout=180, env={**os.environ, "SIGIL": sigil_bin},
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "logged in as orders_app" in p.stdout and 'certificate authentication failed for user "postgres"' in p.stdout, p.stdout

