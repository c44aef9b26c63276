"""IAM Roles Anywhere: Sigil's SigV4-X509 signing against an independent
implementation (the PyPI package iam-rolesanywhere-session, signing with
`cryptography`), and `sigil aws credential-process` read by boto3 from an AWS
config file, against a local CreateSession endpoint that verifies the X.509
signature and the chain to the broker's bundle with `cryptography`."""
import base64
import datetime as dt
import hashlib
import json
import os
import secrets

import pytest

from cloud_peers import RA_PROFILE as PROFILE, RA_REGION as REGION, RA_ROLE as ROLE, RA_TA as TA
from cloud_peers import RolesAnywhereEndpoint, key_pem, make_cert, new_key, pem, require_module

FIXED = "20240102T030405Z"
ENDPOINT = "https://rolesanywhere.us-east-1.amazonaws.com"


def their_signature(monkeypatch, cert_pem: str, key_pem_text: str, body: str, url: str = ENDPOINT + "/sessions"):
    """Signs with iam_rolesanywhere_session at the fixed time; returns what it computed."""
    mod = require_module("iam_rolesanywhere_session.iam_rolesanywhere_session", "iam-rolesanywhere-session")
    awsrequest = require_module("botocore.awsrequest", "boto3")

    class FixedClock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)

    monkeypatch.setattr(mod, "datetime", FixedClock)
    signer = mod.IAMRolesAnywhereSigner(certificate=cert_pem.encode(), private_key=key_pem_text.encode(), region=REGION)
    seen = {}
    orig_canonical, orig_sts = signer.canonical_request, signer.string_to_sign

    def canonical(req):
        seen["canonical_request"] = orig_canonical(req)
        return seen["canonical_request"]

    def sts(req, c):
        seen["string_to_sign"] = orig_sts(req, c)
        return seen["string_to_sign"]

    signer.canonical_request, signer.string_to_sign = canonical, sts
    req = awsrequest.AWSRequest(method="POST", url=url, data=body)
    signer.add_auth(req)
    seen["authorization"] = req.headers["Authorization"]
    seen["algorithm"] = signer.algorithm
    return seen


def our_signature(broker, cert_file, key_file, body_file, tmp_path):
    out = broker.sigil(
        "aws", "sign-create-session", "--certificate", str(cert_file), "--private-key", str(key_file),
        "--trust-anchor-arn", TA, "--profile-arn", PROFILE, "--role-arn", ROLE, "--region", REGION,
        "--time", FIXED, "--body-file", str(body_file),
    ).stdout
    return json.loads(out)


def session_body() -> str:
    # Exactly the body iam-rolesanywhere-session sends (json.dumps with default separators).
    return json.dumps({"durationSeconds": 3600, "profileArn": PROFILE, "roleArn": ROLE, "trustAnchorArn": TA})


def test_rsa_signature_equals_iam_rolesanywhere_session(broker, monkeypatch, tmp_path):
    ca_key = new_key("ec")
    ca = make_cert("Test RA CA", ca_key, ca=True)
    leaf_key = new_key("rsa")
    leaf = make_cert("rsa-workload", leaf_key, ca, ca_key, ca=False, serial=0x1F2E3D4C5B6A7988, uri_sans=("spiffe://sigil.local/rsa",))
    cert_file, key_file, body_file = tmp_path / "rsa.pem", tmp_path / "rsa.key", tmp_path / "body.json"
    cert_file.write_text(pem(leaf))
    key_file.write_text(key_pem(leaf_key))
    body_file.write_text(session_body())

    ours = our_signature(broker, cert_file, key_file, body_file, tmp_path)
    theirs = their_signature(monkeypatch, pem(leaf), key_pem(leaf_key), session_body())

    assert ours["algorithm"] == theirs["algorithm"] == "AWS4-X509-RSA-SHA256"
    assert ours["canonical_request"] == theirs["canonical_request"]
    assert ours["string_to_sign"] == theirs["string_to_sign"]
    assert ours["headers"]["Authorization"] == theirs["authorization"], "PKCS#1 v1.5 is deterministic: same bytes"
    assert f"Credential={0x1F2E3D4C5B6A7988}/20240102/us-east-1/rolesanywhere/aws4_request" in ours["headers"]["Authorization"]


def test_ecdsa_signature_over_a_broker_svid_verifies_with_cryptography(broker, monkeypatch, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    out = tmp_path / "svid"
    broker.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/ra/ecdsa", "--out", str(out))
    body_file = tmp_path / "body.json"
    body_file.write_text(session_body())
    ours = our_signature(broker, out / "svid.pem", out / "svid.key", body_file, tmp_path)
    leaf = x509.load_pem_x509_certificate((out / "svid.pem").read_bytes())
    assert ours["algorithm"] == "AWS4-X509-ECDSA-SHA256"
    assert ours["serial"] == str(leaf.serial_number)
    # The independent signer computes the same canonical request and string to sign for this certificate.
    theirs = their_signature(monkeypatch, (out / "svid.pem").read_text(), (out / "svid.key").read_text(), session_body())
    assert ours["canonical_request"] == theirs["canonical_request"]
    assert ours["string_to_sign"] == theirs["string_to_sign"]
    # And `cryptography` accepts our DER ECDSA signature with the leaf's public key.
    leaf.public_key().verify(bytes.fromhex(ours["signature"]), ours["string_to_sign"].encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(Exception):
        leaf.public_key().verify(bytes.fromhex(ours["signature"]), b"another string", ec.ECDSA(hashes.SHA256()))


@pytest.fixture
def ra_svid(broker, tmp_path):
    out = tmp_path / "svid"
    broker.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/ra/app", "--out", str(out))
    return out


@pytest.fixture
def ra_endpoint(ra_svid, pki):
    e = RolesAnywhereEndpoint((ra_svid / "bundle.pem").read_bytes(), pki.tls)
    yield e
    e.server.stop()


def credential_process_line(broker, svid, endpoint, pki):
    return " ".join([
        broker.bin, "aws", "credential-process", "--certificate", str(svid / "svid.pem"), "--private-key", str(svid / "svid.key"),
        "--trust-anchor-arn", TA, "--profile-arn", PROFILE, "--role-arn", ROLE, "--region", REGION,
        "--endpoint", endpoint.server.url, "--ca-file", str(pki.ca_file),
    ])


def test_boto3_reads_credential_process_json_from_roles_anywhere(broker, ra_svid, ra_endpoint, pki, monkeypatch, tmp_path):
    boto3 = require_module("boto3", "boto3")
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    config = tmp_path / "aws-config"
    config.write_text(f"[profile ra]\nregion = {REGION}\ncredential_process = {credential_process_line(broker, ra_svid, ra_endpoint, pki)}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    frozen = boto3.session.Session(profile_name="ra").get_credentials().get_frozen_credentials()
    assert ra_endpoint.refusals == []
    assert len(ra_endpoint.issued) == 1
    serial, access_key = ra_endpoint.issued[0]
    assert frozen.access_key == access_key and frozen.secret_key and frozen.token
    from cryptography import x509
    assert serial == x509.load_pem_x509_certificate((ra_svid / "svid.pem").read_bytes()).serial_number


def test_certificate_outside_the_trust_anchor_is_refused(broker, ra_endpoint, pki, monkeypatch, tmp_path):
    boto3 = require_module("boto3", "boto3")
    botocore_exc = require_module("botocore.exceptions", "boto3")
    key = new_key("ec")
    rogue_ca_key = new_key("ec")
    rogue_ca = make_cert("Rogue CA", rogue_ca_key, ca=True)
    leaf = make_cert("rogue", key, rogue_ca, rogue_ca_key, ca=False, uri_sans=("spiffe://sigil.local/ra/app",))
    d = tmp_path / "rogue"
    d.mkdir()
    (d / "svid.pem").write_text(pem(leaf))
    (d / "svid.key").write_text(key_pem(key))
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    config = tmp_path / "aws-config"
    config.write_text(f"[profile ra]\nregion = {REGION}\ncredential_process = {credential_process_line(broker, d, ra_endpoint, pki)}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    with pytest.raises(botocore_exc.CredentialRetrievalError) as e:
        boto3.session.Session(profile_name="ra").get_credentials().get_frozen_credentials()
    assert "Untrusted signing certificate" in str(e.value) and "trust anchor" in str(e.value)
    assert ra_endpoint.refusals == ["Untrusted signing certificate"] and ra_endpoint.issued == []


def test_credential_process_can_also_refresh_a_credentials_file(broker, ra_svid, ra_endpoint, pki, tmp_path):
    creds = tmp_path / "credentials"
    line = credential_process_line(broker, ra_svid, ra_endpoint, pki).split(" ")[1:]
    out = broker.sigil(*line, "--credentials-file", str(creds), "--profile", "ra").stdout
    doc = json.loads(out)
    text = creds.read_text()
    assert f"aws_access_key_id = {doc['AccessKeyId']}" in text and "[ra]" in text
