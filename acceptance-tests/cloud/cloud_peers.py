"""Local stand-ins for cloud token endpoints, and the helpers they share.

Every endpoint here verifies the presented JWT-SVID with PyJWT against the
broker's own discovery document and JWKS before it answers, the way the real
cloud would. Servers listen on 127.0.0.1 only.
"""
import base64
import datetime as dt
import hashlib
import importlib
import json
import secrets
import urllib.parse
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests


def require_module(name: str, pip_name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.fail(f"Python module {name} missing: .venv/bin/pip install {pip_name} (scripts/setup.sh installs acceptance-tests/requirements.txt)")


class JwtVerifier:
    """Verifies JWT-SVIDs with PyJWT using only the issuer's discovery + JWKS."""

    def __init__(self, issuer_url: str, ca: str):
        self.issuer = issuer_url
        doc = requests.get(f"{issuer_url}/.well-known/openid-configuration", verify=ca, timeout=10)
        doc.raise_for_status()
        self.discovery = doc.json()
        assert self.discovery["issuer"] == issuer_url
        self.jwks = requests.get(self.discovery["jwks_uri"], verify=ca, timeout=10).json()
        self.accepted = []
        self.refused = []

    def verify(self, token: str, audience: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
            matching = [k for k in self.jwks["keys"] if k.get("kid") == header.get("kid")]
            if len(matching) != 1:
                raise jwt.InvalidTokenError(f"kid {header.get('kid')!r} is not published")
            claims = jwt.decode(
                token,
                key=jwt.PyJWK(matching[0]),
                algorithms=[matching[0]["alg"]],
                audience=audience,
                issuer=self.issuer,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.PyJWTError as e:
            self.refused.append(str(e))
            raise
        self.accepted.append(claims)
        return claims


class LocalServer:
    """A threaded HTTP(S) server on 127.0.0.1 calling `route(method, path, headers, body)`,
    which returns (status, content_type, body)."""

    def __init__(self, route, tls: tuple[str, str] | None = None):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                try:
                    status, ctype, out = route(self.command, self.path, self.headers, body)
                except Exception as e:  # the test sees the failure through the status
                    status, ctype, out = 500, "text/plain", f"endpoint error: {e!r}".encode()
                outer.log.append((self.command, self.path, status))
                if isinstance(out, (dict, list)):
                    out = json.dumps(out).encode()
                elif isinstance(out, str):
                    out = out.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = _serve
            do_POST = _serve

            def log_message(self, *a):
                pass

        self.log = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.port = self.httpd.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --- certificates made with `cryptography` (code we did not write) -----------------

def _crypto():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID
    return x509, hashes, serialization, ec, rsa, NameOID


def new_key(kind: str = "ec"):
    _, _, _, ec, rsa, _ = _crypto()
    return ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(subject: str, key, issuer_cert=None, issuer_key=None, *, ca: bool, serial: int | None = None,
              digital_signature: bool = True, key_cert_sign: bool | None = None, sans=(), uri_sans=(),
              hash_alg=None, days: int = 1):
    x509, hashes, _, _, _, NameOID = _crypto()
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False,
                key_cert_sign=ca if key_cert_sign is None else key_cert_sign, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    alt = [x509.DNSName(s) for s in sans if not s[0].isdigit()]
    import ipaddress
    alt += [x509.IPAddress(ipaddress.ip_address(s)) for s in sans if s[0].isdigit()]
    alt += [x509.UniformResourceIdentifier(u) for u in uri_sans]
    if alt:
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(issuer_key or key, hash_alg or hashes.SHA256())


def pem(cert) -> str:
    _, _, serialization, _, _, _ = _crypto()
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key) -> str:
    _, _, serialization, _, _, _ = _crypto()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


class LocalPki:
    """A throwaway CA with a server certificate for 127.0.0.1 / localhost."""

    def __init__(self, d: Path):
        d.mkdir(parents=True, exist_ok=True)
        self.ca_key = new_key()
        self.ca_cert = make_cert("Sigil test CA", self.ca_key, ca=True)
        self.ca_file = d / "test-ca.pem"
        self.ca_file.write_text(pem(self.ca_cert))
        server_key = new_key()
        server_cert = make_cert("localhost", server_key, self.ca_cert, self.ca_key, ca=False, sans=("localhost", "127.0.0.1"))
        self.cert_file = d / "server.pem"
        self.key_file = d / "server.key"
        self.cert_file.write_text(pem(server_cert))
        self.key_file.write_text(key_pem(server_key))

    @property
    def tls(self):
        return (str(self.cert_file), str(self.key_file))

# --- identities of the local cloud stand-ins ---------------------------------------

GCP_AUDIENCE = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/sigil/providers/sigil"
GCP_SA = "deployer@example-project.iam.gserviceaccount.com"
AZ_TENANT = "0d5a7c3e-1b2f-4e6a-9c8d-7f1e2d3c4b5a"
AZ_CLIENT_ID = "5e1f9a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
AZ_AUDIENCE = "api://AzureADTokenExchange"
RA_REGION = "us-east-1"
RA_TA = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/6f4a2c1e-0000-4000-8000-000000000001"
RA_PROFILE = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/6f4a2c1e-0000-4000-8000-000000000002"
RA_ROLE = "arn:aws:iam::123456789012:role/sigil-roles-anywhere"


# --- Google STS ----------------------------------------------------------------------

class GoogleSts:
    """Token exchange (RFC 8693, as Google STS answers it) and generateAccessToken."""

    def __init__(self, verifier):
        self.verifier = verifier
        self.federated = {}
        self.impersonated = []
        self.server = LocalServer(self.route)

    def route(self, method, path, headers, body):
        if method == "POST" and path == "/v1/token":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" or form.get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt":
                return 400, "application/json", {"error": "invalid_request"}
            if form.get("audience") != GCP_AUDIENCE:
                return 400, "application/json", {"error": "invalid_target", "error_description": "unknown provider"}
            try:
                claims = self.verifier.verify(form["subject_token"], audience=GCP_AUDIENCE)
            except Exception as e:
                return 400, "application/json", {"error": "invalid_grant", "error_description": str(e)}
            token = "ya29.federated-" + secrets.token_hex(8)
            self.federated[token] = claims["sub"]
            return 200, "application/json", {"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3600}
        if method == "POST" and path == f"/v1/projects/-/serviceAccounts/{GCP_SA}:generateAccessToken":
            bearer = headers.get("Authorization", "").removeprefix("Bearer ")
            if bearer not in self.federated:
                return 401, "application/json", {"error": {"code": 401, "message": "federated token required"}}
            self.impersonated.append((self.federated[bearer], json.loads(body)))
            return 200, "application/json", {"accessToken": "ya29.impersonated-" + secrets.token_hex(8), "expireTime": "2099-01-01T00:00:00Z"}
        return 404, "application/json", {"error": "not_found"}



# --- Entra ID authority --------------------------------------------------------------

class EntraAuthority:
    def __init__(self, verifier, tls):
        self.verifier = verifier
        self.issued = {}
        self.server = LocalServer(self.route, tls=tls)

    def route(self, method, path, headers, body):
        base = self.server.url
        if method == "GET" and path == f"/{AZ_TENANT}/v2.0/.well-known/openid-configuration":
            return 200, "application/json", {
                "issuer": f"{base}/{AZ_TENANT}/v2.0",
                "token_endpoint": f"{base}/{AZ_TENANT}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/{AZ_TENANT}/oauth2/v2.0/authorize",
                "jwks_uri": f"{base}/{AZ_TENANT}/discovery/v2.0/keys",
            }
        if method == "POST" and path == f"/{AZ_TENANT}/oauth2/v2.0/token":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            if form.get("grant_type") != "client_credentials" or form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                return 400, "application/json", {"error": "unsupported_grant_type"}
            if form.get("client_id") != AZ_CLIENT_ID:
                return 400, "application/json", {"error": "unauthorized_client", "error_description": "AADSTS700016: application not found"}
            assertion = form.get("client_assertion", "")
            if jwt.get_unverified_header(assertion).get("alg") != "RS256":
                return 401, "application/json", {"error": "invalid_client", "error_description": "AADSTS5002738: only RS256 is supported"}
            try:
                claims = self.verifier.verify(assertion, audience=AZ_AUDIENCE)
            except Exception as e:
                return 401, "application/json", {"error": "invalid_client", "error_description": f"AADSTS700211: {e}"}
            token = "eyJ0eXAi.entra-" + secrets.token_hex(8)
            self.issued[token] = (claims["sub"], form.get("scope"))
            return 200, "application/json", {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        return 404, "application/json", {"error": "not_found", "error_description": path}


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
        if scope != f"{amz_date[:8]}/{RA_REGION}/rolesanywhere/aws4_request":
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
        if (req["trustAnchorArn"], req["profileArn"], req["roleArn"]) != (RA_TA, RA_PROFILE, RA_ROLE):
            return 400, "application/json", {"message": "wrong ARNs"}
        creds = {
            "accessKeyId": "ASIA" + secrets.token_hex(8).upper(),
            "secretAccessKey": secrets.token_urlsafe(30),
            "sessionToken": secrets.token_urlsafe(60),
            "expiration": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=req["durationSeconds"])).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.issued.append((leaf.serial_number, creds["accessKeyId"]))
        return 201, "application/json", {"credentialSet": [{"credentials": creds, "roleArn": RA_ROLE}], "subjectArn": "arn:aws:rolesanywhere:us-east-1:123456789012:subject/x"}


