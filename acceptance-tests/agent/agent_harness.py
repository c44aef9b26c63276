"""Helpers for the `sigil agent` acceptance tests: broker resources, an agent
process, and readers that check output files the way their consumers would."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography import x509

from sigil_harness import stop_process
from cryptography.hazmat.primitives.serialization import load_pem_private_key

HERE = Path(__file__).resolve().parent
OTHER_UID = 4242

RESOURCES = """
kind: role
name: agent
allow:
  spiffe_ids: ["/svc/**"]
  audiences: ["*"]
  workload_identities: ["*"]
---
kind: bot
name: node1
roles: [agent]
---
kind: workload_identity
name: root-python
spiffe_id: /svc/{{bot.name}}/uid-{{workload.unix.uid}}
allow:
  - attribute: workload.unix.uid
    values: ["0"]
  - attribute: workload.unix.path
    values: ["*python3*"]
"""


def setup_broker(broker, tmp_path: Path, uses: int = 100) -> str:
    """Creates the role, bot and workload identity; returns a join token secret."""
    f = tmp_path / "resources.yaml"
    f.write_text(RESOURCES)
    broker.sigil("apply", "-f", str(f))
    return broker.sigil("token", "create", "--bot", "node1", "--name", f"t{time.monotonic_ns()}", "--uses", str(uses)).stdout.strip()


def socket_dir() -> Path:
    """A socket directory every local user can traverse (pytest's tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="sigil-agent-"))
    d.chmod(0o755)
    return d


def write_config(path: Path, broker, state: Path, token: str, body: str) -> Path:
    tok = path.parent / "token"
    tok.write_text(token)
    tok.chmod(0o600)
    path.write_text(
        f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {state}\n"
        f"join: {{method: token, token_file: {tok}}}\n" + body
    )
    return path


class Agent:
    """A `sigil agent --config` process."""

    def __init__(self, sigil_bin: str, config: Path, log: Path):
        self.bin, self.config, self.log = sigil_bin, config, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Agent":
        logf = open(self.log, "ab")
        env = {**os.environ, "SIGIL_LOG": "info"}
        self.proc = subprocess.Popen([self.bin, "agent", "--config", str(self.config)], stdout=logf, stderr=logf, env=env)
        return self

    def wait_for(self, cond, what: str, timeout: float = 30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}): {self.log.read_text()}")
            try:
                if cond():
                    return
            except Exception:  # noqa: BLE001 - condition not met yet
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; agent log:\n{self.log.read_text()[-4000:]}")

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        stop_process(self.proc)


# ----------------------------------------------------------------- file checks

def read_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    assert data, f"{path} is empty"
    return x509.load_pem_x509_certificate(data)


def read_certs(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    assert data, f"{path} is empty"
    certs = x509.load_pem_x509_certificates(data)
    assert certs, f"{path} has no certificate"
    return certs


def read_key(path: Path):
    data = path.read_bytes()
    assert data, f"{path} is empty"
    return load_pem_private_key(data, password=None)


def read_jwt(path: Path) -> dict:
    import base64

    tok = path.read_text()
    parts = tok.split(".")
    assert len(parts) == 3 and all(parts), f"{path} is not a compact JWS: {tok[:40]!r}"
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    json.loads(base64.urlsafe_b64decode(pad(parts[0])))
    return json.loads(base64.urlsafe_b64decode(pad(parts[1])))


def read_identity(path: Path):
    """An identity file: certificate, private key, then CA certificate(s)."""
    data = path.read_bytes()
    assert data, f"{path} is empty"
    certs = x509.load_pem_x509_certificates(data)
    assert len(certs) >= 2, f"{path} lacks the CA certificate"
    load_pem_private_key(data[data.index(b"-----BEGIN PRIVATE KEY-----"):data.index(b"-----END PRIVATE KEY-----") + 25], password=None)
    return certs[0]


def uri_san(cert: x509.Certificate) -> str:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert len(uris) == 1, uris
    return uris[0]
