"""Bot instances with the real `sigil agent` (issue 15): every join makes an
instance listed by `sigil bot instance list` with its join method and
attributes; the agent's heartbeat adds host name, OS, agent version, outputs and
last renewal; an instance not seen for longer than `bot_instances.expire_after_seconds`
is no longer listed, one that keeps renewing stays; once its identity has
expired too, the sweep deletes its row for good, and its agent restarted with
the same state joins again as a new instance (the old one never comes back).
Heartbeats are audited once per instance while host, OS and version stay."""
from __future__ import annotations

import socket
import sqlite3
import time

from agent_harness import Agent, setup_broker, write_config
from sigil_harness import Broker, free_port

EXPIRE = 12


def wait_until(cond, what: str, timeout: float = 40):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def instances(broker) -> list[dict]:
    return broker.sigil_json("bot", "instance", "list", "--bot", "node1")


def audit_events(broker, kind: str) -> list[dict]:
    after, out = 0, []
    while True:
        page = broker.sigil_json("audit", "--after", str(after), "--limit", "1000")
        if not page:
            return out
        after = page[-1]["id"]
        out += [e for e in page if e["kind"] == kind]


def stored_instance_ids(data) -> set[str]:
    """The rows of the broker's database, read-only beside the running broker."""
    db = sqlite3.connect(f"file:{data / 'sigil.db'}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0] for r in db.execute("SELECT id FROM bot_instances")}
    finally:
        db.close()


def test_two_agents_of_one_bot_are_two_instances_with_heartbeats_and_a_stale_one_expires(sigil_bin, tmp_path):
    port = free_port()
    data = tmp_path / "data"
    seal = tmp_path / "seal.key"
    seal.write_text("2a" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {data}\nadmin_identity_ttl: 86400\n"
                   f"seal_key_file: {seal}\n"
                   f"bot_instances: {{expire_after_seconds: {EXPIRE}, heartbeat_min_interval_seconds: 1, sweep_interval_seconds: 1}}\n")
    broker = Broker(sigil_bin, data, port=port, config=cfg).start()
    agents = []
    try:
        token = setup_broker(broker, tmp_path)
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            c = write_config(d / "agent.yaml", broker, d / "state", token,
                             "identity_ttl: 10s\nretry: {initial: 200ms, max: 1s}\n"
                             f"outputs:\n  - type: identity\n    path: {d}/out/identity\n")
            agents.append(Agent(sigil_bin, c, d / "agent.log").start())
        a, b = agents

        # Both joined and reported: two instances, each with its heartbeat.
        items = wait_until(lambda: (lambda v: v if len(v) == 2 and all("heartbeat" in i for i in v) else None)(instances(broker)),
                           "two instances with heartbeats")
        assert items[0]["id"] != items[1]["id"]
        for i in items:
            assert i["bot"] == "node1" and i["join_method"] == "token", i
            assert i["join_attributes"]["join.method"] == "token", i
            assert i["join_attributes"].get("join.token", "").startswith("t"), i
            hb = i["heartbeat"]
            assert hb["host_name"] == socket.gethostname(), hb
            assert hb["os"].startswith("linux/"), hb
            assert hb["agent_version"], hb
            assert any(o.endswith("/out/identity") for o in hb["outputs"]), hb
            assert hb["last_renewal"] > 0 and i["last_seen"] >= i["first_seen"], i
        text = broker.sigil("bot", "instance", "list").stdout
        assert all(i["id"] in text for i in items), text

        # The agent's renewal shows: a later last_renewal in a later heartbeat.
        first = {i["id"]: i["heartbeat"]["last_renewal"] for i in items}
        wait_until(lambda: all(i["heartbeat"]["last_renewal"] > first[i["id"]] for i in instances(broker)),
                   "heartbeats after renewals")

        # Heartbeats are audited when they tell something new: each instance's
        # first one, not the routine ones after every renewal.
        beats = audit_events(broker, "bot_instance.heartbeat")
        assert sorted(e["resource"] for e in beats) == sorted(first), beats
        for e in beats:
            assert e["actor"] == "node1" and e["detail"]["first"] is True, e
            assert e["detail"]["heartbeat"]["host_name"] == socket.gethostname(), e

        # Which instance is whose: each heartbeat names its agent's outputs.
        def owner(i):
            return next(n for n in ("a", "b") if any(f"/{n}/out/identity" in o for o in i["heartbeat"]["outputs"]))
        ids = {owner(i): i["id"] for i in items}
        a_id, b_id = ids["a"], ids["b"]
        b.stop()
        stopped_at = time.time()

        # b expires; a, which keeps renewing, stays.
        left = wait_until(lambda: (lambda v: v if [i["id"] for i in v] == [a_id] else None)(instances(broker)),
                          "the stopped agent's instance to expire", timeout=EXPIRE + 20)
        assert time.time() - stopped_at >= EXPIRE - 2
        assert left[0]["last_seen"] >= int(stopped_at), left
        gone = broker.sigil("bot", "instance", "get", b_id, check=False)
        assert gone.returncode != 0 and "not found" in gone.stderr.lower(), gone.stderr
        assert broker.sigil_json("bot", "instance", "get", a_id)["id"] == a_id

        # Hidden is not yet deleted: the row stays while b's identity (10 s)
        # may still be presented; then the sweep deletes it, and audits it.
        wait_until(lambda: b_id not in stored_instance_ids(data), "the sweep to delete the expired instance's row", timeout=30)
        assert a_id in stored_instance_ids(data)
        sweeps = audit_events(broker, "bot_instance.sweep")
        assert sweeps and sum(e["detail"]["deleted"] for e in sweeps) >= 1, sweeps

        # b restarted with its old state: its identity expired and its instance
        # is gone, so it joins again as a new instance; the old id never returns.
        agents[1] = Agent(sigil_bin, b.config, tmp_path / "b" / "agent2.log").start()
        items = wait_until(lambda: (lambda v: v if len(v) == 2 else None)(instances(broker)), "a new instance for the new join")
        ids_now = [i["id"] for i in items]
        assert b_id not in ids_now and a_id in ids_now, items
        assert b_id not in stored_instance_ids(data)
    finally:
        for ag in agents:
            ag.stop()
        broker.stop()


def test_a_bot_without_the_read_permission_cannot_list_instances(sigil_bin, tmp_path):
    broker = Broker(sigil_bin, tmp_path / "data").start()
    try:
        token = setup_broker(broker, tmp_path)
        ident = tmp_path / "node1.identity"
        broker.sigil("join", "--token", token, "--ca-file", broker.ca, "--out", str(ident))
        refused = broker.sigil("bot", "instance", "list", identity=str(ident), check=False)
        assert refused.returncode != 0 and "bot_instance" in refused.stderr, refused.stderr
        refused = broker.sigil("bot", "instance", "list", "--bot", "node1", identity=str(ident), check=False)
        assert refused.returncode != 0 and "bot_instance" in refused.stderr, refused.stderr
    finally:
        broker.stop()
