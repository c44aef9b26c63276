"""OIDC joins through the `sigil join` CLI with tokens minted by PyJWT (code we
did not write) and served by a Python HTTPS issuer with its own CA.

The issuer stands in for a GitHub Enterprise Server (`https://HOST/_services/token`)
and a Kubernetes cluster (static JWKS copied into the join token). It counts
JWKS fetches, so the broker's cache is observable from outside.
"""
import datetime as dt
import hashlib
import hmac
import base64
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sigil_harness import JOIN_REFUSED, ROOT


def _cert(subject_cn, key, issuer_cert=None, issuer_key=None, ca=False, ip=None):
    now = dt.datetime.now(dt.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer_cert.subject if issuer_cert else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        import ipaddress
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


class Issuer:
    """HTTPS OIDC issuer on 127.0.0.1 with an RSA signing key (kid `k1`)."""

    def __init__(self, tmp_path):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pub_pem = self.key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
        self.jwks = json.dumps({"keys": [jwk]})
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("test OIDC CA", ca_key, ca=True)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _cert("127.0.0.1", leaf_key, ca, ca_key, ip="127.0.0.1")
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        chain = tmp_path / "issuer-chain.pem"
        chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
        keyf = tmp_path / "issuer-key.pem"
        keyf.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.jwks_fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.endswith("/.well-known/openid-configuration"):
                    prefix = self.path[: -len("/.well-known/openid-configuration")]
                    body = json.dumps({"issuer": issuer.base + prefix, "jwks_uri": f"{issuer.base}{prefix}/.well-known/jwks"})
                elif self.path.endswith("/.well-known/jwks"):
                    issuer.jwks_fetches += 1
                    body = issuer.jwks
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, keyf)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.base = f"https://{self.host}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def mint(self, claims, **headers):
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1", **headers})

    def close(self):
        self.server.shutdown()


@pytest.fixture
def issuer(tmp_path):
    i = Issuer(tmp_path)
    yield i
    i.close()


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256_with_public_key(issuer, claims):
    """The algorithm-confusion forgery: HMAC keyed with the issuer's public PEM.
    PyJWT itself refuses to build it (a fix of the same CVE), so it is built by hand."""
    signing_input = _b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
    sig = hmac.new(issuer.pub_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(sig)


def github_claims(issuer, **over):
    now = int(time.time())
    c = {
        "jti": "6f3f5f2e", "iss": f"{issuer.base}/_services/token", "aud": "sigil",
        "sub": "repo:octo-org/octo-repo:environment:prod", "environment": "prod", "ref": "refs/heads/main",
        "sha": "d6c2e5c", "repository": "octo-org/octo-repo", "repository_owner": "octo-org", "actor": "octocat",
        "workflow": "deploy", "event_name": "push", "ref_type": "branch", "runner_environment": "self-hosted",
        "iat": now, "nbf": now, "exp": now + 300,
    }
    c.update(over)
    return c


def apply(broker, tmp_path, docs):
    f = tmp_path / "join.yaml"
    f.write_text("\n---\n".join(json.dumps(d) for d in docs))
    broker.sigil("apply", "-f", str(f))


def join(broker, tmp_path, *args, env=None):
    out = tmp_path / "bot.identity"
    e = broker.env()
    e.pop("SIGIL_TOKEN", None)
    e.update(env or {})
    import subprocess
    p = subprocess.run([broker.bin, "join", "--ca-file", broker.ca, "--out", str(out), *args], env=e, capture_output=True, text=True, timeout=60)
    return p, out


# The forgeries are split over two brokers: each refusal's reason is read from
# the audit log, which records at most 10 refusals of one peer at once
# (limits.audit_refusals.per_peer_burst), and every join here comes from 127.0.0.1.
@pytest.mark.parametrize("half", [0, 1])
def test_pyjwt_minted_ghes_tokens_join_once_allowed_and_forgeries_are_refused(broker, issuer, tmp_path, half):
    exp = int(time.time()) + 3600
    apply(broker, tmp_path, [
        {"kind": "bot", "name": "ci"},
        {"kind": "join_token", "name": "ghes", "bot": "ci", "method": "github", "expires_at": exp, "max_uses": 2,
         "allow": [{"repository": "octo-org/*", "ref": "refs/heads/main"}],
         "config": {"enterprise_host": issuer.host, "audience": "sigil", "ca_pem": issuer.ca_pem, "allow_private_network": "true"}},
    ])
    now = int(time.time())
    cases = [
        ("allowed", issuer.mint(github_claims(issuer)), None),
        ("allowed again (cached keys)", issuer.mint(github_claims(issuer)), None),
        ("wrong issuer", issuer.mint(github_claims(issuer, iss="https://token.actions.githubusercontent.com")), "is not the expected"),
        ("wrong audience", issuer.mint(github_claims(issuer, aud=["https://github.com/octo-org"])), "does not contain the expected"),
        ("expired", issuer.mint(github_claims(issuer, exp=now - 3600, iat=now - 4000, nbf=now - 4000)), "token expired"),
        ("not yet valid", issuer.mint(github_claims(issuer, nbf=now + 3600)), "not valid before"),
        ("unknown kid", jwt.encode(github_claims(issuer), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256", headers={"kid": "k2"}), 'no key with kid "k2"'),
        ("alg none", jwt.encode(github_claims(issuer), None, algorithm="none"), 'algorithm "none" is not accepted'),
        ("HS256 keyed with the public key", hs256_with_public_key(issuer, github_claims(issuer)), 'algorithm "HS256" is not accepted'),
        ("jku header", issuer.mint(github_claims(issuer), jku="https://evil.example/jwks"), 'header parameter "jku"'),
        ("claims outside the allow rules", issuer.mint(github_claims(issuer, ref="refs/heads/evil")), 'ref = "refs/heads/evil"'),
        ("oversized", issuer.mint(github_claims(issuer, padding="x" * 20000)), "more than the 16384 accepted"),
    ]
    # Signature over other claims: the signature of an outside-the-rules token on allowed claims.
    bad = issuer.mint(github_claims(issuer, ref="refs/heads/evil")).split(".")
    good = issuer.mint(github_claims(issuer)).split(".")
    cases.append(("signature over other claims", ".".join([good[0], good[1], bad[2]]), "signature verification failed"))
    cases = cases[:2] + cases[2:][half::2]
    wrong = []
    for label, token, refused in cases:
        f = tmp_path / "id_token"
        f.write_text(token)
        p, out = join(broker, tmp_path, "--method", "github", "--token-name", "ghes", "--id-token-file", str(f))
        if refused is None:
            ok, why = p.returncode == 0 and "joined as bot ci" in p.stderr, ""
        else:
            # The caller only gets the generic refusal; the audit log says why.
            why = broker.last_join_denial() if p.returncode != 0 else ""
            ok = p.returncode != 0 and JOIN_REFUSED in p.stderr and refused in why
        if not ok:
            wrong.append(f"{label}: rc={p.returncode} {p.stderr.strip()} (audited: {why})")
    assert not wrong, "\n".join(wrong)
    assert issuer.jwks_fetches == 1, f"JWKS fetched {issuer.jwks_fetches} times for {len(cases)} joins"
    who = broker.sigil("--output", "json", "whoami", identity=str(tmp_path / "bot.identity"))
    assert json.loads(who.stdout)["bot"] == "ci"


def test_kubernetes_token_from_an_env_var_joins_against_a_static_jwks(broker, issuer, tmp_path):
    cluster = "https://kubernetes.default.svc.cluster.local"
    apply(broker, tmp_path, [
        {"kind": "bot", "name": "k8s"},
        {"kind": "join_token", "name": "cluster-a", "bot": "k8s", "method": "kubernetes", "expires_at": int(time.time()) + 3600,
         "allow": [{"service_account": "ci:builder"}],
         "config": {"issuer": cluster, "audience": "sigil", "jwks": issuer.jwks}},
    ])
    now = int(time.time())

    def sa_token(ns, name):
        return issuer.mint({
            "aud": ["sigil"], "iss": cluster, "iat": now, "nbf": now, "exp": now + 600,
            "sub": f"system:serviceaccount:{ns}:{name}",
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": "1d2c3b4a"}, "pod": {"name": "builder-0", "uid": "a9b8"}},
        })

    p, _ = join(broker, tmp_path, "--method", "kubernetes", "--token-name", "cluster-a", "--id-token-env", "SA_TOKEN", env={"SA_TOKEN": sa_token("ci", "builder")})
    assert p.returncode == 0, p.stderr
    p, _ = join(broker, tmp_path, "--method", "kubernetes", "--token-name", "cluster-a", "--id-token-env", "SA_TOKEN", env={"SA_TOKEN": sa_token("kube-system", "builder")})
    assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr
    assert 'service_account = "kube-system:builder"' in broker.last_join_denial()
    assert issuer.jwks_fetches == 0, "a static JWKS needs no fetch"
