"""SSH certificate revocation checked by the real OpenSSH peers: `sigil svid revoke`
with the serial `ssh-keygen -L` prints puts the certificate in the broker's OpenSSH KRL
(`GET /ssh/revoked_keys.krl`); `ssh-keygen -Q` reports it REVOKED and another
certificate ok, and sshd with `RevokedKeys <krl>` refuses a login with the revoked
certificate while the other one still logs in.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sigil_harness import require_tool
from ssh_harness import Sshd, UnixUser, cert_info, host_output, join, private_run_dir, setup_broker, ssh


@pytest.fixture
def login():
    u = UnixUser("r")
    try:
        yield u
    finally:
        u.remove()


@pytest.fixture
def run_dir():
    d = private_run_dir("sigil-ssh-krl-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fetch_krl(broker, dest: Path) -> Path:
    """The KRL over HTTPS, as an operator's timer would fetch it."""
    curl = require_tool("curl", "apt-get install curl")
    r = subprocess.run([curl, "-sS", "--fail", "--cacert", broker.ca, "-o", str(dest), "-w", "%{content_type}",
                        f"{broker.url}/ssh/revoked_keys.krl"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "application/octet-stream", r.stdout
    assert dest.read_bytes().startswith(b"SSHKRL\n\0")
    dest.chmod(0o644)
    return dest


def krl_query(krl: Path, cert: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(cert)], capture_output=True, text=True, timeout=30)


def test_sshd_with_the_served_krl_refuses_the_revoked_certificate_and_accepts_another(broker, sigil_bin, tmp_path, login,
                                                                                       run_dir):
    tokens = setup_broker(broker, tmp_path, [login.name])
    host_dir = host_output(broker, sigil_bin, tmp_path, tokens["web1"], run_dir)
    ci = join(broker, tmp_path, tokens["ci"], "ci")
    dirs = {}
    for name in ("revoked", "kept"):
        dirs[name] = tmp_path / name
        broker.sigil("ssh", "user-cert", "--principal", login.name, "--host", "127.0.0.1", "--dir", str(dirs[name]),
                     identity=ci)
    certs = {n: d / "id_ed25519-cert.pub" for n, d in dirs.items()}
    serial = re.search(r"Serial: (\d+)", cert_info(certs["revoked"])).group(1)

    out = broker.sigil_json("svid", "revoke", "--serial", serial, "--reason", "keyCompromise")
    assert out["revoked"] == [f"ssh:{serial}"], out

    krl = fetch_krl(broker, run_dir / "revoked_keys.krl")
    q = krl_query(krl, certs["revoked"])
    assert q.returncode != 0 and "REVOKED" in q.stdout, (q.stdout, q.stderr)
    q = krl_query(krl, certs["kept"])
    assert q.returncode == 0 and ": ok" in q.stdout, (q.stdout, q.stderr)

    sshd = Sshd(include=host_dir / "sshd_config.snippet", extra=f"RevokedKeys {krl}\n")
    try:
        p = ssh(dirs["revoked"] / "ssh_config", login.name, sshd.port)
        assert p.returncode == 255 and "Permission denied" in p.stderr, p.stderr
        sshd.wait_log("revoked by file")
        p = ssh(dirs["kept"] / "ssh_config", login.name, sshd.port)
        assert p.returncode == 0 and p.stdout.strip() == login.name, p.stderr
    finally:
        sshd.stop()
