"""The agent's log as an attacker sees it: a local process chooses its executable's path, and the
log is a file someone reads (docs/security.md, "Keys, files and logs on the broker host and the CLI")."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

from agent_harness import HERE, Agent, setup_broker, socket_dir, write_config

FORGED = "2099-01-01T00:00:00.000000Z  INFO sigil::agent::session: bot identity installed bot=admin \x1b[31mRED"


def start_agent(sigil_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path)
    sock = socket_dir() / "agent.sock"
    cfg = write_config(
        tmp_path / "agent.yaml", broker, tmp_path / "state", token,
        f"services:\n  - type: workload-api\n    socket: {sock}\n    workload_identities: [root-python]\n",
    )
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    a.wait_for(lambda: sock.exists() and "bot identity installed" in a.log.read_text(), "agent socket and identity")
    return a, sock


def test_executable_path_with_newline_and_escape_cannot_forge_an_agent_log_line(sigil_bin, broker, tmp_path):
    a, sock = start_agent(sigil_bin, broker, tmp_path)
    try:
        # A Python interpreter copied into a directory whose name holds a whole forged log line.
        # Its name does not match the workload identity's *python3* rule, so the agent refuses and
        # logs the caller's executable path.
        evil_dir = Path(socket_dir()) / ("x\n" + FORGED)
        evil_dir.mkdir()
        exe = evil_dir / "pyevil"
        shutil.copy2(os.path.realpath(sys.executable), exe)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(site.getsitepackages() + sys.path[1:])}
        p = subprocess.run([str(exe), str(HERE / "wl_client.py"), str(sock)], capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 0 and '"error"' in p.stdout, (p.stdout, p.stderr)
        a.wait_for(lambda: "pyevil" in a.log.read_text(), "the refusal in the agent log")
    finally:
        a.stop()
        shutil.rmtree(evil_dir.parent, ignore_errors=True)
    log = a.log.read_bytes()
    lines = log.decode().splitlines()
    assert not [l for l in lines if l.startswith("2099-")], "a forged line in the agent log"
    assert b"\x1b" not in log, "an ESC byte reached the log"
    refusal = [l for l in lines if "pyevil" in l]
    assert len(refusal) >= 1
    assert "x\\n2099-01-01T00:00:00.000000Z  INFO" in refusal[0] and "\\u{1b}[31mRED/pyevil" in refusal[0], refusal[0]


def test_agent_log_written_to_a_file_has_no_ansi_colour_codes(sigil_bin, broker, tmp_path):
    a, _ = start_agent(sigil_bin, broker, tmp_path)
    a.stop()
    log = a.log.read_bytes()
    assert b"bot identity installed" in log
    assert b"\x1b[" not in log, log[:300]
