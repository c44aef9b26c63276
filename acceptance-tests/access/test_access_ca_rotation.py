"""A database or kubernetes CA rotation reaches the agent's access outputs within a couple
of bundle polls (`bundle_refresh: 1s`), not at their half-life (the certificates here live
1 h): the agent reads the database and kubernetes CA bundles from GetTrustBundle.

- prepare: `ca.pem` (database output) and `kubernetes-ca.pem` (kubernetes output) carry the
  new CA beside the old one; the certificate and key stay as they are (only the CA file is
  rewritten);
- activate: each output gets a certificate from the new key, which verifies against the
  rewritten bundle (openssl verify) and not against the old CA alone;
- retire: the old CA is gone from both files.

A real PostgreSQL (`hostssl ... cert`) keeps accepting psql with the output's files across
every step, its `ssl_ca_file` refreshed by `sigil db server-cert` and a reload, as an
operator's timer does; a TLS endpoint with the rewritten kubernetes-ca.pem as client CA
(kube-apiserver's --client-ca-file) accepts kubectl with the new certificate.

Its own broker: the rotation must not change the CA other modules' servers trust."""
from __future__ import annotations

import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from db_servers import TlsPostgres, server_cert
from sigil_harness import Broker, free_port, require_tool

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from agent_harness import Agent, write_config  # noqa: E402
from kube_endpoint import KubeEndpoint, kubectl, make_ca  # noqa: E402

RESOURCES = """
kind: role
name: access
allow:
  database: {users: [app]}
  kubernetes: {users: [deployer], groups: [deployers]}
---
kind: role
name: db-server
allow:
  database: {server_names: ["127.0.0.1", localhost]}
---
kind: bot
name: app-bot
roles: [access]
---
kind: bot
name: db-host
roles: [db-server]
"""


@pytest.fixture(scope="module")
def rig(sigil_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("rotation-broker")
    b = Broker(sigil_bin, d / "data").start()
    (d / "resources.yaml").write_text(RESOURCES)
    b.sigil("apply", "-f", str(d / "resources.yaml"))
    host = d / "db-host.identity"
    tok = b.sigil("token", "create", "--bot", "db-host", "--name", "db-host", "--uses", "1").stdout.strip()
    b.sigil("join", "--token", tok, "--ca-file", b.ca, "--out", str(host))
    pg = TlsPostgres(b, host)
    yield b, pg, host, d
    pg.stop()
    b.stop()


def certs(p: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(p.read_bytes())


def served(broker: Broker, path: str) -> str:
    ctx = ssl.create_default_context(cafile=broker.ca)
    with urllib.request.urlopen(broker.url + path, context=ctx, timeout=10) as r:
        return r.read().decode()


def psql_ok(conninfo: str) -> None:
    """psql logs in as app (a few tries: a reload reaches new backends a moment later)."""
    exe = require_tool("psql", "apt-get install postgresql-client-15")
    for _ in range(20):
        p = subprocess.run([exe, conninfo, "-Atc", "SELECT current_user"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        if p.returncode == 0:
            assert p.stdout.strip() == "app", p.stdout
            return
        time.sleep(0.25)
    pytest.fail(f"psql refused: {p.stderr}")


def refresh_server_ca(broker: Broker, pg: TlsPostgres, host: Path) -> None:
    """What the database server's timer does: `sigil db server-cert` (its client-ca.pem is
    the database CA bundle the broker publishes now), then a reload."""
    server_cert(broker, host, "127.0.0.1,localhost", pg.pg.dir / "tls", "postgres")
    pg.pg.psql("SELECT pg_reload_conf()")


def openssl_verify(ca: Path, leaf: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(ca), str(leaf)],
                          capture_output=True, text=True, timeout=30)


def wait(cond, what: str, agent: Agent, timeout: float = 10) -> float:
    started = time.time()
    while not cond():
        if time.time() - started > timeout:
            pytest.fail(f"{what}: not within {timeout} s; agent log:\n{agent.log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.1)
    return time.time() - started


def test_a_database_and_kubernetes_ca_rotation_reaches_the_outputs_within_two_bundle_polls(rig, sigil_bin, tmp_path):
    broker, pg, host, _ = rig
    server_ca, ca_key, ca_cert = make_ca(tmp_path / "api-ca", "Test API server CA")
    port = free_port()
    db, kube = tmp_path / "db", tmp_path / "kube"
    tok = broker.sigil("token", "create", "--bot", "app-bot", "--name", "app-bot", "--uses", "1").stdout.strip()
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", tok,
                       "bundle_refresh: 1s\noutputs:\n"
                       f"  - type: database\n    dir: {db}\n    protocol: postgres\n    user: app\n    host: 127.0.0.1\n"
                       f"    port: {pg.port}\n    database: postgres\n    ttl: 1h\n"
                       f"  - type: kubernetes\n    dir: {kube}\n    server: https://127.0.0.1:{port}\n    cluster_ca_file: {server_ca}\n"
                       f"    user: deployer\n    groups: [deployers]\n    context_name: sigil\n    ttl: 1h\n")
    agent = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    try:
        wait(lambda: (db / "conninfo").exists() and (kube / "kubeconfig").exists(), "the outputs", agent, timeout=30)
        conninfo = (db / "conninfo").read_text().strip()
        psql_ok(conninfo)
        old_db, old_kube = certs(db / "ca.pem"), certs(kube / "kubernetes-ca.pem")
        assert len(old_db) == 1 and len(old_kube) == 1
        before = {p: p.read_bytes() for p in (db / "tls.crt", db / "tls.key", kube / "tls.crt", kube / "tls.key")}
        time.sleep(1.5)  # past the agent's first bundle poll

        # prepare: only the CA files change, within a couple of polls.
        broker.sigil("ca", "rotate", "--purpose", "database", "--phase", "prepare")
        broker.sigil("ca", "rotate", "--purpose", "kubernetes", "--phase", "prepare")
        took = wait(lambda: len(certs(db / "ca.pem")) == 2 and len(certs(kube / "kubernetes-ca.pem")) == 2,
                    "the new CA in ca.pem and kubernetes-ca.pem after prepare", agent)
        print(f"prepare reached ca.pem and kubernetes-ca.pem {took:.1f} s after the command")
        assert (db / "ca.pem").read_text() == served(broker, "/ca/database.pem")
        assert (kube / "kubernetes-ca.pem").read_text() == served(broker, "/ca/kubernetes.pem")
        assert {p: p.read_bytes() for p in before} == before, "prepare rewrites the CA files only, the certificates stay"
        new_db = [c for c in certs(db / "ca.pem") if c not in old_db]
        new_kube = [c for c in certs(kube / "kubernetes-ca.pem") if c not in old_kube]
        assert len(new_db) == 1 and len(new_kube) == 1 and old_db[0] in certs(db / "ca.pem")
        refresh_server_ca(broker, pg, host)  # the server trusts both keys before the new one signs
        psql_ok(conninfo)

        # activate: a certificate from the new key, which the rewritten bundle verifies.
        broker.sigil("ca", "rotate", "--purpose", "database", "--phase", "activate")
        broker.sigil("ca", "rotate", "--purpose", "kubernetes", "--phase", "activate")
        took = wait(lambda: (db / "tls.crt").read_bytes() != before[db / "tls.crt"] and (kube / "tls.crt").read_bytes() != before[kube / "tls.crt"],
                    "certificates from the new keys after activate", agent)
        print(f"activate re-issued both certificates {took:.1f} s after the command")
        for out, ca_file, new, old in ((db, "ca.pem", new_db[0], old_db[0]), (kube, "kubernetes-ca.pem", new_kube[0], old_kube[0])):
            leaf = certs(out / "tls.crt")[0]
            leaf.verify_directly_issued_by(new)
            only_old = tmp_path / f"{out.name}-old-ca.pem"
            only_old.write_bytes(old.public_bytes(Encoding.PEM))
            ok = openssl_verify(out / ca_file, out / "tls.crt")
            assert ok.returncode == 0, ok.stdout + ok.stderr
            assert openssl_verify(only_old, out / "tls.crt").returncode != 0, "signed by the new key, not the old one"
        psql_ok(conninfo)
        with KubeEndpoint(tmp_path / "endpoint", kube / "kubernetes-ca.pem", port=port, server_ca=(server_ca, ca_key, ca_cert)) as ep:
            p = kubectl(tmp_path, kube / "kubeconfig", "get", "--raw", "/version")
            assert p.returncode == 0, p.stderr
            assert ep.requests[-1]["user"] == "deployer"

        # retire: the old CA leaves both files.
        broker.sigil("ca", "rotate", "--purpose", "database", "--phase", "retire", "--force")
        broker.sigil("ca", "rotate", "--purpose", "kubernetes", "--phase", "retire", "--force")
        took = wait(lambda: certs(db / "ca.pem") == new_db and certs(kube / "kubernetes-ca.pem") == new_kube,
                    "only the new CA after retire", agent)
        print(f"retire reached both CA files {took:.1f} s after the command")
        refresh_server_ca(broker, pg, host)
        psql_ok(conninfo)
        assert "BEGIN PRIVATE KEY" not in agent.log.read_text(errors="replace")
    finally:
        agent.stop()
