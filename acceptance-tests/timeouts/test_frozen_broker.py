"""Every client of the broker gives up within its documented bound.

A broker frozen with SIGSTOP accepts TCP connections (the kernel completes the
handshake into the listen backlog) and then never answers: the state of a
paused VM, an overloaded process or a black-holed load balancer. `sigil
whoami`, `terraform plan` (the provider) and the agent must each fail within
the connect timeout they were given, with a message naming the broker's
address and the phase that hung; a call on a connection that already stands
is bounded by the call timeout. A killed broker (nothing listening) fails at
once. The bounds are documented in docs/reference/timeouts.md.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "terraform"))
sys.path.insert(0, str(HERE.parent / "agent"))

import tf_harness  # noqa: E402
from agent_harness import Agent, setup_broker, write_config  # noqa: E402
from sigil_harness import Broker  # noqa: E402

# The bound each test configures, and what a process may add around it
# (start-up, Terraform's own plugin handshake, the CI machine's load).
CONNECT = 2.0
SLACK = 6.0


@contextmanager
def frozen(broker: Broker):
    """The broker's process stopped (SIGSTOP) for the block, continued after."""
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        broker.proc.send_signal(signal.SIGCONT)


def timed(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    return p, time.monotonic() - start


@pytest.fixture(scope="module")
def live(sigil_bin, tmp_path_factory):
    b = Broker(sigil_bin, tmp_path_factory.mktemp("frozen") / "data").start()
    yield b
    b.stop()


def test_sigil_whoami_gives_up_after_the_connect_timeout_naming_the_address_and_phase(live, sigil_bin):
    with frozen(live):
        p, took = timed([sigil_bin, "whoami", "--connect-timeout", f"{CONNECT:g}s"], env=live.env())
    assert p.returncode != 0, p.stdout
    assert CONNECT - 0.2 <= took < CONNECT + SLACK, f"took {took:.1f}s: {p.stderr}"
    assert live.addr in p.stderr and "timed out after 2s" in p.stderr, p.stderr
    assert "TLS/HTTP/2 set-up" in p.stderr, "the phase that hung is named: " + p.stderr
    # The same bound from the environment, for scripts that cannot pass flags.
    with frozen(live):
        p, took = timed([sigil_bin, "whoami"], env={**live.env(), "SIGIL_CONNECT_TIMEOUT": "1s"})
    assert p.returncode != 0 and took < 1 + SLACK and "timed out after 1s" in p.stderr, (took, p.stderr)
    # Thawed, the same command works: nothing was left broken.
    assert "bot admin" in live.sigil("whoami").stdout


def test_terraform_plan_gives_up_after_the_providers_connect_timeout_naming_the_address(live, tmp_path):
    tf = tf_harness.Terraform(tmp_path / "tf", tf_harness.target_dir(), extra_env={"SIGIL_CONNECT_TIMEOUT": f"{CONNECT:g}s"})
    broker = tf_harness.Broker(addr=live.addr, data_dir=live.data_dir, sigil=Path(live.bin))
    name = tf_harness.Names("frozen-plan")("role")
    tf.write(f'resource "sigil_role" "r" {{\n  name = "{name}"\n}}\n', tf_harness.provider_block(broker))
    tf.apply()
    try:
        with frozen(live):
            start = time.monotonic()
            p = tf.run("plan", "-refresh=true", check=False)
            took = time.monotonic() - start
        out = p.stdout + p.stderr
        assert p.returncode != 0, out
        assert took < CONNECT + SLACK, f"terraform plan took {took:.1f}s against a frozen broker:\n{out}"
        assert live.addr in out and "timed out" in out, out
    finally:
        tf.destroy()


def agent_config(tmp_path: Path, broker: Broker, token: str, extra: str = "") -> Path:
    return write_config(
        tmp_path / "agent.yaml", broker, tmp_path / "state", token,
        f"broker_timeouts: {{connect: {CONNECT:g}s, call: 2s}}\nretry: {{initial: 1s, max: 2s}}\n{extra}",
    )


def test_the_agent_gives_up_a_join_after_its_connect_timeout_naming_the_address(live, sigil_bin, tmp_path):
    cfg = agent_config(tmp_path, live, setup_broker(live, tmp_path, uses=1))
    with frozen(live):
        p, took = timed([sigil_bin, "agent", "--oneshot", "--config", str(cfg)])
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert CONNECT - 0.2 <= took < CONNECT + SLACK, f"took {took:.1f}s: {out}"
    assert live.addr in out and "timed out after 2s" in out, out
    # The token was not spent by the attempt that never reached the broker.
    p, _ = timed([sigil_bin, "agent", "--oneshot", "--config", str(cfg)])
    assert p.returncode == 0, p.stderr


class DebugAgent(Agent):
    """An agent logging at debug level (its heartbeats show)."""

    def start(self) -> "DebugAgent":
        logf = open(self.log, "ab")
        env = {**os.environ, "SIGIL_LOG": "debug"}
        self.proc = subprocess.Popen([self.bin, "agent", "--config", str(self.config)], stdout=logf, stderr=logf, env=env)
        return self


def test_a_running_agent_bounds_a_call_on_its_open_connection_by_the_call_timeout(live, sigil_bin, tmp_path):
    """TCP and TLS already stand: only the call timeout can end the wait."""
    cfg = agent_config(tmp_path, live, setup_broker(live, tmp_path))
    agent = DebugAgent(sigil_bin, cfg, tmp_path / "agent.log").start()
    try:
        # The heartbeat after the join opened the mTLS connection the renewal will use.
        agent.wait_for(lambda: "heartbeat sent" in agent.log.read_text(), "the agent's join and first heartbeat")
        seen = len(agent.log.read_text())
        with frozen(live):
            start = time.monotonic()
            agent.signal(signal.SIGUSR1)  # renew now, on the connection the join left open
            agent.wait_for(lambda: "no answer from the broker" in agent.log.read_text()[seen:], "a bounded renewal", timeout=2 + SLACK)
            took = time.monotonic() - start
        tail = agent.log.read_text()[seen:]
        assert live.addr in tail and "call timeout" in tail, tail
        assert took < 2 + SLACK, took
        # Thawed, the agent renews on its own retry schedule.
        agent.wait_for(lambda: agent.log.read_text().count("bot identity installed") >= 2, "a renewal after the thaw", timeout=20)
    finally:
        agent.stop()


def test_a_killed_broker_fails_every_client_at_once(sigil_bin, tmp_path):
    b = Broker(sigil_bin, tmp_path / "data").start()
    token = setup_broker(b, tmp_path)
    cfg = agent_config(tmp_path, b, token)
    tf = tf_harness.Terraform(tmp_path / "tf", tf_harness.target_dir())
    tf.write('data "sigil_trust_bundle" "b" {}\n', tf_harness.provider_block(tf_harness.Broker(addr=b.addr, data_dir=b.data_dir, sigil=Path(b.bin))))
    tf.run("plan")  # works while the broker lives
    b.proc.kill()
    b.proc.wait()

    p, took = timed([sigil_bin, "whoami"], env=b.env())
    assert p.returncode != 0 and took < 2 and b.addr in p.stderr and "refused" in p.stderr.lower(), (took, p.stderr)

    p, took = timed([sigil_bin, "agent", "--oneshot", "--config", str(cfg)])
    assert p.returncode != 0 and took < 2 and b.addr in p.stdout + p.stderr, (took, p.stdout + p.stderr)

    start = time.monotonic()
    p = tf.run("plan", check=False)
    took = time.monotonic() - start
    out = p.stdout + p.stderr
    assert p.returncode != 0 and b.addr in out and "refused" in out.lower(), out
    # Terraform's own start-up is most of this; no connect timeout is waited out.
    assert took < CONNECT + 3, f"terraform plan took {took:.1f}s against a dead broker"
