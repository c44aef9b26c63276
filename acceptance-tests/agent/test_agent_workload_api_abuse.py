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
import signal
import subprocess
import sys
import time

import pytest
import requests

from agent_harness import HERE, Agent, read_cert, setup_broker, socket_dir, write_config
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


def start_agent(sigil_bin, broker, tmp_path, identities=("root-python",), limits="", outputs=""):
    require_peers()
    token = setup_broker(broker, tmp_path)
    (tmp_path / "sleeper.yaml").write_text(SLEEPER)
    broker.sigil("apply", "-f", str(tmp_path / "sleeper.yaml"))
    sock = socket_dir() / "agent.sock"
    port = free_port()
    cfg = write_config(
        tmp_path / "agent.yaml", broker, tmp_path / "state", token,
        f"health: {{listen: 127.0.0.1:{port}}}\n" + outputs +
        f"services:\n  - type: workload-api\n    socket: {sock}\n    workload_identities: [{', '.join(identities)}]\n"
        f"    x509_ttl: 60s\n    jwt_ttl: 60s\n" + (f"    limits: {limits}\n" if limits else ""),
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


def test_idle_connection_flood_from_one_uid_leaves_allowed_workloads_and_readyz_served(sigil_bin, broker, tmp_path):
    out = tmp_path / "out"
    a, sock = start_agent(sigil_bin, broker, tmp_path,
                          outputs=f"outputs:\n  - type: x509-svid\n    dir: {out}\n    spiffe_id: spiffe://sigil.local/svc/out\n")
    flood = None
    try:
        allowed_fetch(sock)
        a.wait_for(lambda: (out / "svid.pem").exists(), "the x509-svid output")
        serial = read_cert(out / "svid.pem").serial_number
        flood = subprocess.Popen(
            ["setpriv", "--reuid", str(ATTACKER_UID), "--regid", str(ATTACKER_UID), "--clear-groups",
             sys.executable, str(HERE / "wl_attacker.py"), "idle-flood", str(sock), "1100"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = flood.stdout.readline()
        assert line, f"attacker printed nothing: {flood.stderr.read() if flood.poll() is not None else ''}"
        held = json.loads(line)
        print(f"idle flood: {held}")
        assert held["held_open"] <= 128, f"uid {ATTACKER_UID} holds {held['held_open']} connections (max_connections_per_uid 128)"
        # While the attacker holds every connection it was allowed:
        spiffe_id, took = allowed_fetch(sock)
        assert spiffe_id.endswith("/uid-0") and took < ANSWER_WITHIN_S, took
        assert requests.get(f"{a.health}/readyz", timeout=2).status_code == 200
        # ... and the file output is renewed (SIGUSR1: renew everything now).
        a.signal(signal.SIGUSR1)
        a.wait_for(lambda: read_cert(out / "svid.pem").serial_number != serial, "the output renewed during the flood", timeout=10)
        assert "connection refused: uid 65534 already holds 128 connections" in a.log.read_text()
        flood.stdin.close()
        flood.wait(timeout=30)
        assert_recovered(a, sock, "idle connection flood")
    finally:
        if flood and flood.poll() is None:
            flood.kill()
            flood.wait()
        a.stop()


def test_idle_connections_are_closed_after_the_idle_timeout(sigil_bin, broker, tmp_path):
    import socket

    from wl_attacker import PREFACE, SETTINGS, closed_by_peer, frame, grpc_request

    a, sock = start_agent(sigil_bin, broker, tmp_path, limits="{idle_timeout: 2s}")
    try:
        silent = socket.socket(socket.AF_UNIX)
        silent.connect(str(sock))
        idle_h2 = socket.socket(socket.AF_UNIX)
        idle_h2.connect(str(sock))
        idle_h2.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
        t0 = time.monotonic()
        assert closed_by_peer(silent, 6) and closed_by_peer(idle_h2, 6), "idle connections still open after 6s (idle_timeout 2s)"
        print(f"idle connections closed after {time.monotonic() - t0:.1f}s (idle_timeout 2s)")
        # A connection with an open stream is not idle: this FetchX509SVID stream
        # (an allowed caller, never ending) outlives the timeout.
        streaming = socket.socket(socket.AF_UNIX)
        streaming.connect(str(sock))
        streaming.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + grpc_request(1, "FetchX509SVID"))
        assert not closed_by_peer(streaming, 5), "a connection with an open stream was closed as idle"
        streaming.close()
        # gRPC clients reconnect on their next call after an idle close.
        with WorkloadApiClient(f"unix://{sock}", default_timeout=10) as c:
            c.fetch_x509_svid()
            time.sleep(3)
            assert str(c.fetch_x509_svid().spiffe_id).endswith("/uid-0")
    finally:
        a.stop()


def test_unread_stream_flood_on_one_connection_keeps_memory_bounded(sigil_bin, broker, tmp_path):
    a, sock = start_agent(sigil_bin, broker, tmp_path)
    try:
        allowed_fetch(sock)
        before = rss_mb(a)
        got = attacker_json("stream-flood", sock, 20000)
        print(f"stream flood: {got}, agent VmRSS {before:.1f} MB before")
        assert_recovered(a, sock, "unread stream flood")
    finally:
        a.stop()


def test_exec_after_connect_does_not_give_the_new_programs_svid_to_a_relaying_child(sigil_bin, broker, tmp_path):
    a, sock = start_agent(sigil_bin, broker, tmp_path, identities=("root-python", "sleeper"))
    try:
        # The child ends its parent (`sleep`, the process setpriv started) with SIGTERM.
        p = attacker("exec-relay", sock)
        assert p.stdout.strip(), f"attacker printed nothing ({p.returncode}): {p.stderr[-2000:]}"
        got = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"exec after connect: {got}")
        assert got["parent_exe"] == "/usr/bin/sleep", got
        assert "x509_spiffe_id" not in got, f"the relaying child got the SVID meant for /usr/bin/sleep: {got}"
        assert "PERMISSION_DENIED" in got.get("error", "") or "PermissionDenied" in got.get("error", ""), got
        assert "written to by process" in a.log.read_text() or "another process than the one that opened it" in a.log.read_text()
        assert_recovered(a, sock, "exec after connect")
    finally:
        a.stop()


def audit_rows(broker) -> int:
    n, after = 0, 0
    while True:
        page = broker.sigil_json("audit", "--after", str(after), "--limit", "500")
        if not page:
            return n
        n += len(page)
        after = page[-1]["id"]


def test_denied_caller_flood_is_not_amplified_to_the_broker_or_the_log(sigil_bin, broker, tmp_path):
    a, sock = start_agent(sigil_bin, broker, tmp_path)
    try:
        allowed_fetch(sock)
        rows_before = audit_rows(broker)
        logged_before = a.log.read_text().count("no workload identity issued")
        got = attacker_json("denied-flood", sock, 2000)
        rows = audit_rows(broker) - rows_before
        logged = a.log.read_text().count("no workload identity issued") - logged_before
        print(f"denied flood: {got}; broker audit rows +{rows}, agent refusal log lines +{logged}")
        assert got["codes"].get("PERMISSION_DENIED") == 2000, got
        # One broker refusal per 10 s (DENY_TTL) for one caller; the flood lasts a few seconds.
        bound = 2 + int(got["seconds"] // 10)
        assert rows <= bound, f"{rows} broker audit rows for {got['calls']} refused calls"
        assert logged <= bound, f"{logged} agent log lines for {got['calls']} refused calls"
        assert_recovered(a, sock, "denied caller flood")
    finally:
        a.stop()
