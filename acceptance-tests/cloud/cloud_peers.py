"""Local stand-ins for cloud token endpoints, and the helpers they share.

Every endpoint here verifies the presented JWT-SVID with PyJWT against the
broker's own discovery document and JWKS before it answers, the way the real
cloud would. Servers listen on 127.0.0.1 only.
"""
import datetime as dt
import importlib
import json
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
