"""One-shot mode as a CI job runs it: examples/agent/ci-oneshot.sh."""
from __future__ import annotations

import os
import subprocess

import jwt as pyjwt

from agent_harness import read_cert, read_identity, read_jwt, read_key, setup_broker, uri_san

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "agent", "ci-oneshot.sh")


def run_script(sigil_bin, broker, tmp_path, token):
    env = {
        **os.environ,
        "SIGIL": sigil_bin,
        "SIGIL_BROKER": broker.addr,
        "SIGIL_CA_FILE": broker.ca,
        "SIGIL_TOKEN": token,
        "SIGIL_ID": "spiffe://sigil.local/svc/ci-build",
        "OUT": str(tmp_path / "out"),
    }
    return subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True, timeout=120)


def test_ci_script_writes_every_output_and_exits_zero(sigil_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path, uses=1)
    p = run_script(sigil_bin, broker, tmp_path, token)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out"
    cert = read_cert(out / "svid" / "svid.pem")
    assert uri_san(cert) == "spiffe://sigil.local/svc/ci-build"
    read_key(out / "svid" / "svid.key")
    read_cert(out / "svid" / "bundle.pem")
    claims = read_jwt(out / "aws" / "token")
    assert claims["aud"] in ("sts.amazonaws.com", ["sts.amazonaws.com"])
    # PyJWT verifies the token against the broker's published JWKS.
    jwks = pyjwt.PyJWKClient(f"{broker.url}/.well-known/jwks.json", ssl_context=__import__("ssl").create_default_context(cafile=broker.ca))
    key = jwks.get_signing_key_from_jwt((out / "aws" / "token").read_text())
    pyjwt.decode((out / "aws" / "token").read_text(), key.key, algorithms=["RS256", "ES256"], audience="sts.amazonaws.com")
    assert uri_san(read_identity(out / "identity")).endswith("/node1")
    for f in ["svid/svid.pem", "svid/svid.key", "svid/bundle.pem", "aws/token", "identity", "state/identity"]:
        assert (out / f).stat().st_mode & 0o777 == 0o600, f
    assert token not in (out / "agent.yaml").read_text(), "the token stays out of the config file"
    # The identity output works with the admin CLI.
    who = broker.sigil("whoami", identity=str(out / "identity"))
    assert "node1" in who.stdout


def test_ci_script_with_bad_token_exits_nonzero_naming_the_cause(sigil_bin, broker, tmp_path):
    setup_broker(broker, tmp_path)
    p = run_script(sigil_bin, broker, tmp_path, "definitely-not-a-token")
    assert p.returncode != 0
    assert "join with method token rejected by the broker" in p.stderr, p.stderr
    assert "definitely-not-a-token" not in p.stderr, "the secret is never printed"
    assert not (tmp_path / "out" / "svid" / "svid.pem").exists()


def test_ci_script_with_unreachable_broker_exits_nonzero_naming_the_address(sigil_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path)
    broker.stop()
    p = run_script(sigil_bin, broker, tmp_path, token)
    assert p.returncode != 0
    assert broker.addr in p.stderr and "unavailable" in p.stderr.lower(), p.stderr
