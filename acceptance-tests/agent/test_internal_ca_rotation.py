"""A full rotation of the internal CA (bot identities + the broker's serving
certificate) while a real agent keeps renewing and `sigil` admin commands keep
working, with no restart: prepare -> activate -> retire (--force: the bound
counts the longest bot identity the broker could have issued).

After activate, new connections get a serving certificate from the new CA;
after retire, an identity signed by the old CA is refused."""
from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent_harness import Agent, setup_broker, write_config
from sigil_harness import Broker


def certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def ski(ca: x509.Certificate) -> bytes:
    return ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def aki(leaf: x509.Certificate) -> bytes:
    return leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def serving_leaf(broker, cafile: Path) -> x509.Certificate:
    """The certificate a new TLS connection to the broker is served (verified with `cafile`)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def identity_cert(path: Path) -> x509.Certificate:
    return certs(path)[0]


def identity_cas(path: Path) -> list[x509.Certificate]:
    return certs(path)[1:]


def rotate(broker, phase: str, *extra: str):
    broker.sigil("ca", "rotate", "--purpose", "internal", "--phase", phase, *extra)


def wait_until(cond, what: str, timeout: float = 20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - not yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_internal_ca_rotation_keeps_agents_and_the_admin_cli_working_and_retires_the_old_ca(sigil_bin, tmp_path):
    broker = Broker(sigil_bin, tmp_path / "data").start()
    agent = None
    try:
        data = broker.data_dir
        token = setup_broker(broker, tmp_path)
        state = tmp_path / "state"
        cfg = write_config(tmp_path / "agent.yaml", broker, state, token, "identity_ttl: 6s\nretry: {initial: 200ms, max: 1s}\n")
        agent = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
        ident = state / "identity"
        agent.wait_for(ident.exists, "the agent's first bot identity")
        (old_ca,) = certs(data / "tls-ca.pem")
        assert aki(serving_leaf(broker, data / "tls-ca.pem")) == ski(old_ca)

        # prepare: the new CA is published (files, identity responses); nothing it signs yet.
        rotate(broker, "prepare")
        wait_until(lambda: len(certs(data / "tls-ca.pem")) == 2, "tls-ca.pem with both internal CAs")
        (new_ca,) = [c for c in certs(data / "tls-ca.pem") if ski(c) != ski(old_ca)]
        wait_until(lambda: len(identity_cas(data / "admin.identity")) == 2, "the admin identity trusting both internal CAs")
        agent.wait_for(lambda: len(identity_cas(ident)) == 2, "a renewal carrying both internal CAs")
        assert aki(serving_leaf(broker, data / "tls-ca.pem")) == ski(old_ca), "prepare must not change the serving certificate"
        broker.sigil("bot", "list")

        # Keep an identity signed by the old CA for later (a stolen one, say).
        old_admin = tmp_path / "old-admin.identity"
        old_admin.write_bytes((data / "admin.identity").read_bytes())
        old_admin.chmod(0o600)
        assert aki(identity_cert(old_admin)) == ski(old_ca)

        # activate: new connections are served a certificate from the new CA.
        rotate(broker, "activate")
        new_only = tmp_path / "new-ca.pem"
        new_only.write_bytes(new_ca.public_bytes(Encoding.PEM))
        wait_until(lambda: aki(serving_leaf(broker, new_only)) == ski(new_ca), "a serving certificate from the new internal CA", timeout=10)
        wait_until(lambda: aki(identity_cert(data / "admin.identity")) == ski(new_ca), "the admin identity reissued by the new CA", timeout=10)
        broker.sigil("bot", "list")
        agent.wait_for(lambda: aki(identity_cert(ident)) == ski(new_ca), "a renewal signed by the new internal CA")
        # The old identity, trusting the new serving certificate, still works: the old CA is previous.
        stolen = tmp_path / "stolen.identity"
        cert_and_key = old_admin.read_text().split("-----BEGIN CERTIFICATE-----")
        stolen.write_text("-----BEGIN CERTIFICATE-----" + cert_and_key[1] + new_only.read_text())
        stolen.chmod(0o600)
        broker.sigil("whoami", identity=str(stolen))

        # retire (forced: the bound counts the longest identity the broker could have issued).
        rotate(broker, "retire", "--force")
        retired_at = time.time()
        wait_until(lambda: len(certs(data / "tls-ca.pem")) == 1, "tls-ca.pem without the retired CA")
        assert ski(certs(data / "tls-ca.pem")[0]) == ski(new_ca)
        wait_until(lambda: broker.sigil("whoami", identity=str(stolen), check=False).returncode != 0,
                   "the retired CA's identity refused", timeout=10)
        refused = broker.sigil("whoami", identity=str(stolen), check=False)
        assert refused.returncode != 0, refused.stdout
        broker.sigil("bot", "list")
        broker.sigil("ca", "status")
        # The agent keeps renewing after the retirement.
        agent.wait_for(lambda: identity_cert(ident).not_valid_before_utc.timestamp() > retired_at, "a renewal after retire")
        assert aki(identity_cert(ident)) == ski(new_ca)
        assert [ski(c) for c in identity_cas(ident)] == [ski(new_ca)], "the retired CA is no longer sent to agents"
        assert "refused to renew" not in agent.log.read_text(), "the agent never fell back to joining again"
    finally:
        if agent:
            agent.stop()
        broker.stop()

