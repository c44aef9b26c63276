"""Secret files the agent writes and keeps, with something already planted at the path:
a symlink to another file, or a file left readable by everyone (docs/security.md,
"Hardening pass (issue 13)").

Outputs are replaced, never written through the link: single-file outputs become a
regular 0600 file; the names of an x509-svid directory become the agent's own links
into its `..data` generation (docs/agent.md), whose files are regular and 0600. The
bound key and its join sequence are read back: a link there is refused (naming the
path), never read; a loose key is narrowed to 0600."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from agent_harness import setup_broker, write_config
from plants import PLANTS, assert_private_regular_file, assert_read_back_verdict, assert_victim_untouched, mode, plant, victim_file








def oneshot(sigil_bin, cfg):
    return subprocess.run([sigil_bin, "agent", "--oneshot", "--config", str(cfg)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SIGIL_LOG": "info"})


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_or_loose_file_at_an_agent_output_is_replaced_not_followed(sigil_bin, broker, tmp_path, how):
    token = setup_broker(broker, tmp_path)
    victim = victim_file(tmp_path)
    svid, jwt, ident = tmp_path / "out" / "svid", tmp_path / "out" / "jwt", tmp_path / "out" / "bot.identity"
    for p in [svid / "svid.key", svid / "svid.pem", svid / "bundle.pem", jwt, ident]:
        plant(p, how, victim)
    (tmp_path / "out").chmod(0o700)
    body = (f"outputs:\n"
            f"  - type: x509-svid\n    dir: {svid}\n    spiffe_id: spiffe://sigil.local/svc/app\n"
            f"  - type: jwt-svid\n    path: {jwt}\n    audiences: [a]\n    spiffe_id: spiffe://sigil.local/svc/app\n"
            f"  - type: identity\n    path: {ident}\n")
    p = oneshot(sigil_bin, write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token, body))
    assert p.returncode == 0, p.stderr
    assert_victim_untouched(victim)
    for f in [jwt, ident]:
        assert_private_regular_file(f)
    assert jwt.read_text().count(".") == 2
    for name in ["svid.key", "svid.pem", "bundle.pem"]:
        assert os.readlink(svid / name) == f"..data/{name}", name
        real = Path(os.path.realpath(svid / name))
        assert real.parent.parent == svid, real
        assert_private_regular_file(real)
    assert "PRIVATE KEY" in (svid / "svid.key").read_text()


BOUND_TOKEN = """
kind: join_token
name: edge-bound
bot: node1
method: bound_keypair
max_uses: 100
expires_at: {expires}
"""


def bound_keypair_agent(broker, tmp_path) -> Path:
    """An agent config joining with a bound key kept in tmp_path/state; returns the config path."""
    setup_broker(broker, tmp_path)
    f = tmp_path / "token.yaml"
    f.write_text(BOUND_TOKEN.format(expires=int(time.time()) + 3600))
    secret = broker.sigil("apply", "-f", str(f)).stdout.strip().splitlines()[-1]
    reg = tmp_path / "registration"
    reg.write_text(secret)
    reg.chmod(0o600)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {tmp_path / 'state'}\n"
        f"join: {{method: bound_keypair, token_name: edge-bound, registration_secret_file: {reg}}}\n"
        f"outputs:\n  - type: jwt-svid\n    path: {tmp_path / 'jwt'}\n    audiences: [a]\n"
        f"    spiffe_id: spiffe://sigil.local/svc/app\n")
    return cfg


def someone_elses_key(sigil_bin, broker, tmp_path) -> Path:
    """A valid bound key its planter holds (made with the CLI), mode 0644."""
    d = tmp_path / "theirs"
    d.mkdir()
    subprocess.run([sigil_bin, "join", "--method", "bound_keypair", "--key-file", str(d / "bound.key"), "--ca-file", broker.ca,
                    "--out", str(d / "unused"), "--print-public-key"], check=True, capture_output=True, timeout=60)
    (d / "bound.key").chmod(0o644)
    return d / "bound.key"


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_at_the_agent_bound_key_is_refused_and_a_loose_one_narrowed(sigil_bin, broker, tmp_path, how):
    cfg = bound_keypair_agent(broker, tmp_path)
    theirs = someone_elses_key(sigil_bin, broker, tmp_path)
    their_pem = theirs.read_text()
    key = tmp_path / "state" / "bound_keypair.key"
    if how == "symlink":
        plant(key, how, theirs)
    else:
        plant(key, how, theirs, loose_text=their_pem)
    (tmp_path / "state").chmod(0o700)
    p = oneshot(sigil_bin, cfg)
    assert_victim_untouched(theirs, their_pem)
    assert_read_back_verdict(p, key, how, "the agent joined with a key read through a planted link")
    if how != "symlink":
        assert key.read_text() == their_pem


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_at_the_agent_join_sequence_is_refused_and_a_loose_one_rewritten_private(sigil_bin, broker, tmp_path, how):
    cfg = bound_keypair_agent(broker, tmp_path)
    seq = tmp_path / "state" / "bound_keypair.sequence"
    # The key first (a new key clears its sequence file), then the plant.
    (tmp_path / "state").mkdir(mode=0o700)
    subprocess.run([sigil_bin, "join", "--method", "bound_keypair", "--key-file", str(tmp_path / "state" / "bound_keypair.key"),
                    "--ca-file", broker.ca, "--out", str(tmp_path / "unused"), "--print-public-key"], check=True,
                   capture_output=True, timeout=60)
    victim = victim_file(tmp_path, text="0\n")
    plant(seq, how, victim, loose_text="0\n")
    p = oneshot(sigil_bin, cfg)
    assert_victim_untouched(victim, "0\n")
    assert_read_back_verdict(p, seq, how, "the join sequence was read through a planted link")
    if how != "symlink":
        assert seq.read_text().split()[0] == "1"
