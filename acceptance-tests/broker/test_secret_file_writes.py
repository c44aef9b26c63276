"""Secret files the broker (dev bootstrap) and the CLI write, with something already
planted at the path: a symlink to another file, or a file an older version (or a
careless copy) left readable by everyone (docs/security.md, "Hardening pass (issue 13)").

A file Sigil writes whole is replaced by a regular 0600 file and the link's target is
never touched. A file Sigil reads back and keeps using (a bound key, its join sequence,
the dev seal key, an AWS file it merges one section into) is never read through a
link: the link is refused, naming the path, and a loose one is narrowed to 0600."""
import os
import subprocess
import time

import pytest

from sigil_harness import Broker
from plants import PLANTS, assert_private_regular_file, assert_read_back_verdict, assert_victim_untouched, mode, plant, victim_file








# ------------------------------------------------------------------ broker dev bootstrap

DEV_SECRETS = ["admin.identity", "tls-ca.pem", "bundle.pem", "mode"]


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_or_loose_file_at_a_dev_bootstrap_secret_is_replaced_not_followed(sigil_bin, tmp_path, how):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    victim = victim_file(tmp_path)
    for name in DEV_SECRETS:
        plant(data / name, how, victim)
    if how == "loose_file":
        plant(data / "seal.key", how, victim, loose_text="44" * 32 + "\n")
    b = Broker(sigil_bin, data).start()
    try:
        # The planted admin.identity existed before the start: wait for the bootstrap to answer.
        deadline = time.time() + 30
        while b.sigil("whoami", check=False).returncode != 0:
            assert time.time() < deadline, b.log.read_text()
            time.sleep(0.1)
        assert_victim_untouched(victim)
        for name in DEV_SECRETS + ["seal.key"]:
            assert_private_regular_file(data / name)
        assert "BEGIN CERTIFICATE" in (data / "tls-ca.pem").read_text()
    finally:
        b.stop()


def test_a_planted_symlink_at_the_dev_seal_key_is_refused_not_read(sigil_bin, tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    victim = victim_file(tmp_path, text="44" * 32 + "\n")
    (data / "seal.key").symlink_to(victim)
    p = subprocess.run([sigil_bin, "server", "--dev", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0, "the broker sealed its CA keys with a key read through a planted link"
    assert f"refusing {data / 'seal.key'}" in p.stderr, p.stderr
    assert_victim_untouched(victim, "44" * 32 + "\n")
    assert os.path.islink(data / "seal.key")


# ------------------------------------------------------------------ sigil join --out

RESOURCES = """
kind: role
name: joiner
allow:
  spiffe_ids: ["/svc/**"]
---
kind: bot
name: edge
roles: [joiner]
---
kind: join_token
name: edge-bound
bot: edge
method: bound_keypair
max_uses: 100
expires_at: {expires}
"""


def apply_resources(broker, tmp_path) -> str:
    """The bot and a bound-keypair token; returns the token's registration secret."""
    f = tmp_path / "resources.yaml"
    f.write_text(RESOURCES.format(expires=int(time.time()) + 3600))
    return broker.sigil("apply", "-f", str(f)).stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_or_loose_file_at_the_join_out_identity_is_replaced_not_followed(broker, tmp_path, how):
    apply_resources(broker, tmp_path)
    tok = tmp_path / "token"
    tok.write_text(broker.sigil("token", "create", "--bot", "edge").stdout.strip())
    out = tmp_path / "out"
    out.mkdir()
    victim = victim_file(tmp_path)
    plant(out / "bot.identity", how, victim)
    broker.sigil("join", "--token-file", str(tok), "--ca-file", broker.ca, "--out", str(out / "bot.identity"))
    assert_victim_untouched(victim)
    assert_private_regular_file(out / "bot.identity")
    assert "PRIVATE KEY" in (out / "bot.identity").read_text()
    broker.sigil("whoami", identity=str(out / "bot.identity"))


def print_public_key(broker, key_file, check=True):
    return broker.sigil("join", "--method", "bound_keypair", "--key-file", str(key_file), "--ca-file", broker.ca,
                        "--out", str(key_file.parent / "unused"), "--print-public-key", check=check)


def test_a_planted_symlink_at_the_cli_bound_key_is_refused_not_read(broker, tmp_path):
    # The link points at a valid key its planter holds: read through, it would become this machine's key.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    their_public = print_public_key(broker, theirs / "bound.key").stdout.strip()
    (theirs / "bound.key").chmod(0o644)
    their_pem = (theirs / "bound.key").read_text()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bound.key").symlink_to(theirs / "bound.key")
    p = print_public_key(broker, mine / "bound.key", check=False)
    assert p.returncode != 0 and their_public not in p.stdout, "the CLI used a key read through a planted link"
    assert f"refusing {mine / 'bound.key'}: it is a symbolic link" in p.stderr, p.stderr
    assert_victim_untouched(theirs / "bound.key", their_pem)


def test_a_loose_cli_bound_key_is_narrowed_to_owner_only(broker, tmp_path):
    key = tmp_path / "bound.key"
    first = print_public_key(broker, key).stdout.strip()
    key.chmod(0o644)
    assert print_public_key(broker, key).stdout.strip() == first
    assert_private_regular_file(key)


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_or_loose_file_at_the_cli_join_sequence(broker, tmp_path, how):
    secret = apply_resources(broker, tmp_path)
    key = tmp_path / "bound.key"
    print_public_key(broker, key)
    seq = tmp_path / "bound.key.sequence"
    victim = victim_file(tmp_path, text="0\n")
    plant(seq, how, victim, loose_text="0\n")
    p = broker.sigil("join", "--method", "bound_keypair", "--token-name", "edge-bound", "--key-file", str(key),
                     "--token", secret, "--ca-file", broker.ca, "--out", str(tmp_path / "bot.identity"), check=False)
    assert_victim_untouched(victim, "0\n")
    assert_read_back_verdict(p, seq, how, "the join sequence was read through a planted link")
    if how != "symlink":
        assert seq.read_text().split()[0] == "1"


# ------------------------------------------------------------------ sigil federation file writers

@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_or_loose_file_at_the_federation_token_file_is_replaced_not_followed(broker, tmp_path, how):
    out = tmp_path / "azure-token"
    victim = victim_file(tmp_path)
    plant(out, how, victim)
    broker.sigil("federation", "azure", "token-file", "--spiffe-id", "spiffe://sigil.local/svc/az", "--out", str(out))
    assert_victim_untouched(victim)
    assert_private_regular_file(out)
    assert out.read_text().count(".") == 2, "not a JWT"


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_at_the_federation_aws_config_is_refused_and_a_loose_one_rewritten_private(broker, tmp_path, how):
    cfg = tmp_path / "aws-config"
    victim = victim_file(tmp_path, text="[profile theirs]\nregion = x\n")
    plant(cfg, how, victim, loose_text="[default]\nregion = eu-west-1\n")
    p = broker.sigil("federation", "aws", "profile", "--config-file", str(cfg), "--profile", "ci",
                     "--role-arn", "arn:aws:iam::123456789012:role/ci", "--token-file", str(tmp_path / "t"), check=False)
    assert_victim_untouched(victim, "[profile theirs]\nregion = x\n")
    # Merging into the link's target would copy another file into this one.
    assert_read_back_verdict(p, cfg, how, "the AWS config was read through a planted link")
    if how != "symlink":
        text = cfg.read_text()
        assert "[default]\nregion = eu-west-1" in text and "[profile ci]" in text, text
