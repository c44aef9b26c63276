"""`sigil server --config`: safe defaults (no seal key, no start) and the ES256 option."""
import subprocess

import jwt
import pytest
import requests

from sigil_harness import Broker, free_port


def write_config(tmp_path, port, **extra):
    lines = [
        "trust_domain: example.org",
        f"listen: 127.0.0.1:{port}",
        f"data_dir: {tmp_path / 'data'}",
    ] + [f"{k}: {v}" for k, v in extra.items()]
    cfg = tmp_path / "server.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def test_broker_refuses_to_start_without_a_seal_key(sigil_bin, tmp_path):
    cfg = write_config(tmp_path, free_port())
    env = {"PATH": "/usr/bin:/bin"}
    p = subprocess.run([sigil_bin, "server", "--config", str(cfg)], capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode != 0
    assert "no seal key" in p.stderr and "SIGIL_SEAL_KEY" in p.stderr
    assert not (tmp_path / "data" / "sigil.db").exists()


def test_unknown_config_key_is_an_error(sigil_bin, tmp_path):
    cfg = write_config(tmp_path, free_port(), jwt_algorithm="ES256")
    p = subprocess.run([sigil_bin, "server", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "jwt_algorithm" in p.stderr


def test_es256_issuer_from_config_verifies_with_pyjwt(sigil_bin, tmp_path):
    port = free_port()
    seal = tmp_path / "seal.key"
    seal.write_text("11" * 32)
    seal.chmod(0o600)
    cfg = write_config(tmp_path, port, seal_key_file=str(seal), jwt_alg="ec-p256", x509_ca_alg="rsa-2048")
    b = Broker(sigil_bin, tmp_path / "data", port=port, config=cfg).start()
    try:
        doc = requests.get(f"{b.url}/.well-known/openid-configuration", verify=b.ca, timeout=10).json()
        assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
        keys = requests.get(doc["jwks_uri"], verify=b.ca, timeout=10).json()["keys"]
        assert [k["kty"] for k in keys] == ["EC"] and keys[0]["alg"] == "ES256" and keys[0]["use"] == "sig"
        token = b.sigil("svid", "jwt", "--spiffe-id", "spiffe://example.org/x", "--audience", "aud1").stdout.strip()
        claims = jwt.decode(token, key=jwt.PyJWK(keys[0]), algorithms=["ES256"], audience="aud1", issuer=doc["issuer"])
        assert claims["sub"] == "spiffe://example.org/x"
    finally:
        b.stop()
    # With another seal key the same data cannot be opened: the broker refuses to start.
    seal.write_text("22" * 32)
    p = subprocess.run([sigil_bin, "server", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "wrong seal key" in p.stderr
