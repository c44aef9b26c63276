"""Local attackers against the agent's Workload API socket (issues 12.3-12.6, 11.6).

Every attack runs as uid 65534 (`setpriv --reuid 65534 --regid 65534
--clear-groups`) from `wl_attacker.py`, bounded in count and time, on the real
agent binary. After each one the agent must answer an allowed workload (this
root python process, via py-spiffe) within 1 s of the attack ending and keep its
resident set under 64 MB (VmRSS from /proc)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from agent_harness import HERE, Agent, setup_broker, socket_dir, write_config
from sigil_harness import free_port

try:
    from spiffe import WorkloadApiClient
except ImportError:  # pragma: no cover - a missing peer must fail, not skip
    WorkloadApiClient = None

ATTACKER_UID = 65534
RSS_LIMIT_MB = 64
ANSWER_WITHIN_S = 1.0
SLEEPER = """
kind: workload_identity
name: sleeper
spiffe_id: /svc/{{bot.name}}/sleeper
allow:
  - attribute: workload.unix.uid
    values: ["65534"]
  - attribute: workload.unix.path
    values: ["/usr/bin/sleep"]
"""


def require_peers():
    if WorkloadApiClient is None:
        pytest.fail("py-spiffe missing: .venv/bin/pip install -r acceptance-tests/requirements.txt (scripts/setup.sh does)")
    if os.getuid() != 0:
        pytest.fail("these tests run attackers under uid 65534 and need root: run the acceptance tests as root (CI does)")
    if not shutil.which("setpriv"):
        pytest.fail("setpriv missing: apt-get install util-linux")


def start_agent(sigil_bin, broker, tmp_path, identities=("root-python",)):
    require_peers()
    token = setup_broker(broker, tmp_path)
    (tmp_path / "sleeper.yaml").write_text(SLEEPER)
    broker.sigil("apply", "-f", str(tmp_path / "sleeper.yaml"))
    sock = socket_dir() / "agent.sock"
    port = free_port()
    cfg = write_config(
        tmp_path / "agent.yaml", broker, tmp_path / "state", token,
        f"health: {{listen: 127.0.0.1:{port}}}\n"
        f"services:\n  - type: workload-api\n    socket: {sock}\n    workload_identities: [{', '.join(identities)}]\n"
        f"    x509_ttl: 60s\n    jwt_ttl: 60s\n",
    )
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    a.wait_for(lambda: sock.exists() and "bot identity installed" in a.log.read_text(), "agent socket and identity")
    a.health = f"http://127.0.0.1:{port}"
    return a, sock


def rss_mb(agent: Agent) -> float:
    for line in open(f"/proc/{agent.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def attacker(*args, timeout=120, **kw) -> subprocess.CompletedProcess:
    cmd = ["setpriv", "--reuid", str(ATTACKER_UID), "--regid", str(ATTACKER_UID), "--clear-groups",
           sys.executable, str(HERE / "wl_attacker.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def attacker_json(*args, **kw) -> dict:
    p = attacker(*args, **kw)
    assert p.returncode == 0, f"attacker failed ({p.returncode}); is {sys.executable} readable by uid {ATTACKER_UID}? {p.stderr[-2000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def allowed_fetch(sock) -> tuple[str, float]:
    """An allowed workload's X.509-SVID and how long it took to get it."""
    t0 = time.monotonic()
    with WorkloadApiClient(f"unix://{sock}", default_timeout=10) as c:
        spiffe_id = str(c.fetch_x509_svid().spiffe_id)
    return spiffe_id, time.monotonic() - t0


def assert_recovered(agent: Agent, sock, what: str) -> dict:
    spiffe_id, took = allowed_fetch(sock)
    rss = rss_mb(agent)
    print(f"{what}: allowed request answered in {took * 1000:.0f} ms after the attack, agent VmRSS {rss:.1f} MB")
    assert spiffe_id == "spiffe://sigil.local/svc/node1/uid-0"
    assert took < ANSWER_WITHIN_S, f"{what}: allowed request took {took:.2f}s"
    assert rss < RSS_LIMIT_MB, f"{what}: agent VmRSS {rss:.1f} MB"
    return {"answer_s": took, "rss_mb": rss}


def test_hpack_decompression_bomb_closes_the_connection_and_memory_stays_bounded(sigil_bin, broker, tmp_path):
    a, sock = start_agent(sigil_bin, broker, tmp_path)
    try:
        allowed_fetch(sock)
        before = rss_mb(a)
        for round_ in range(5):
            got = attacker_json("hpack-bomb", sock)
            assert got == {"references": "closed", "table_growth": "closed", "truncated_size_update": "closed"}, got
            assert rss_mb(a) < RSS_LIMIT_MB, f"round {round_}: agent VmRSS {rss_mb(a):.1f} MB (before {before:.1f})"
        assert_recovered(a, sock, f"HPACK bombs (before: {before:.1f} MB)")
        assert "panicked" not in a.log.read_text()
    finally:
        a.stop()
