"""A loopback stand-in for a kube-apiserver's TokenReview API (a real API server cannot run here).

It answers `POST /apis/authentication.k8s.io/v1/tokenreviews` as kube-apiserver does:
- the caller must present the broker's bearer token (`Authorization: Bearer ...`): a wrong or missing one
  gets 401 with a `Status` object, a known bearer without the RBAC grant (`forbidden_bearers`) gets 403;
- the answer is `201 Created` with the request's spec echoed (the token included, as the real server does)
  and a `status`: `authenticated` (omitted when false, Go's `omitempty`), `user` {username, uid, groups,
  extra}, `audiences` (the requested audiences the token is valid for; without `spec.audiences`, the API
  server's own), `error` when not authenticated;
- a known token whose audiences do not intersect the requested ones is not authenticated, as the real
  audience-checking authenticators answer. `ignore_audiences=True` plays an API server that does not
  honour `spec.audiences` (it answers the token's own audiences).

With `client_ca=True` it also plays kube-apiserver's x509 client-certificate authenticator: TLS requires a
client certificate issued by its own test client CA (`ssl.CERT_REQUIRED`: no certificate, or one from another
CA, fails the handshake), and the caller is the certificate's subject as kube-apiserver reads it: CN the user
name, each O a group. A certificate caller may create TokenReviews if its user is in `cert_users` or one of
its groups in `cert_groups` (RBAC), else 403. `issue_client_cert` issues such certificates; `callers` records
(user, groups) of each certificate-authenticated request.

The test first proves with the official Python `kubernetes` client that this speaks the real protocol.
HTTPS with its own CA (`cryptography`); the leaf names 127.0.0.1.
"""
import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
API_AUDIENCES = ["https://kubernetes.default.svc.cluster.local"]


def _cert(cn, key, issuer=None, issuer_key=None, ca=False, ip=None, orgs=(), client=False):
    now = dt.datetime.now(dt.timezone.utc)
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs] + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(issuer.subject if issuer else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    if client:
        b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


KEY_FORMATS = {
    # label written -> (key type, cryptography format)
    "PRIVATE KEY": ("ec", serialization.PrivateFormat.PKCS8),
    "EC PRIVATE KEY": ("ec", serialization.PrivateFormat.TraditionalOpenSSL),  # SEC1
    "RSA PRIVATE KEY": ("rsa", serialization.PrivateFormat.TraditionalOpenSSL),  # PKCS#1
}


def client_cert(cn, orgs=(), key_format="PRIVATE KEY", issuer=None, issuer_key=None):
    """A client certificate (PEM) and its key (PEM in `key_format`), issued by `issuer` (default: a fresh
    self-signed CA of its own, i.e. one no server trusts)."""
    if issuer is None:
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        issuer = _cert("some other CA", issuer_key, ca=True)
    kind, fmt = KEY_FORMATS[key_format]
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _cert(cn, key, issuer, issuer_key, orgs=orgs, client=True)
    key_pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
    assert key_pem.startswith(f"-----BEGIN {key_format}-----"), key_pem.splitlines()[0]
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def _status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def _subject(peercert):
    """(CN, [O...]) of a verified client certificate (ssl's getpeercert() dict), None without one."""
    if not peercert:
        return None
    cn, orgs = "", []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return cn, orgs


class TokenReviewStandin:
    """`reviews`: token -> {"username", "uid", "extra": {key: [values]}, "audiences": [...]} for valid tokens."""

    def __init__(self, tmp_path, bearer: str, reviews: dict, forbidden_bearers=(), ignore_audiences=False,
                 client_ca=False, cert_users=(), cert_groups=()):
        self.bearer = bearer
        self.cert_users = set(cert_users)
        self.cert_groups = set(cert_groups)
        self.callers = []  # (user, groups) of each certificate-authenticated request
        self.reviews = reviews
        self.forbidden_bearers = set(forbidden_bearers)
        self.ignore_audiences = ignore_audiences
        self.requests = []  # (status code, requested audiences)
        self._lock = threading.Lock()
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("tokenreview stand-in CA", ca_key, ca=True)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _cert("kube-apiserver", leaf_key, ca, ca_key, ip="127.0.0.1")
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        self.ca_file = tmp_path / "cluster-ca.crt"
        self.ca_file.write_text(self.ca_pem)
        chain = tmp_path / "apiserver-chain.pem"
        chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
        keyf = tmp_path / "apiserver-key.pem"
        keyf.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, doc):
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1 << 20))
                code, doc, auds = standin._answer(self.path, self.headers.get("Authorization", ""), body, _subject(self.connection.getpeercert()))
                with standin._lock:
                    standin.requests.append((code, auds))
                self._send(code, doc)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, keyf)
        if client_ca:
            self.client_ca_key = ec.generate_private_key(ec.SECP256R1())
            self.client_ca = _cert("tokenreview stand-in client CA", self.client_ca_key, ca=True)
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=self.client_ca.public_bytes(serialization.Encoding.PEM).decode())
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def issue_client_cert(self, cn, orgs=(), key_format="PRIVATE KEY"):
        """A client certificate from this stand-in's client CA (see `client_cert`)."""
        return client_cert(cn, orgs, key_format, self.client_ca, self.client_ca_key)

    def _answer(self, path, authorization, body, subject=None):
        if path.split("?")[0] != PATH:
            return 404, _status(404, "NotFound", "the server could not find the requested resource"), None
        if subject is not None:
            # kube-apiserver's x509 authenticator: the verified certificate is the caller (it comes first).
            user, groups = subject
            with self._lock:
                self.callers.append((user, groups))
            if user not in self.cert_users and not self.cert_groups.intersection(groups):
                msg = (f'tokenreviews.authentication.k8s.io is forbidden: User "{user}" cannot create '
                       'resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope')
                return 403, _status(403, "Forbidden", msg), None
            return self._review(body)
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or presented not in ({self.bearer} | self.forbidden_bearers):
            return 401, _status(401, "Unauthorized", "Unauthorized"), None
        if presented in self.forbidden_bearers:
            msg = ('tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:sigil:broker" cannot create '
                   'resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope')
            return 403, _status(403, "Forbidden", msg), None
        return self._review(body)

    def _review(self, body):
        try:
            req = json.loads(body)
        except ValueError:
            return 400, _status(400, "BadRequest", "the body is not JSON"), None
        # Like kube-apiserver: absent apiVersion/kind default from the URL; others are refused.
        if req.get("apiVersion", "authentication.k8s.io/v1") != "authentication.k8s.io/v1" or req.get("kind", "TokenReview") != "TokenReview":
            return 400, _status(400, "BadRequest", "not an authentication.k8s.io/v1 TokenReview"), None
        spec = req.get("spec") or {}
        token = spec.get("token") or ""
        if not token:
            return 400, _status(400, "BadRequest", "token is required"), None
        requested = spec.get("audiences") or API_AUDIENCES
        status = {}
        known = self.reviews.get(token)
        if known is None:
            status["error"] = "[invalid bearer token, square/go-jose: error in cryptographic primitive]"
        else:
            token_auds = known.get("audiences", API_AUDIENCES)
            valid_for = list(token_auds) if self.ignore_audiences else [a for a in requested if a in token_auds]
            if not valid_for:
                status["error"] = f"[invalid bearer token, token audiences {json.dumps(token_auds)} is invalid for the target audiences {json.dumps(requested)}]"
            else:
                status["authenticated"] = True
                status["user"] = {
                    "username": known["username"],
                    "uid": known.get("uid", ""),
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{known['username'].split(':')[2]}", "system:authenticated"],
                }
                if known.get("extra"):
                    status["user"]["extra"] = known["extra"]
                status["audiences"] = valid_for
        doc = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": None},
               "spec": spec, "status": {"user": {}, **status}}
        return 201, doc, requested

    def count(self, code=None) -> int:
        with self._lock:
            return sum(1 for c, _ in self.requests if code is None or c == code)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
