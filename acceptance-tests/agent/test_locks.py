"""Locks with the real `sigil agent` and py-spiffe (issue 15, must show): a locked bot's running agent is
refused at its next renewal (agent log, /metrics, /readyz once its identity expires, the broker's audit log);
its Workload API stops serving SVIDs once they expire and never serves an expired one (a watcher's open
stream is ended with an error when the SVID it holds expires); deleting the lock
restores the agent without a restart. The lock's reason reaches the operator (audit log, `sigil lock list`),
never the agent. Across replicas: broker/test_replicas.py; every target kind: cli/tests/locks.rs."""
from __future__ import annotations

import datetime
import time
import urllib.error
import urllib.request

import pytest

from agent_harness import Agent, setup_broker, socket_dir, write_config
from sigil_harness import free_port

try:
    from spiffe import WorkloadApiClient
except ImportError:  # pragma: no cover - a missing peer must fail, not skip
    WorkloadApiClient = None

REASON = "node1 key copied to a USB stick; ticket SEC-815"
# What the broker tells a locked caller (broker/src/service/locks.rs LOCKED).
LOCKED = "locked by an administrator"
IDENTITY_TTL = 10
X509_TTL = 8


def wait_until(cond, what: str, timeout: float):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")


def fetch_x509(sock) -> tuple[float, object]:
    """(asked at, the X.509-SVID's not-after as Unix seconds) or (asked at, the error text)."""
    asked = time.time()
    try:
        with WorkloadApiClient(f"unix://{sock}", default_timeout=5) as c:
            return asked, c.fetch_x509_svid().leaf.not_valid_after_utc.timestamp()
    except Exception as e:  # noqa: BLE001 - the refusal is what we look for
        return asked, f"{type(e).__name__}: {e}"


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def renewal_failures(port: int) -> int:
    _, text = http(port, "/metrics")
    line = next(l for l in text.splitlines() if l.startswith('sigil_agent_renewal_failures_total{credential="identity"}'))
    return int(line.split()[-1])


def test_a_locked_bots_agent_is_refused_at_its_next_renewal_its_workload_api_stops_at_expiry_and_an_unlock_restores_it(
        sigil_bin, broker, tmp_path):
    if WorkloadApiClient is None:
        pytest.fail("py-spiffe missing: .venv/bin/pip install -r acceptance-tests/requirements.txt (scripts/setup.sh does)")
    token = setup_broker(broker, tmp_path)
    sock = socket_dir() / "agent.sock"
    hport = free_port()
    cfg = write_config(
        tmp_path / "agent.yaml", broker, tmp_path / "state", token,
        f"identity_ttl: {IDENTITY_TTL}s\nretry: {{initial: 200ms, max: 1s}}\n"
        f"health: {{listen: 127.0.0.1:{hport}, details: true}}\n"
        f"services:\n  - type: workload-api\n    socket: {sock}\n    workload_identities: [root-python]\n"
        f"    x509_ttl: {X509_TTL}s\n    jwt_ttl: 60s\n",
    )
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    try:
        a.wait_for(lambda: sock.exists() and "bot identity installed" in a.log.read_text(), "agent socket and identity")
        _, first = fetch_x509(sock)
        assert isinstance(first, float), first
        wait_until(lambda: http(hport, "/readyz")[0] == 200, "the agent to be ready", 20)
        failures_before = renewal_failures(hport)
        # A watcher with a stream open from before the lock (no reconnects: the test sees what the stream does).
        updates, errors = [], []
        watcher = WorkloadApiClient(f"unix://{sock}")
        handle = watcher.stream_x509_contexts(lambda ctx: updates.append((time.time(), ctx.default_svid.leaf)),
                                              lambda e: errors.append((time.time(), e)), retry_connect=False)
        wait_until(lambda: updates, "the watcher's first SVID", 20)

        out = broker.sigil("lock", "create", "--bot", "node1", "--reason", REASON, "--name", "stop-node1")
        assert "stop-node1" in out.stderr, out.stderr
        locked_at = time.time()
        listed = broker.sigil_json("lock", "list")
        assert [(l["name"], l["target"], l["reason"], l["created_by"]) for l in listed] == \
            [("stop-node1", {"bot": "node1"}, REASON, "admin")], listed

        # The next renewal (at half of the 10 s identity) is refused: in the log, the metrics, the audit log.
        a.wait_for(lambda: f"identity renewal failed (PermissionDenied): refused: {LOCKED}" in a.log.read_text(), "the refused renewal",
                   timeout=IDENTITY_TTL + 10)
        assert renewal_failures(hport) > failures_before
        events = broker.sigil_json("audit", "--limit", "10000")
        refused = [e for e in events if e["kind"] == "locked" and e["actor"] == "node1"]
        assert refused and refused[0]["outcome"] == "denied", events[-5:]
        assert "stop-node1" in refused[0]["detail"]["reason"] and "SEC-815" in refused[0]["detail"]["reason"], refused[0]

        # The Workload API serves what it holds until it expires, never past that, then refuses.
        served, refusal = [], None
        deadline = time.time() + X509_TTL + IDENTITY_TTL + 10
        while time.time() < deadline:
            asked, got = fetch_x509(sock)
            if isinstance(got, float):
                served.append((asked, got))
                assert got > asked, f"served an expired X.509-SVID: not after {got}, asked at {asked}"
            else:
                refusal = (asked, got)
                break
            time.sleep(0.5)
        assert refusal is not None, f"the Workload API still served SVIDs {time.time() - locked_at:.0f} s after the lock"
        newest = max([first] + [g for _, g in served])
        assert refusal[0] <= newest + 3, f"refused only {refusal[0] - newest:.1f} s after the last SVID expired"
        print(f"Workload API: {len(served)} fetches served after the lock, refused {refusal[0] - locked_at:.1f} s "
              f"after it ({refusal[1][:120]})")
        # The open stream is ended with an error once the SVID it delivered has expired, never fed an expired one.
        for at, leaf in updates:
            assert leaf.not_valid_after_utc.timestamp() > at, f"the stream delivered an expired SVID at {at}"
        held = max(leaf.not_valid_after_utc.timestamp() for _, leaf in updates)
        wait_until(lambda: errors, "the watcher to be told its SVID expired", max(0, held - time.time()) + 5)
        told_at, err = errors[0]
        assert held - 1 <= told_at <= held + 3, f"watcher told at {told_at}, its SVID expired at {held}: {err}"
        handle.cancel()
        watcher.close()
        # Once the identity has expired too, the agent is not ready and says why (health details).
        code, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(http(hport, "/readyz")),
                                "/readyz to report the expired identity", IDENTITY_TTL + 10)
        assert "identity: expired" in body and (LOCKED in body or "join refused" in body), body

        # The reason never reached the agent.
        assert "SEC-815" not in a.log.read_text() and "USB stick" not in a.log.read_text()

        pid = a.proc.pid
        broker.sigil("lock", "delete", "stop-node1")
        unlocked = time.time()
        installs = a.log.read_text().count("bot identity installed")
        a.wait_for(lambda: a.log.read_text().count("bot identity installed") > installs, "a new identity after the unlock", 20)
        _, again = wait_until(lambda: (lambda r: r if isinstance(r[1], float) else None)(fetch_x509(sock)),
                              "the Workload API to serve again", 20)
        assert again > time.time()
        wait_until(lambda: http(hport, "/readyz")[0] == 200, "the agent to be ready again", 20)
        assert a.proc.pid == pid and a.proc.poll() is None, "the agent recovered without a restart"
        print(f"recovered {time.time() - unlocked:.1f} s after the unlock")
        assert broker.sigil_json("lock", "list") == []
    finally:
        a.stop()


def test_a_lock_that_expires_lifts_itself(sigil_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path)
    ident = tmp_path / "node1.identity"
    broker.sigil("join", "--token", token, "--ca-file", broker.ca, "--out", str(ident))
    broker.sigil("lock", "create", "--bot", "node1", "--expires-in", "3s", "--name", "brief")
    refused = broker.sigil("whoami", identity=str(ident), check=False)
    assert refused.returncode != 0 and LOCKED in refused.stderr, refused.stderr
    text = broker.sigil("lock", "list").stdout
    assert "brief" in text and "until 20" in text, text
    wait_until(lambda: broker.sigil("whoami", identity=str(ident), check=False).returncode == 0, "the lock to expire", 15)
    assert "expired 20" in broker.sigil("lock", "list").stdout
    until = datetime.datetime.fromtimestamp(broker.sigil_json("lock", "get", "brief")["expires_at"], datetime.timezone.utc)
    assert until <= datetime.datetime.now(datetime.timezone.utc)
