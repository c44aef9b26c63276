"""The agent configured with several brokers: it reaches the live one past a dead
address, and keeps renewing when the broker it used dies and comes back on the
other configured address."""
from __future__ import annotations

import time

from agent_harness import Agent, read_cert, setup_broker, write_config
from sigil_harness import Broker, free_port


def test_agent_with_a_dead_first_broker_joins_and_keeps_renewing_when_the_broker_moves(sigil_bin, tmp_path):
    first, second = free_port(), free_port()
    broker = Broker(sigil_bin, tmp_path / "data", port=second).start()  # nothing listens on `first` yet
    a = None
    try:
        token = setup_broker(broker, tmp_path)
        out = tmp_path / "out"
        cfg = write_config(
            tmp_path / "agent.yaml", broker, tmp_path / "state", token,
            "identity_ttl: 20s\nretry: {initial: 200ms, max: 1s}\n"
            f"outputs:\n  - type: x509-svid\n    dir: {out}/svid\n    spiffe_id: spiffe://sigil.local/svc/app\n    ttl: 4s\n",
        )
        text = cfg.read_text().replace(f"broker: {broker.addr}\n", f"broker: [127.0.0.1:{first}, 127.0.0.1:{second}]\n")
        assert text != cfg.read_text()
        cfg.write_text(text)
        a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
        a.wait_for(lambda: (out / "svid" / "svid.pem").exists(), "first SVID through the second broker address")
        serial = read_cert(out / "svid" / "svid.pem").serial_number
        a.wait_for(lambda: read_cert(out / "svid" / "svid.pem").serial_number != serial, "a renewal on the second address")

        # The broker dies and comes back on the first address (same data): the agent follows.
        broker.stop()
        broker = Broker(sigil_bin, tmp_path / "data", port=first).start()
        moved_at = time.time()
        serial = read_cert(out / "svid" / "svid.pem").serial_number
        a.wait_for(lambda: read_cert(out / "svid" / "svid.pem").serial_number != serial, "a renewal on the first address", timeout=30)
        seen = {read_cert(out / "svid" / "svid.pem").serial_number}
        a.wait_for(lambda: len(seen | {read_cert(out / "svid" / "svid.pem").serial_number}) > 1, "and another one", timeout=30)
        print(f"renewing again {time.time() - moved_at:.1f}s after the broker moved to the first address")
        assert "broker failover" in a.log.read_text(), "the agent logs that it skipped an unreachable broker"
    finally:
        if a:
            a.stop()
        broker.stop()
