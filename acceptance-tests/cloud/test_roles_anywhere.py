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

from cloud_peers import LocalServer, key_pem, make_cert, new_key, pem, require_module

REGION = "us-east-1"
TA = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/6f4a2c1e-0000-4000-8000-000000000001"
PROFILE = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/6f4a2c1e-0000-4000-8000-000000000002"
ROLE = "arn:aws:iam::123456789012:role/sigil-roles-anywhere"
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


# --- a local CreateSession endpoint -------------------------------------------------

class RolesAnywhereEndpoint:
    """Verifies SigV4-X509 requests with `cryptography` and answers like CreateSession."""

    def __init__(self, bundle_pem: bytes, tls):
        from cryptography import x509
        self.x509 = x509
        self.anchors = x509.load_pem_x509_certificates(bundle_pem)
        self.issued = []
        self.refusals = []
        self.server = LocalServer(self.route, tls=tls)

    def refuse(self, why):
        self.refusals.append(why)
        return 403, "application/json", {"message": why}

    def route(self, method, path, headers, body):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

        if method != "POST" or path != "/sessions":
            return 404, "application/json", {"message": "not found"}
        alg, _, rest = headers.get("Authorization", "").partition(" ")
        parts = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
        serial, _, scope = parts.get("Credential", "").partition("/")
        signed = parts.get("SignedHeaders", "").split(";")
        for required in ("host", "x-amz-date", "x-amz-x509"):
            if required not in signed:
                return self.refuse(f"{required} not signed")
        amz_date = headers["X-Amz-Date"]
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        if abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) > 300:
            return self.refuse("request time too skewed")
        if scope != f"{amz_date[:8]}/{REGION}/rolesanywhere/aws4_request":
            return self.refuse(f"bad scope {scope}")
        canon_headers = "".join(f"{h}:{' '.join(headers[h].split())}\n" for h in signed)
        canonical = "\n".join([method, path, "", canon_headers, ";".join(signed), hashlib.sha256(body).hexdigest()])
        sts = "\n".join([alg, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        leaf = self.x509.load_der_x509_certificate(base64.b64decode(headers["X-Amz-X509"]))
        if str(leaf.serial_number) != serial:
            return self.refuse("Credential serial does not match X-Amz-X509")
        key = leaf.public_key()
        sig = bytes.fromhex(parts.get("Signature", ""))
        try:
            if alg == "AWS4-X509-ECDSA-SHA256" and isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, sts.encode(), ec.ECDSA(hashes.SHA256()))
            elif alg == "AWS4-X509-RSA-SHA256" and isinstance(key, rsa.RSAPublicKey):
                key.verify(sig, sts.encode(), padding.PKCS1v15(), hashes.SHA256())
            else:
                return self.refuse(f"algorithm {alg} does not fit the key")
        except InvalidSignature:
            return self.refuse("signature does not verify")
        chained = False
        for ca in self.anchors:
            try:
                leaf.verify_directly_issued_by(ca)
                chained = True
            except Exception:
                pass
        if not chained:
            return self.refuse("Untrusted signing certificate")
        req = json.loads(body)
        if (req["trustAnchorArn"], req["profileArn"], req["roleArn"]) != (TA, PROFILE, ROLE):
            return 400, "application/json", {"message": "wrong ARNs"}
        creds = {
            "accessKeyId": "ASIA" + secrets.token_hex(8).upper(),
            "secretAccessKey": secrets.token_urlsafe(30),
            "sessionToken": secrets.token_urlsafe(60),
            "expiration": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=req["durationSeconds"])).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.issued.append((leaf.serial_number, creds["accessKeyId"]))
        return 201, "application/json", {"credentialSet": [{"credentials": creds, "roleArn": ROLE}], "subjectArn": "arn:aws:rolesanywhere:us-east-1:123456789012:subject/x"}


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
