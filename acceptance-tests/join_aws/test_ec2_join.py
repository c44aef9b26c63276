"""The `ec2` join end to end, with a document the test signs itself.

The test plays AWS: it makes an RSA-2048 signing certificate with openssl,
signs an instance identity document with `openssl cms -sign -nodetach -nocerts
-binary -md sha256 -stream -indef -outform DER` (a SignedData embedding the
document, no certificate, indefinite-length BER, as IMDS's `rsa2048` is), and
serves both through the IMDSv2 stand-in. Before Sigil sees it, openssl verifies
the signature the way AWS's documentation tells customers to
(`openssl smime -verify -in rsa2048 -inform PEM -certfile certificate -noverify`).
The join token trusts that certificate through `config.signing_certificates`.

Proves: the real `sigil agent --oneshot` and `sigil join --method ec2` join and
the SVID names the account and instance; a document with one byte changed
(signature kept) and a document of another account are refused; a second join
of one instance (fresh state) is refused, also after a broker restart, and
accepted once the token sets `allow_rejoin = "true"`.
"""
import base64
import json
import os
import subprocess
import time

import jwt
import pytest

from imds_standin import Imds
from sigil_harness import JOIN_REFUSED, ROOT, require_tool

ACCOUNT = "111122223333"


def _document(instance_id, account=ACCOUNT, region="us-test-1"):
    """An identity document shaped like IMDS's (pretty-printed JSON, AWS's field names)."""
    return json.dumps({
        "accountId": account,
        "architecture": "x86_64",
        "availabilityZone": region + "a",
        "billingProducts": None,
        "devpayProductCodes": None,
        "imageId": "ami-0123456789abcdef0",
        "instanceId": instance_id,
        "instanceType": "t3.micro",
        "kernelId": None,
        "marketplaceProductCodes": None,
        "pendingTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 300)),
        "privateIp": "10.0.0.12",
        "ramdiskId": None,
        "region": region,
        "version": "2017-09-30",
    }, indent=2).encode()


class Signer:
    """An RSA-2048 signing certificate (self-signed, as AWS's regional ones are) and its key."""

    def __init__(self, d):
        self.openssl = require_tool("openssl", "apt-get install -y openssl")
        d.mkdir(parents=True, exist_ok=True)
        self.d, self.key, self.cert = d, d / "signer.key", d / "signer.pem"
        subprocess.run([self.openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key), "-out", str(self.cert),
                        "-days", "30", "-subj", "/C=US/O=Sigil acceptance test EC2 signer"], check=True, capture_output=True)

    def sign(self, document: bytes) -> str:
        """The `rsa2048` text IMDS would serve: base64 of the BER SignedData, in 64-column lines."""
        (self.d / "doc").write_bytes(document)
        der = subprocess.run([self.openssl, "cms", "-sign", "-nodetach", "-nocerts", "-binary", "-md", "sha256", "-stream", "-indef",
                              "-outform", "DER", "-in", str(self.d / "doc"), "-signer", str(self.cert), "-inkey", str(self.key)],
                             check=True, capture_output=True).stdout
        b64 = base64.b64encode(der).decode()
        return "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    return Signer(tmp_path_factory.mktemp("ec2-signer"))


def _apply(broker, tmp_path, signer, allow_rejoin=None):
    config = {"signing_certificates": signer.cert.read_text()}
    if allow_rejoin is not None:
        config["allow_rejoin"] = allow_rejoin
    (tmp_path / "ec2.yaml").write_text(f"""
kind: role
name: ec2
allow: {{spiffe_ids: ["/ec2/{{{{join.aws_account}}}}/{{{{join.instance_id}}}}"], audiences: ["x"]}}
---
kind: bot
name: fleet
roles: [ec2]
---
kind: join_token
name: ec2-fleet
bot: fleet
method: ec2
max_uses: 50
expires_at: {int(time.time()) + 900}
allow: [{{aws_account: "{ACCOUNT}", aws_region: "us-test-*"}}]
config: {json.dumps(config)}
""")
    broker.sigil("apply", "-f", str(tmp_path / "ec2.yaml"))


def _env():
    """No inherited AWS settings: the agent must read only the stand-in it is pointed at."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def _agent(broker, tmp_path, imds, name):
    """`sigil agent --oneshot` with a fresh state dir, writing a JWT-SVID; returns (process, svid path, spiffe id)."""
    d = tmp_path / name
    d.mkdir()
    td = broker.sigil_json("whoami")["trust_domain"]
    doc = json.loads(imds.document)
    want = f"spiffe://{td}/ec2/{doc['accountId']}/{doc['instanceId']}"
    cfg = d / "agent.yaml"
    cfg.write_text(
        f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {d / 'state'}\n"
        f"join: {{method: ec2, token_name: ec2-fleet, metadata_url: '{imds.url}'}}\n"
        f"outputs:\n  - type: jwt-svid\n    path: {d / 'jwt'}\n    audiences: [x]\n    spiffe_id: {want}\n"
    )
    p = subprocess.run([broker.bin, "agent", "--oneshot", "--config", str(cfg)], env=_env(), capture_output=True, text=True, timeout=60)
    return p, d / "jwt", want


def _claims(broker, token):
    jwks = json.loads(broker.sigil("bundle", "--format", "jwks").stdout)
    return jwt.decode(token, key=jwt.PyJWKSet.from_dict(jwks).keys[0], audience="x", algorithms=["ES256", "RS256", "EdDSA"])


def _join_cli(broker, tmp_path, imds, name):
    out = tmp_path / f"{name}.identity"
    p = subprocess.run([broker.bin, "join", "--method", "ec2", "--token-name", "ec2-fleet", "--metadata-url", imds.url,
                        "--ca-file", broker.ca, "--out", str(out)], env={**_env(), "SIGIL_ADDR": broker.addr},
                       capture_output=True, text=True, timeout=60)
    return p, out


def test_openssl_verifies_the_test_signature_as_aws_documents_for_rsa2048(signer, tmp_path):
    doc = _document("i-0aaaaaaaaaaaaaaa0")
    sig = signer.sign(doc)
    # AWS's documented check: PEM armour around the IMDS text, smime -verify -noverify with the regional certificate.
    (tmp_path / "rsa2048").write_text(f"-----BEGIN PKCS7-----\n{sig}\n-----END PKCS7-----\n")
    p = subprocess.run([signer.openssl, "smime", "-verify", "-in", str(tmp_path / "rsa2048"), "-inform", "PEM",
                        "-certfile", str(signer.cert), "-noverify"], capture_output=True)
    assert p.returncode == 0 and p.stdout == doc, p.stderr
    # And the CMS form on the raw DER: the signed content is the document, byte for byte.
    (tmp_path / "rsa2048.der").write_bytes(base64.b64decode(sig))
    p = subprocess.run([signer.openssl, "cms", "-verify", "-noverify", "-binary", "-certfile", str(signer.cert), "-inform", "DER",
                        "-in", str(tmp_path / "rsa2048.der")], capture_output=True)
    assert p.returncode == 0 and p.stdout == doc, p.stderr
    # Indefinite-length BER, as AWS streams it: the outer SEQUENCE has no length.
    assert base64.b64decode(sig)[:2] == b"\x30\x80"
    # Another key's certificate does not verify it.
    other = Signer(tmp_path / "other")
    p = subprocess.run([signer.openssl, "smime", "-verify", "-in", str(tmp_path / "rsa2048"), "-inform", "PEM",
                        "-certfile", str(other.cert), "-noverify"], capture_output=True)
    assert p.returncode != 0


def test_agent_joins_once_per_instance_the_binding_survives_a_restart_and_allow_rejoin_rebinds(broker, signer, tmp_path):
    _apply(broker, tmp_path, signer)
    doc = _document("i-0123456789abcdef0")
    imds = Imds(document=doc, rsa2048=signer.sign(doc))
    try:
        p, svid, want = _agent(broker, tmp_path, imds, "first")
        assert p.returncode == 0, p.stderr
        assert _claims(broker, svid.read_text())["sub"] == want
        assert imds.count("PUT", "/latest/api/token") >= 1
        assert imds.count("GET", "/latest/dynamic/instance-identity/document") >= 1
        assert imds.count("GET", "/latest/dynamic/instance-identity/rsa2048") >= 1
        [inst] = broker.sigil_json("bot", "instance", "list", "--bot", "fleet")
        attrs = json.dumps(inst)
        for v in (ACCOUNT, "i-0123456789abcdef0", "us-test-1", "t3.micro", "ami-0123456789abcdef0"):
            assert v in attrs, inst

        # The same document again, from a fresh state dir: a copy of the document, refused.
        p, _, _ = _agent(broker, tmp_path, imds, "replay")
        assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr
        assert "already" in broker.last_join_denial()

        # The binding is stored: still refused after the broker restarts.
        broker.stop()
        broker.start()
        p, _, _ = _agent(broker, tmp_path, imds, "after-restart")
        assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr
        assert len(broker.sigil_json("bot", "instance", "list", "--bot", "fleet")) == 1

        # A join token that allows rejoining, made anew (deleted, then applied: the instance
        # binding belongs to the bot, not the token, and stays): the instance joins again, a
        # second bot instance.
        broker.sigil("token", "delete", "ec2-fleet")
        _apply(broker, tmp_path, signer, allow_rejoin="true")
        p, svid, want = _agent(broker, tmp_path, imds, "rejoin")
        assert p.returncode == 0, p.stderr
        assert _claims(broker, svid.read_text())["sub"] == want
        assert len(broker.sigil_json("bot", "instance", "list", "--bot", "fleet")) == 2
    finally:
        imds.close()


def test_sigil_join_cli_joins_and_tampered_or_foreign_documents_are_refused(broker, signer, tmp_path):
    _apply(broker, tmp_path, signer)
    td = broker.sigil_json("whoami")["trust_domain"]

    doc = _document("i-0cccccccccccccccc")
    imds = Imds(document=doc, rsa2048=signer.sign(doc))
    try:
        p, identity = _join_cli(broker, tmp_path, imds, "cli")
        assert p.returncode == 0, p.stderr
        want = f"spiffe://{td}/ec2/{ACCOUNT}/i-0cccccccccccccccc"
        out = broker.sigil("svid", "jwt", "--spiffe-id", want, "--audience", "x", identity=str(identity)).stdout.strip().splitlines()[-1]
        assert _claims(broker, out)["sub"] == want
    finally:
        imds.close()

    # One byte of the document changed, the signature kept (as a copier editing the instance id would).
    doc = _document("i-0dddddddddddddddd")
    sig = signer.sign(doc)
    tampered = doc.replace(b"i-0dddddddddddddddd", b"i-0ddddddddddddddde")
    assert sum(a != b for a, b in zip(doc, tampered)) == 1
    imds = Imds(document=tampered, rsa2048=sig)
    try:
        p, _ = _join_cli(broker, tmp_path, imds, "tampered")
        assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr
        assert "signature" in broker.last_join_denial() or "not the document" in broker.last_join_denial()
    finally:
        imds.close()

    # Properly signed, but for an account the rule does not allow.
    doc = _document("i-0eeeeeeeeeeeeeeee", account="444455556666")
    imds = Imds(document=doc, rsa2048=signer.sign(doc))
    try:
        p, _ = _join_cli(broker, tmp_path, imds, "foreign")
        assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr
        assert "aws_account" in broker.last_join_denial()
    finally:
        imds.close()
    # Neither refusal created an instance: only the CLI join's.
    assert len(broker.sigil_json("bot", "instance", "list", "--bot", "fleet")) == 1


def test_a_join_token_without_certificates_trusts_only_the_shipped_aws_ones(broker, signer, tmp_path):
    # The example applies as is (no certificate to paste: the broker ships AWS's).
    broker.sigil("apply", "-f", str(ROOT / "examples" / "join" / "ec2.yaml"))
    broker.sigil("token", "delete", "ec2-fleet")
    (tmp_path / "aws.yaml").write_text(f"""
kind: join_token
name: ec2-fleet
bot: fleet
method: ec2
max_uses: 5
expires_at: {int(time.time()) + 900}
allow: [{{aws_account: "{ACCOUNT}"}}]
""")
    broker.sigil("apply", "-f", str(tmp_path / "aws.yaml"))
    # A document for us-east-1 signed by the test's key: us-east-1's AWS certificate does not verify it.
    doc = _document("i-0fffffffffffffff0", region="us-east-1")
    imds = Imds(document=doc, rsa2048=signer.sign(doc))
    try:
        p, _ = _join_cli(broker, tmp_path, imds, "not-aws")
        assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr
        assert "not signed by any of the certificates" in broker.last_join_denial()
    finally:
        imds.close()
