"""The agent's health and metrics listener under a connection flood (issue 12 #2: "the same for the
agent's health/metrics listener"). It served with axum::serve: no connection cap, no header-read or idle
timeout. Every local user reaches it from 127.0.0.1, so one user's idle connections must not lock out the
probes. Bounded flood on loopback; the agent is limited to 512 open files."""
from __future__ import annotations

import socket
import subprocess
import time

import requests

from agent_harness import Agent, setup_broker, write_config
from sigil_harness import free_port, limit_fds, rss_kb, send_head_slowly

FDS = 512
RSS_BOUND_KB = 64 * 1024


class FdLimitedAgent(Agent):
    def start(self) -> "FdLimitedAgent":
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([self.bin, "agent", "--config", str(self.config)], stdout=logf, stderr=logf,
                                     preexec_fn=limit_fds(FDS))
        return self


def test_idle_connections_to_the_health_listener_cannot_lock_out_probes(sigil_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path)
    port = free_port()
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token, f"health: {{listen: 127.0.0.1:{port}}}\n")
    a = FdLimitedAgent(sigil_bin, cfg, tmp_path / "agent.log").start()
    url = f"http://127.0.0.1:{port}/livez"
    held: list[socket.socket] = []
    try:
        a.wait_for(lambda: requests.get(url, timeout=2).status_code == 200, "livez 200")
        started, failures = time.monotonic(), 0
        for _ in range(FDS + 200):
            s = socket.socket()
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", port))
                held.append(s)
            except OSError:
                s.close()
                failures += 1
            if failures >= 10 or time.monotonic() - started > 15:
                break  # the listener stopped accepting: the probe below tells
        time.sleep(0.2)
        t = time.monotonic()
        try:
            r = requests.get(url, timeout=5)
        except requests.RequestException as e:
            raise AssertionError(f"/livez unanswered during the flood of {len(held)} idle connections: {e}") from None
        answered = time.monotonic() - t
        rss = rss_kb(a.proc.pid)
        print(f"\n{len(held)} idle connections; /livez answered in {answered:.3f} s; agent RSS {rss // 1024} MB")
        assert r.status_code == 200
        assert answered < 1.0, f"/livez took {answered:.2f} s during the flood"
        assert rss < RSS_BOUND_KB, f"agent RSS {rss} KiB"
        for s in held:
            s.close()
        held.clear()

        # A request head sent a line at a time is cut off (header-read timeout, 10 s).
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        with s:
            closed, waited = send_head_slowly(s, b"GET /livez HTTP/1.1\r\n")
        print(f"slow request head cut off after {waited:.1f} s")
        assert closed, f"the agent still held the connection after {waited:.0f} s"
    finally:
        for s in held:
            s.close()
        a.stop()
