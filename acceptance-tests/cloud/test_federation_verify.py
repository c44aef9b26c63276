"""`sigil federation verify aws|azure|gcp|aws-roles-anywhere` flags each cloud rule
when it is broken on purpose, and says how to fix it. Issuers are real brokers
(dev mode, and a config-file broker signing ES256) and, for token shapes a broker
never issues, a small HTTPS issuer signing with PyJWT."""
import json
import time

import jwt
import pytest

from cloud_peers import LocalServer, key_pem, make_cert, new_key, pem
from sigil_harness import Broker, free_port


def verify(broker, *args):
    p = broker.sigil("--output", "json", "federation", "verify", *args, check=False)
    assert p.stdout, p.stderr
    findings = {f["rule"]: f for f in json.loads(p.stdout)["findings"]}
    return p, findings


def failing(findings):
    return {r for r, f in findings.items() if f["level"] == "fail"}


def assert_flagged(p, findings, rule, fix_words):
    assert p.returncode != 0, "a broken rule must fail the command"
    assert rule in failing(findings), f"{rule} not flagged: {findings}"
    fix = findings[rule]["fix"]
    assert all(w in fix for w in fix_words), f"fix for {rule} should mention {fix_words}: {fix}"
    assert "would refuse" in p.stderr


# --- live brokers ---------------------------------------------------------------------

def test_aws_flags_an_issuer_with_a_port_and_nothing_else(broker):
    p, f = verify(broker, "aws", "--spiffe-id", "spiffe://sigil.local/ci", "--ca-file", broker.ca)
    assert failing(f) == {"aws.issuer-no-port"}
    assert_flagged(p, f, "aws.issuer-no-port", ["443", "public_url"])
    assert f["token.signature"]["level"] == "pass" and f["aws.token-length"]["level"] == "pass"
    assert f["issuer.public-tls"]["level"] == "warn"


def test_gcp_accepts_a_dev_broker_token(broker):
    aud = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/s"
    p, f = verify(broker, "gcp", "--spiffe-id", "spiffe://sigil.local/ci", "--audience", aud, "--ca-file", broker.ca)
    assert p.returncode == 0 and failing(f) == set()
    assert {"gcp.kid", "gcp.alg", "gcp.lifetime", "gcp.subject-length", "gcp.jwks-kid"} <= set(f)


def test_gcp_flags_a_subject_longer_than_127_bytes(broker):
    long_id = "spiffe://sigil.local/" + "/".join(["segment-" + str(i).zfill(3) for i in range(12)])
    assert len(long_id) > 127
    p, f = verify(broker, "gcp", "--spiffe-id", long_id, "--audience", "gcp-aud", "--ca-file", broker.ca)
    assert_flagged(p, f, "gcp.subject-length", ["google.subject"])
    assert failing(f) == {"gcp.subject-length"}


@pytest.fixture
def es256_broker(sigil_bin, tmp_path):
    port = free_port()
    seal = tmp_path / "seal.key"
    seal.write_text("33" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {tmp_path / 'es'}\nseal_key_file: {seal}\njwt_alg: ec-p256\n")
    b = Broker(sigil_bin, tmp_path / "es", port=port, config=cfg).start()
    yield b
    b.stop()


def test_azure_flags_an_es256_issuer(es256_broker):
    b = es256_broker
    p, f = verify(b, "azure", "--spiffe-id", "spiffe://sigil.local/az", "--ca-file", b.ca)
    assert_flagged(p, f, "azure.alg", ["jwt_alg: rsa-2048"])
    assert_flagged(p, f, "azure.jwks-rsa", ["rsa-2048"])
    assert f["token.signature"]["level"] == "pass", "the ES256 token itself is valid; only Azure refuses it"
    # The same issuer is fine for GCP (ES256 accepted).
    p, f = verify(b, "gcp", "--spiffe-id", "spiffe://sigil.local/az", "--audience", "gcp-aud", "--ca-file", b.ca)
    assert p.returncode == 0 and f["gcp.alg"]["level"] == "pass"


def test_missing_token_source_and_issuer_is_a_usage_error(broker):
    p = broker.sigil("federation", "verify", "azure", check=False)
    assert p.returncode != 0 and "--issuer" in p.stderr


# --- a hand-made issuer for token shapes the broker never issues -----------------------

class PyJwtIssuer:
    def __init__(self, pki, *, jwk_overrides=None, issuer_suffix=""):
        from jwt.algorithms import RSAAlgorithm
        self.key = new_key("rsa")
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
        for k, v in (jwk_overrides or {}).items():
            if v is None:
                jwk.pop(k, None)
            else:
                jwk[k] = v
        self.jwks = {"keys": [jwk]}
        self.issuer_suffix = issuer_suffix
        self.server = LocalServer(self.route, tls=pki.tls)
        self.url = self.server.url

    def route(self, method, path, headers, body):
        if path == "/.well-known/openid-configuration":
            return 200, "application/json", {
                "issuer": self.url + self.issuer_suffix, "jwks_uri": self.url + "/jwks",
                "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        if path == "/jwks":
            return 200, "application/json", self.jwks
        return 404, "text/plain", "no"

    def token(self, tmp_path, *, kid="k1", lifetime=300, aud="aud", sub="spiffe://sigil.local/x", iat=None, **extra):
        now = int(time.time()) if iat is None else iat
        claims = {"iss": self.url, "sub": sub, "aud": aud, "iat": now, "exp": now + lifetime, **extra}
        headers = {"kid": kid} if kid else {}
        t = jwt.encode(claims, key_pem(self.key), algorithm="RS256", headers=headers)
        if not kid:
            assert "kid" not in jwt.get_unverified_header(t)
        f = tmp_path / f"t{time.monotonic_ns()}.jwt"
        f.write_text(t)
        return str(f)


@pytest.fixture
def issuer(pki):
    i = PyJwtIssuer(pki)
    yield i
    i.server.stop()


def test_gcp_flags_a_token_without_kid(broker, issuer, pki, tmp_path):
    p, f = verify(broker, "gcp", "--token-file", issuer.token(tmp_path, kid=None), "--audience", "aud", "--ca-file", str(pki.ca_file))
    assert_flagged(p, f, "gcp.kid", ["kid"])
    assert f["token.signature"]["level"] == "pass", "without kid the signature is checked with the one key the issuer publishes"


def test_gcp_flags_a_lifetime_of_48_hours_or_more(broker, issuer, pki, tmp_path):
    p, f = verify(broker, "gcp", "--token-file", issuer.token(tmp_path, lifetime=49 * 3600), "--audience", "aud", "--ca-file", str(pki.ca_file))
    assert_flagged(p, f, "gcp.lifetime", ["--ttl"])
    p, f = verify(broker, "gcp", "--token-file", issuer.token(tmp_path, lifetime=8 * 3600), "--audience", "aud", "--ca-file", str(pki.ca_file))
    assert f["gcp.lifetime"]["level"] == "warn" and "gcp.lifetime" not in failing(f)


def test_aws_flags_a_token_over_20000_characters(broker, issuer, pki, tmp_path):
    p, f = verify(broker, "aws", "--token-file", issuer.token(tmp_path, aud="sts.amazonaws.com", pad="x" * 20_000), "--ca-file", str(pki.ca_file))
    assert_flagged(p, f, "aws.token-length", ["fewer audiences"])
    assert "20000" in f["aws.token-length"]["message"]


def test_expired_token_and_wrong_audience_are_flagged(broker, issuer, pki, tmp_path):
    old = issuer.token(tmp_path, aud="other", iat=int(time.time()) - 4000, lifetime=300)
    p, f = verify(broker, "aws", "--token-file", old, "--ca-file", str(pki.ca_file))
    assert_flagged(p, f, "token.exp", ["fresh"])
    assert_flagged(p, f, "token.aud", ["--audience sts.amazonaws.com"])


def test_forged_signature_is_flagged(broker, issuer, pki, tmp_path):
    good = open(issuer.token(tmp_path, aud="api://AzureADTokenExchange")).read()
    h, c, s = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    claims["sub"] = "spiffe://sigil.local/admin"
    c2 = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    forged = tmp_path / "forged.jwt"
    forged.write_text(f"{h}.{c2}.{s}")
    p, f = verify(broker, "azure", "--token-file", str(forged), "--ca-file", str(pki.ca_file))
    assert_flagged(p, f, "token.signature", ["signed by a key the issuer publishes"])


def test_azure_flags_jwks_keys_without_use_sig(broker, pki, tmp_path):
    i = PyJwtIssuer(pki, jwk_overrides={"use": None})
    try:
        p, f = verify(broker, "azure", "--token-file", i.token(tmp_path, aud="api://AzureADTokenExchange"), "--ca-file", str(pki.ca_file))
        assert_flagged(p, f, "azure.jwks-use-sig", ['use: \\"sig\\"'.replace('\\"', '"')])
    finally:
        i.server.stop()


def test_discovery_issuer_that_differs_from_the_url_is_flagged(broker, pki, tmp_path):
    i = PyJwtIssuer(pki, issuer_suffix="/")
    try:
        p, f = verify(broker, "gcp", "--issuer", i.url, "--ca-file", str(pki.ca_file))
        assert_flagged(p, f, "issuer.match", ["public_url"])
    finally:
        i.server.stop()


# --- Roles Anywhere --------------------------------------------------------------------

@pytest.fixture
def svid(broker, tmp_path):
    out = tmp_path / "svid"
    broker.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/ra", "--out", str(out))
    return out


def ra(broker, cert, bundle):
    return verify(broker, "aws-roles-anywhere", "--certificate", str(cert), "--bundle", str(bundle))


def test_roles_anywhere_accepts_a_broker_svid_and_its_bundle(broker, svid):
    p, f = ra(broker, svid / "svid.pem", svid / "bundle.pem")
    assert p.returncode == 0 and failing(f) == set()
    assert {"ra.leaf-v3", "ra.leaf-not-ca", "ra.leaf-key-usage", "ra.leaf-signature-alg", "ra.leaf-key-type", "ra.chain", "ra.trust-anchor-size"} <= set(f)


def test_roles_anywhere_flags_more_than_two_cas(broker, svid, tmp_path):
    extra = [make_cert(f"extra CA {n}", new_key(), ca=True) for n in range(2)]
    bundle = tmp_path / "three.pem"
    bundle.write_text((svid / "bundle.pem").read_text() + "".join(pem(c) for c in extra))
    p, f = ra(broker, svid / "svid.pem", bundle)
    assert_flagged(p, f, "ra.trust-anchor-size", ["sigil bundle --format pem"])
    assert "3 certificates" in f["ra.trust-anchor-size"]["message"]


def test_roles_anywhere_flags_broken_leaf_rules(broker, tmp_path):
    from cryptography.hazmat.primitives import hashes
    ca_key = new_key("rsa")
    ca = make_cert("RA CA", ca_key, ca=True)
    bundle = tmp_path / "ca.pem"
    bundle.write_text(pem(ca))
    cases = {
        "ra.leaf-not-ca": (dict(ca=True), ["end-entity"]),
        "ra.leaf-key-usage": (dict(ca=False, digital_signature=False), ["digitalSignature"]),
        "ra.leaf-signature-alg": (dict(ca=False, hash_alg=hashes.SHA224()), ["SHA-256"]),
    }
    for rule, (kw, words) in cases.items():
        leaf = make_cert("leaf", new_key("ec"), ca, ca_key, uri_sans=("spiffe://sigil.local/ra",), **kw)
        f_ = tmp_path / f"{rule}.pem"
        f_.write_text(pem(leaf))
        p, f = ra(broker, f_, bundle)
        assert_flagged(p, f, rule, words)
        if rule != "ra.leaf-signature-alg":  # a SHA-224 signature cannot be chain-checked either
            assert f["ra.chain"]["level"] == "pass", f"{rule}: only the broken rule fails"
    # A leaf from another CA does not chain to the trust anchor.
    other_key = new_key()
    other = make_cert("other CA", other_key, ca=True)
    leaf = make_cert("leaf", new_key(), other, other_key, ca=False)
    f_ = tmp_path / "other.pem"
    f_.write_text(pem(leaf))
    p, f = ra(broker, f_, bundle)
    assert_flagged(p, f, "ra.chain", ["trust anchor"])
    # A weak RSA key.
    leaf = make_cert("weak", new_key_rsa_1024(), ca, ca_key, ca=False)
    f_ = tmp_path / "weak.pem"
    f_.write_text(pem(leaf))
    p, f = ra(broker, f_, bundle)
    assert_flagged(p, f, "ra.leaf-key-type", ["RSA or P-256"])


def new_key_rsa_1024():
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)
