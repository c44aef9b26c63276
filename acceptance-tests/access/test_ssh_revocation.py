"""SSH certificate revocation checked by the real OpenSSH peers: `sigil svid revoke`
with the serial `ssh-keygen -L` prints puts the certificate in the broker's OpenSSH KRL
(`GET /ssh/revoked_keys.krl`); `ssh-keygen -Q` reports it REVOKED and another
certificate ok, and sshd with `RevokedKeys <krl>` refuses a login with the revoked
certificate while the other one still logs in. A running agent's `ssh-host` output
writes the KRL beside the host key (`RevokedKeys` in its snippet) and rewrites it
within a bundle poll of a revocation, keeping the host certificate.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sigil_harness import require_tool
from ssh_harness import (Agent, Sshd, UnixUser, agent_config, cert_info, host_output, join, private_run_dir, setup_broker,
                         ssh)


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


def user_certs(broker, tmp_path: Path, ci: str, login: str, names: tuple[str, ...]) -> dict[str, Path]:
    """`sigil ssh user-cert` once per name into tmp_path/NAME; returns the directories."""
    dirs = {}
    for name in names:
        dirs[name] = tmp_path / name
        broker.sigil("ssh", "user-cert", "--principal", login, "--host", "127.0.0.1", "--dir", str(dirs[name]), identity=ci)
    return dirs


def test_sshd_with_the_served_krl_refuses_the_revoked_certificate_and_accepts_another(broker, sigil_bin, tmp_path, login,
                                                                                       run_dir):
    tokens = setup_broker(broker, tmp_path, [login.name])
    host_dir = host_output(broker, sigil_bin, tmp_path, tokens["web1"], run_dir)
    ci = join(broker, tmp_path, tokens["ci"], "ci")
    dirs = user_certs(broker, tmp_path, ci, login.name, ("revoked", "kept"))
    certs = {n: d / "id_ed25519-cert.pub" for n, d in dirs.items()}
    serial = re.search(r"Serial: (\d+)", cert_info(certs["revoked"])).group(1)

    out = broker.sigil_json("svid", "revoke", "--serial", serial, "--reason", "keyCompromise")
    assert out["revoked"] == [f"ssh:{serial}"], out

    krl = fetch_krl(broker, run_dir / "revoked_keys.krl")
    q = krl_query(krl, certs["revoked"])
    assert q.returncode != 0 and "REVOKED" in q.stdout, (q.stdout, q.stderr)
    q = krl_query(krl, certs["kept"])
    assert q.returncode == 0 and ": ok" in q.stdout, (q.stdout, q.stderr)

    # The host files without the output's own snippet (which names the KRL the
    # agent wrote before the revocation): this sshd reads the list fetched above.
    sshd = Sshd(host_key=host_dir / "ssh_host_ed25519_key", host_cert=host_dir / "ssh_host_ed25519_key-cert.pub",
                user_ca=host_dir / "user_ca.pub", extra=f"RevokedKeys {krl}\n")
    try:
        p = ssh(dirs["revoked"] / "ssh_config", login.name, sshd.port)
        assert p.returncode == 255 and "Permission denied" in p.stderr, p.stderr
        sshd.wait_log("revoked by file")
        p = ssh(dirs["kept"] / "ssh_config", login.name, sshd.port)
        assert p.returncode == 0 and p.stdout.strip() == login.name, p.stderr
    finally:
        sshd.stop()


def test_a_running_agents_ssh_host_output_rewrites_the_krl_within_a_poll_and_sshd_refuses_the_revoked_certificate(
        broker, sigil_bin, tmp_path, login, run_dir):
    tokens = setup_broker(broker, tmp_path, [login.name])
    host = run_dir / "host"
    cfg = agent_config(broker, tmp_path, "web1", tokens["web1"],
                       f"  - type: ssh-host\n    dir: {host}\n    names: [127.0.0.1, localhost]\n    ttl: 1h\n")
    cfg.write_text(cfg.read_text().replace("outputs:\n", "bundle_refresh: 1s\noutputs:\n"))
    ci = join(broker, tmp_path, tokens["ci"], "ci")
    dirs = user_certs(broker, tmp_path, ci, login.name, ("revoked", "kept"))
    cert = dirs["revoked"] / "id_ed25519-cert.pub"
    serial = re.search(r"Serial: (\d+)", cert_info(cert)).group(1)
    agent = Agent(sigil_bin, cfg)
    sshd = None
    try:
        krl = host / "revoked_keys.krl"
        agent.wait_file(krl)
        snippet = (host / "sshd_config.snippet").read_text()
        assert f"RevokedKeys {krl}\n" in snippet, snippet
        sshd = Sshd(include=host / "sshd_config.snippet")
        for name in ("revoked", "kept"):
            p = ssh(dirs[name] / "ssh_config", login.name, sshd.port)
            assert p.returncode == 0 and p.stdout.strip() == login.name, (name, p.stderr)
        host_cert = (host / "ssh_host_ed25519_key-cert.pub").read_bytes()
        time.sleep(1.5)  # past the agent's first bundle poll

        broker.sigil_json("svid", "revoke", "--serial", serial, "--reason", "keyCompromise")
        started = time.time()
        while "REVOKED" not in krl_query(krl, cert).stdout:
            assert time.time() - started < 10, f"KRL not rewritten 10 s after the revocation: {agent.log.read_text()[-3000:]}"
            time.sleep(0.1)
        took = time.time() - started
        print(f"the agent's KRL listed the revoked certificate {took:.1f} s after `sigil svid revoke` (bundle_refresh 1 s)")

        p = ssh(dirs["revoked"] / "ssh_config", login.name, sshd.port)
        assert p.returncode == 255 and "Permission denied" in p.stderr, p.stderr
        sshd.wait_log("revoked by file")
        p = ssh(dirs["kept"] / "ssh_config", login.name, sshd.port)
        assert p.returncode == 0 and p.stdout.strip() == login.name, p.stderr
        assert (host / "ssh_host_ed25519_key-cert.pub").read_bytes() == host_cert, "the KRL alone was rewritten"
        assert "SSH KRL rewritten, host certificate kept" in agent.log.read_text()
        # The served list and the agent's file list the same serials.
        served = fetch_krl(broker, tmp_path / "served.krl")
        listing = lambda f: sorted(l for l in subprocess.run(["ssh-keygen", "-Q", "-l", "-f", str(f)], capture_output=True,
                                                              text=True, timeout=30).stdout.splitlines() if "serial" in l)
        assert listing(served) == listing(krl) and listing(krl), (listing(served), listing(krl))
    finally:
        if sshd:
            sshd.stop()
        agent.stop()
