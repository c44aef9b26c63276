"""`sigil-agent`, the agent alone in a smaller binary: same arguments as `sigil
agent`, same outputs, same errors (docs/agent.md)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from agent_harness import read_cert, read_identity, read_jwt, read_key, setup_broker, uri_san, write_config

SPIFFE_ID = "spiffe://sigil.local/svc/ci-build"
GLOBALS = {"--addr", "--identity", "--output", "--connect-timeout", "--call-timeout"}
FILES = ["svid/svid.pem", "svid/svid.key", "svid/bundle.pem", "aws/token", "identity", "state/identity"]


@pytest.fixture(scope="session")
def agent_bin(sigil_bin) -> str:
    path = Path(sigil_bin).with_name("sigil-agent")
    if not path.exists():
        pytest.fail(f"{path} missing: run `cargo build -p sigil -p sigil-agent` first")
    return str(path)


def long_options(help_text: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z-]*", help_text))


def oneshot_config(broker, tmp_path: Path, name: str, token: str) -> tuple[Path, Path]:
    """The outputs of examples/agent/ci-oneshot.sh, under tmp_path/name."""
    out = tmp_path / name
    out.mkdir()
    cfg = write_config(
        out / "agent.yaml", broker, out / "state", token,
        "identity_ttl: 20m\noutputs:\n"
        f"  - type: x509-svid\n    dir: {out}/svid\n    spiffe_id: {SPIFFE_ID}\n    ttl: 20m\n"
        f"  - type: jwt-svid\n    path: {out}/aws/token\n    audiences: [sts.amazonaws.com]\n    spiffe_id: {SPIFFE_ID}\n    ttl: 15m\n"
        f"  - type: identity\n    path: {out}/identity\n",
    )
    return cfg, out


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def tree(out: Path) -> dict[str, tuple[bool, int]]:
    """Every output path but the versioned directories (names differ per run):
    whether it is a symlink, and the permission bits of what it names."""
    return {
        str(p.relative_to(out)): (p.is_symlink(), p.stat().st_mode & 0o777)
        for p in out.rglob("*")
        if not any(part.startswith("..v") for part in p.relative_to(out).parts)
        and p.relative_to(out).parts not in (("agent.yaml",), ("token",))
    }


def outputs(out: Path) -> dict:
    """What a consumer reads from the outputs: IDs, audiences, the CA bundle."""
    read_key(out / "svid" / "svid.key")
    claims = read_jwt(out / "aws" / "token")
    return {
        "svid": uri_san(read_cert(out / "svid" / "svid.pem")),
        "bundle": (out / "svid" / "bundle.pem").read_bytes(),
        "jwt_sub": claims["sub"],
        "jwt_aud": claims["aud"],
        "identity": uri_san(read_identity(out / "identity")),
        "state_identity": uri_san(read_identity(out / "state" / "identity")),
    }


def test_sigil_agent_help_offers_the_options_of_sigil_agent(sigil_bin, agent_bin):
    slim = run([agent_bin, "--help"])
    full = run([sigil_bin, "agent", "--help"])
    assert slim.returncode == 0, slim.stderr
    assert slim.stdout.startswith("Sigil agent"), slim.stdout
    assert "Usage: sigil-agent [OPTIONS] --config <CONFIG>" in slim.stdout
    # sigil's global client options (--addr, --identity, --output, the timeouts) are
    # accepted but not shown: the agent does not use them (its config names the broker
    # and its broker_timeouts).
    want = long_options(full.stdout) - GLOBALS | {"--version"}
    assert {"--config", "--oneshot", "--check"} <= want
    assert long_options(slim.stdout) == want
    version = run([agent_bin, "--version"])
    assert version.returncode == 0 and version.stdout.startswith("sigil-agent "), version


def test_sigil_agent_accepts_every_sigil_agent_command_line(sigil_bin, agent_bin, broker, tmp_path):
    cfg, _ = oneshot_config(broker, tmp_path, "check", "unused")
    for args in (["--check", "--config", str(cfg)], ["-c", str(cfg), "--check", "--addr", broker.addr, "--output", "json", "--identity", "id", "--connect-timeout", "2s", "--call-timeout", "1m"]):
        full = run([sigil_bin, "agent", *args])
        slim = run([agent_bin, *args])
        assert full.returncode == slim.returncode == 0, (full.stderr, slim.stderr)
        assert slim.stderr == full.stderr == f"{cfg}: valid agent config\n"
    for args in (["--check", "--oneshot", "--config", str(cfg)], ["--config", str(cfg), "--output", "yaml"], ["--check"]):
        full = run([sigil_bin, "agent", *args])
        slim = run([agent_bin, *args])
        assert full.returncode == slim.returncode == 2, (args, full.stderr, slim.stderr)
        assert slim.stderr.splitlines()[0] == full.stderr.splitlines()[0], args


def test_sigil_agent_oneshot_writes_the_same_outputs_as_sigil_agent(sigil_bin, agent_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path, uses=2)
    cfg_full, out_full = oneshot_config(broker, tmp_path, "full", token)
    cfg_slim, out_slim = oneshot_config(broker, tmp_path, "slim", token)

    full = run([sigil_bin, "agent", "--oneshot", "--config", str(cfg_full)])
    slim = run([agent_bin, "--oneshot", "--config", str(cfg_slim)])

    assert full.returncode == 0, full.stderr
    assert slim.returncode == 0, slim.stderr
    assert "agent: all outputs written" in slim.stderr
    files = tree(out_slim)
    assert set(FILES) <= set(files), files
    assert all(files[f][1] == 0o600 for f in FILES), files
    assert files == tree(out_full)
    got = outputs(out_slim)
    assert got["svid"] == SPIFFE_ID
    assert got["identity"].endswith("/node1")
    assert got == outputs(out_full)
    # The identity written by sigil-agent works with the admin CLI.
    assert "node1" in broker.sigil("whoami", identity=str(out_slim / "identity")).stdout


def test_sigil_agent_with_bad_token_fails_like_sigil_agent(sigil_bin, agent_bin, broker, tmp_path):
    setup_broker(broker, tmp_path)
    cfg_full, out_full = oneshot_config(broker, tmp_path, "full", "definitely-not-a-token")
    cfg_slim, out_slim = oneshot_config(broker, tmp_path, "slim", "definitely-not-a-token")

    full = run([sigil_bin, "agent", "--oneshot", "--config", str(cfg_full)])
    slim = run([agent_bin, "--oneshot", "--config", str(cfg_slim)])

    assert slim.returncode == full.returncode != 0
    assert "join with method token rejected by the broker" in slim.stderr, slim.stderr
    assert "definitely-not-a-token" not in slim.stderr, "the secret is never printed"
    last = lambda p: p.stderr.strip().splitlines()[-1].replace(str(out_full), "OUT").replace(str(out_slim), "OUT")  # noqa: E731
    assert last(slim) == last(full)
    assert not (out_slim / "svid" / "svid.pem").exists()
