"""Platform-attested joins through the `sigil join` CLI, checked by code we did not write.

- iam: moto's STS/IAM server (signatures enforced) and boto3; the JWT-SVID obtained after
  the join is verified by PyJWT against the broker's JWKS and must name the account and
  user id that boto3 reads from moto.
- tpm: swtpm manufactured by swtpm_setup with an EK certificate; tpm2-tools reads that
  certificate from the TPM's NV index and `cryptography` computes the EK hash the join token
  allows; the TPM performs ActivateCredential on the broker's credential.
"""
import hashlib
import json
import os
import socket
import subprocess
import time

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sigil_harness import JOIN_REFUSED, ROOT, free_port, iam_join_resources, moto_iam_user, require_tool, wait_port


def _apply(broker, tmp_path, text):
    f = tmp_path / "resources.yaml"
    f.write_text(text)
    broker.sigil("apply", "-f", str(f))


def _trust_domain(broker):
    return broker.sigil_json("whoami")["trust_domain"]


def _jwt_svid(broker, identity, spiffe_id):
    token = broker.sigil("svid", "jwt", "--spiffe-id", spiffe_id, "--audience", "x", identity=identity).stdout.strip().splitlines()[-1]
    jwks = json.loads(broker.sigil("bundle", "--format", "jwks").stdout)
    key = jwt.PyJWKSet.from_dict(jwks).keys[0]
    return jwt.decode(token, key=key, audience="x", algorithms=["ES256", "RS256", "EdDSA"])


def test_iam_join_through_the_cli_yields_an_svid_naming_the_aws_caller(broker, moto, tmp_path):
    key, me = moto_iam_user(moto, "ci-runner")
    _apply(broker, tmp_path, iam_join_resources(moto))
    out = tmp_path / "bot.identity"
    env = {**broker.env(), "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    p = subprocess.run([broker.bin, "join", "--method", "iam", "--token-name", "aws-ci", "--sts-endpoint", moto + "/",
                        "--ca-file", broker.ca, "--out", str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    want = f"spiffe://{_trust_domain(broker)}/aws/{me['Account']}/{me['UserId']}"
    claims = _jwt_svid(broker, str(out), want)
    assert claims["sub"] == want

    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    p = subprocess.run([broker.bin, "join", "--method", "iam", "--token-name", "aws-ci", "--sts-endpoint", moto + "/",
                        "--ca-file", broker.ca, "--out", str(tmp_path / "x.identity")], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr
    assert "STS answered HTTP 403" in broker.last_join_denial()


@pytest.fixture
def swtpm(tmp_path):
    for tool in ("swtpm", "swtpm_setup", "swtpm_localca", "tpm2_nvread"):
        require_tool(tool, "apt-get install swtpm swtpm-tools tpm2-tools")
    ca, state = tmp_path / "ca", tmp_path / "tpm"
    ca.mkdir()
    state.mkdir()
    (tmp_path / "localca.conf").write_text(f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n")
    (tmp_path / "localca.options").write_text("--platform-manufacturer Sigil\n--platform-version 2.1\n--platform-model test\n")
    (tmp_path / "setup.conf").write_text(
        f"create_certs_tool = {require_tool('swtpm_localca', 'apt-get install swtpm-tools')}\n"
        f"create_certs_tool_config = {tmp_path / 'localca.conf'}\ncreate_certs_tool_options = {tmp_path / 'localca.options'}\n"
        "active_pcr_banks = sha256\n")
    subprocess.run(["swtpm_setup", "--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate", str(state), "--config", str(tmp_path / "setup.conf")],
                   check=True, capture_output=True)
    while True:  # the swtpm TCTI expects the control channel on port + 1
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            continue
    proc = subprocess.Popen(["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
                             "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                             "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1", "--flags", "not-need-init,startup-clear"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port + 1, proc, "swtpm")
    yield f"swtpm:host=127.0.0.1,port={port}"
    proc.kill()
    proc.wait()


def test_tpm_join_through_the_cli_with_the_ek_hash_computed_by_tpm2_tools_and_cryptography(broker, swtpm, tmp_path):
    ek_der = tmp_path / "ek.der"
    subprocess.run(["tpm2_nvread", "-T", swtpm, "-C", "o", "-o", str(ek_der), "0x01c00002"], check=True, capture_output=True)
    cert = x509.load_der_x509_certificate(ek_der.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ek_hash = hashlib.sha256(spki).hexdigest()
    _apply(broker, tmp_path, f"""
kind: role
name: tpm
allow: {{spiffe_ids: ["/tpm/{{{{join.ek_public_hash}}}}"], audiences: ["x"]}}
---
kind: bot
name: edge
roles: [tpm]
---
kind: join_token
name: edge-tpm
bot: edge
method: tpm
max_uses: 10
expires_at: {int(time.time()) + 600}
allow: [{{ek_public_hash: "{ek_hash}"}}]
""")
    out = tmp_path / "bot.identity"
    broker.sigil("join", "--method", "tpm", "--token-name", "edge-tpm", "--tcti", swtpm, "--ca-file", broker.ca, "--out", str(out))
    want = f"spiffe://{_trust_domain(broker)}/tpm/{ek_hash}"
    assert _jwt_svid(broker, str(out), want)["sub"] == want
