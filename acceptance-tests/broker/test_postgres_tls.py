"""TLS from the broker (`sigil server --config`, `store: postgres://...`) and `sigil store migrate` to a real
PostgreSQL 15 (started here on loopback, user postgres) with `ssl=on`, a server certificate issued by a test CA
made here (Python's `cryptography`, an independent PKI), and a pg_hba.conf that refuses every connection
without TLS (`hostnossl ... reject`): plaintext to this server is impossible. docs/reference/server.md
("Store URL parameters") and docs/security.md (TLS to the database).

Shown: verify-full with sslrootcert starts, issues an SVID, stores its data over TLS (pg_stat_ssl) with
SCRAM-SHA-256-PLUS channel binding; a wrong CA, a name mismatch under verify-full, `require` against a server
without TLS, `disable` against the TLS-only server, and a remote host name without sslmode all fail at startup
with an error naming why; verify-ca accepts the chain whatever the name; a client certificate logs in
(`hostssl ... cert`); `sigil store migrate` goes through the same TLS; the password is never printed.
"""
import datetime
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sigil_harness import Broker, Postgres, free_port

PASSWORD = "pw-Hunter2-d41d8cd9"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, ca: bool, sans=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                                          encipher_only=False, decipher_only=False), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class Pki:
    """A test CA, a server certificate for 127.0.0.1/localhost, a client certificate for `certuser`, and an
    unrelated CA (the wrong one)."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert("sigil test db CA", self.ca_key, "sigil test db CA", self.ca_key, ca=True)
        other_key = ec.generate_private_key(ec.SECP256R1())
        self.server_key = ec.generate_private_key(ec.SECP256R1())
        self.server = _cert("db", self.server_key, "sigil test db CA", self.ca_key, ca=False,
                            sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _cert("certuser", client_key, "sigil test db CA", self.ca_key, ca=False)
        self.ca_file = self._write(out / "ca.pem", self.ca.public_bytes(serialization.Encoding.PEM))
        self.wrong_ca_file = self._write(out / "wrong-ca.pem", _cert("someone else", other_key, "someone else", other_key, ca=True)
                                         .public_bytes(serialization.Encoding.PEM))
        self.client_cert = self._write(out / "client.pem", client.public_bytes(serialization.Encoding.PEM))
        self.client_key = self._write(out / "client.key", _key_pem(client_key), 0o600)

    @staticmethod
    def _write(path: Path, data: bytes, mode=0o644) -> Path:
        path.write_bytes(data)
        path.chmod(mode)
        return path


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


HBA = """# Written by test_postgres_tls.py: the superuser over the Unix socket (test set-up only); over TCP only TLS.
local all postgres trust
hostssl all certuser 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 scram-sha-256
hostnossl all all 127.0.0.1/32 reject
"""


def tls_postgres(pki: Pki) -> Postgres:
    def configure(pg: Postgres) -> str:
        files = {"server.crt": (pki.server.public_bytes(serialization.Encoding.PEM), 0o644),
                 "server.key": (_key_pem(pki.server_key), 0o600),
                 "root.crt": (pki.ca.public_bytes(serialization.Encoding.PEM), 0o644),
                 "pg_hba.conf": (HBA.encode(), 0o600)}
        for name, (data, mode) in files.items():
            p = pg.data / name
            p.write_bytes(data)
            p.chmod(mode)
            if pg.root:
                shutil.chown(p, "postgres", "postgres")
        return "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_ca_file=root.crt"

    pg = Postgres(configure=configure)
    pg.psql(f"CREATE ROLE sigil LOGIN PASSWORD '{PASSWORD}'; CREATE ROLE certuser LOGIN")
    return pg


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def pg(pki):
    pg = tls_postgres(pki)
    yield pg
    pg.stop()


_dbs = iter(range(1000))


def database(pg: Postgres, owner: str = "sigil") -> str:
    name = f"tls{next(_dbs)}"
    pg.psql(f"CREATE DATABASE {name} OWNER {owner}")
    return name


def config(tmp_path: Path, store: str, name: str = "b") -> tuple[Path, Path, int]:
    port = free_port()
    seal = tmp_path / "seal.key"
    if not seal.exists():
        seal.write_text("3c" * 32)
        seal.chmod(0o600)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {tmp_path / name}\n"
                   f"seal_key_file: {seal}\nstore: \"{store}\"\n")
    cfg.chmod(0o600)
    return cfg, tmp_path / name, port


def start_refused(sigil_bin, tmp_path: Path, store: str) -> str:
    """Starts `sigil server` on `store`, which must fail: returns its stderr (never with the password)."""
    cfg, _, _ = config(tmp_path, store, name=f"refused{next(_dbs)}")
    p = subprocess.run([sigil_bin, "server", "--config", str(cfg)], capture_output=True, text=True, timeout=90)
    assert p.returncode != 0, f"the broker started on {store}: {p.stderr}"
    assert PASSWORD not in p.stderr + p.stdout
    return p.stderr


def url(pg: Postgres, db: str, query: str, user: str = "sigil", host: str = "127.0.0.1") -> str:
    auth = f"{user}:{PASSWORD}" if user == "sigil" else user
    return f"postgres://{auth}@{host}:{pg.port}/{db}?{query}"


def broker_tls_sessions(pg: Postgres, db: str) -> list[str]:
    """`ssl|version|client_dn` of every broker connection to `db`, from PostgreSQL's own view."""
    rows = pg.psql("SELECT s.ssl, coalesce(s.version, ''), coalesce(s.client_dn, '') FROM pg_stat_ssl s "
                   f"JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{db}' AND a.application_name = 'sigil-broker'")
    return [r for r in rows.splitlines() if r]


def test_verify_full_broker_issues_an_svid_over_tls_with_channel_binding(sigil_bin, tmp_path, pg, pki):
    db = database(pg)
    # channel_binding=require: the login must be SCRAM-SHA-256-PLUS bound to this TLS session's server certificate.
    store = url(pg, db, f"sslmode=verify-full&sslrootcert={pki.ca_file}&channel_binding=require")
    cfg, data, port = config(tmp_path, store)
    b = Broker(sigil_bin, data, port=port, config=cfg).start()
    try:
        out = tmp_path / "svid"
        out.mkdir()
        b.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/over-tls", "--out", str(out))
        svid = x509.load_pem_x509_certificate((out / "svid.pem").read_bytes())
        assert svid.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://sigil.local/over-tls"]
        audited = pg.psql("SELECT count(*) FROM audit_events WHERE kind LIKE 'svid%'", db=db).strip()
        assert int(audited) >= 1, "the SVID's audit event is not in the PostgreSQL store"
        sessions = broker_tls_sessions(pg, db)
        assert sessions, "no broker connection in pg_stat_activity"
        assert all(s.startswith("t|TLSv1.") for s in sessions), sessions
    finally:
        b.stop()
    assert PASSWORD not in b.log.read_text()


def test_a_wrong_ca_is_a_startup_error_naming_verification(sigil_bin, tmp_path, pg, pki):
    err = start_refused(sigil_bin, tmp_path, url(pg, database(pg), f"sslmode=verify-full&sslrootcert={pki.wrong_ca_file}"))
    assert "certificate failed verification" in err and "sslmode=verify-full" in err and "UnknownIssuer" in err, err


def test_a_name_mismatch_is_refused_by_verify_full_and_accepted_by_verify_ca(sigil_bin, tmp_path, pg, pki):
    # The server's certificate names 127.0.0.1 and localhost; the URL names db.example (reached at 127.0.0.1).
    db = database(pg)
    err = start_refused(sigil_bin, tmp_path, url(pg, db, f"hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={pki.ca_file}",
                                                 host="db.example"))
    assert "certificate failed verification" in err and 'not valid for name "db.example"' in err, err
    store = url(pg, db, f"hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={pki.ca_file}", host="db.example")
    cfg, data, port = config(tmp_path, store, name="verify-ca")
    Broker(sigil_bin, data, port=port, config=cfg).start().stop()


def test_sslmode_disable_against_a_tls_only_server_is_refused_with_a_clear_error(sigil_bin, tmp_path, pg):
    err = start_refused(sigil_bin, tmp_path, url(pg, database(pg), "sslmode=disable"))
    assert "no encryption" in err and "accepts only TLS" in err, err


def test_a_client_certificate_logs_in_with_hostssl_cert(sigil_bin, tmp_path, pg, pki):
    db = database(pg, owner="certuser")
    store = url(pg, db, f"sslmode=verify-full&sslrootcert={pki.ca_file}&sslcert={pki.client_cert}&sslkey={pki.client_key}",
                user="certuser")
    cfg, data, port = config(tmp_path, store)
    b = Broker(sigil_bin, data, port=port, config=cfg).start()
    try:
        b.sigil("svid", "jwt", "--spiffe-id", "spiffe://sigil.local/cert-auth", "--audience", "a")
        sessions = broker_tls_sessions(pg, db)
        assert sessions and all(s.startswith("t|") and s.endswith("|/CN=certuser") for s in sessions), sessions
    finally:
        b.stop()
    # Without the client certificate the `cert` line refuses the login.
    err = start_refused(sigil_bin, tmp_path, url(pg, database(pg, owner="certuser"), f"sslmode=verify-full&sslrootcert={pki.ca_file}",
                                                 user="certuser"))
    assert "certificate" in err, err


def test_store_migrate_connects_through_the_same_tls(sigil_bin, tmp_path, pg, pki):
    source = Broker(sigil_bin, tmp_path / "sqlite").start()
    source.stop()
    db = database(pg)
    bad = subprocess.run([sigil_bin, "store", "migrate", "--from", f"sqlite:{tmp_path / 'sqlite'}",
                          "--to", url(pg, db, f"sslmode=verify-full&sslrootcert={pki.wrong_ca_file}")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "certificate failed verification" in bad.stderr, bad.stderr
    good = subprocess.run([sigil_bin, "store", "migrate", "--from", f"sqlite:{tmp_path / 'sqlite'}",
                           "--to", url(pg, db, f"sslmode=verify-full&sslrootcert={pki.ca_file}")],
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    assert "verified" in good.stdout
    for p in (bad, good):
        assert PASSWORD not in p.stdout + p.stderr


def test_require_and_the_remote_default_refuse_a_server_without_tls(sigil_bin, tmp_path):
    plain = Postgres()
    try:
        err = start_refused(sigil_bin, tmp_path, f"postgres://postgres@127.0.0.1:{plain.port}/postgres?sslmode=require")
        assert "server does not support TLS" in err, err
        # No sslmode and a host name that is not loopback: verify-full by default, never plaintext.
        err = start_refused(sigil_bin, tmp_path, f"postgres://postgres@db.example:{plain.port}/postgres?hostaddr=127.0.0.1")
        assert "server does not support TLS" in err, err
        # The loopback default (prefer) still reaches it in plaintext.
        cfg, data, port = config(tmp_path, plain.url, name="loopback")
        Broker(sigil_bin, data, port=port, config=cfg).start().stop()
    finally:
        plain.stop()
